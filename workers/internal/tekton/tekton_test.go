package tekton

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/workers/internal/runner"
)

// TestShippedCatalog loads deploy/tekton: every Task passes Tekton's own
// validation and every manifest its checks.
func TestShippedCatalog(t *testing.T) {
	t.Parallel()
	c, err := Load(t.Context(), filepath.Join("..", "..", "..", "deploy", "tekton"))
	require.NoError(t, err)
	m, ok := c.Tool("trivy")
	require.True(t, ok)
	require.Equal(t, []string{"image-scan"}, m.JobTypes)
	require.Contains(t, c.Tasks, m.Task)
	require.Contains(t, c.Tasks, m.VersionTask)
}

const okTask = `apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: t
spec:
  params:
    - name: image
  workspaces:
    - name: out
  steps:
    - name: s
      image: example/tool:1
      command: [tool]
      args: [$(params.image), $(workspaces.out.path)]
`

const okVersionTask = `apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: v
spec:
  results:
    - name: tool-version
    - name: data-version
  steps:
    - name: s
      image: example/tool:1
      command: [tool]
`

const okTool = `apiVersion: ciss.dev/v1
kind: Tool
name: tool
task: t
versionTask: v
jobTypes: [image-scan]
params:
  image: $(target.image)
workspaces:
  out: {output: true}
reports:
  - {format: native, mediaType: application/json, path: r.json, summary: sarif}
`

func writeCatalog(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600))
	}
	return dir
}

// TestLoadRejects: every way a catalog can be wrong is refused with the file
// and the reason, before any job runs.
func TestLoadRejects(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, task, tool, want string
		version                string
	}{
		{"valid", okTask, okTool, "", ""},
		{"invalid Task (Tekton validation)", strings.Replace(okTask, "name: s\n", "name: S_bad\n", 1), okTool, "invalid value", ""},
		{"step without command or script", strings.Replace(okTask, "      command: [tool]\n", "", 1), okTool, "needs a script or a command", ""},
		{"unknown Task field", strings.Replace(okTask, "spec:\n", "spec:\n  surprise: 1\n", 1), okTool, "unknown field", ""},
		{"unknown manifest field", okTask, okTool + "extra: 1\n", "unknown field", ""},
		{"unknown job type", okTask, strings.Replace(okTool, "[image-scan]", "[dast]", 1), "unknown job type", ""},
		{"missing Task", okTask, strings.Replace(okTool, "task: t\n", "task: nope\n", 1), `no Task "nope"`, ""},
		{"param the Task lacks", okTask, strings.Replace(okTool, "  image: $(target.image)\n", "  image: $(target.image)\n  other: x\n", 1), `has no param "other"`, ""},
		{"unknown reference", okTask, strings.Replace(okTool, "$(target.image)", "$(secrets.token)", 1), "unknown reference", ""},
		{"unbound workspace", okTask, strings.Replace(okTool, "  out: {output: true}\n", "", 1), "not bound", ""},
		{"report escaping the workspace", okTask, strings.Replace(okTool, "path: r.json", "path: ../../etc/passwd", 1), "inside the output workspace", ""},
		{"no summary parser", okTask, strings.Replace(okTool, ", summary: sarif", "", 1), "summary parser", ""},
		{"unknown summary parser", okTask, strings.Replace(okTool, "summary: sarif", "summary: magic", 1), "unknown parser", ""},
		{"version Task without results", okTask, okTool, "data-version", strings.Replace(okVersionTask, "    - name: data-version\n", "", 1)},
		{"version Task param without default", okTask, okTool, "has no default", strings.Replace(okVersionTask, "spec:\n", "spec:\n  params:\n    - name: p\n", 1)},
		{"bad tool name", okTask, strings.Replace(okTool, "name: tool", "name: Tool.x", 1), "lower-case", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			version := c.version
			if version == "" {
				version = okVersionTask
			}
			_, err := Load(t.Context(), writeCatalog(t, map[string]string{"task.yaml": c.task, "version.yaml": version, "tool.yaml": c.tool}))
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalid)
			require.ErrorContains(t, err, c.want)
		})
	}
	t.Run("unknown kind", func(t *testing.T) {
		t.Parallel()
		_, err := Load(t.Context(), writeCatalog(t, map[string]string{"x.yaml": "apiVersion: v1\nkind: Pod\n"}))
		require.ErrorContains(t, err, "unknown kind")
	})
	t.Run("two documents in one file", func(t *testing.T) {
		t.Parallel()
		_, err := Load(t.Context(), writeCatalog(t, map[string]string{"x.yaml": okTask + "\n---\n" + okTask}))
		require.ErrorContains(t, err, "one document per file")
	})
}

// TestLocalRunsTaskSemantics runs a real Task with /bin/sh steps: params with
// defaults, workspaces, results, env, a script with and without a shebang,
// and the shell's own $(…) left alone.
func TestLocalRunsTaskSemantics(t *testing.T) {
	t.Parallel()
	task, err := parseTask(t.Context(), []byte(`apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: sem
spec:
  params:
    - name: who
    - name: greeting
      default: hello
  workspaces:
    - name: out
  results:
    - name: said
  steps:
    - name: write
      image: example/sh:1
      env:
        - name: WHO
          value: $(params.who)
      script: |
        #!/bin/sh
        set -eu
        printf '%s %s from %s' "$(params.greeting)" "$WHO" "$(echo shell)" > "$(results.said.path)"
        echo "$(context.taskRun.name)" > "$(workspaces.out.path)/run-name"
    - name: no-shebang
      image: example/sh:1
      script: |
        test -s "$(results.said.path)"
        echo ok > "$(workspaces.out.path)/second"
`))
	require.NoError(t, err)
	out := t.TempDir()
	l := &Local{Runner: &runner.Local{Images: map[string]string{"example/sh:*": "/bin/sh"}}}
	res, err := l.RunTask(t.Context(), Run{Task: task, Name: "run-1", Params: map[string]string{"who": "ciss"},
		Workspaces: map[string]string{"out": out}, Dir: t.TempDir()})
	require.NoError(t, err)
	require.Equal(t, "hello ciss from shell", res.Results["said"])
	b, err := os.ReadFile(filepath.Join(out, "run-name"))
	require.NoError(t, err)
	require.Equal(t, "run-1\n", string(b))
	b, err = os.ReadFile(filepath.Join(out, "second"))
	require.NoError(t, err)
	require.Equal(t, "ok\n", string(b))
}

// TestLocalErrors: unmapped images, unresolved variables, missing params and
// unbound workspaces fail clearly before anything runs; a failing step is a
// *runner.StepError.
func TestLocalErrors(t *testing.T) {
	t.Parallel()
	task, err := parseTask(t.Context(), []byte(okTask))
	require.NoError(t, err)
	mapped := &Local{Runner: &runner.Local{Images: map[string]string{"example/tool:*": "/bin/false"}}}
	ws := map[string]string{"out": t.TempDir()}

	_, err = (&Local{Runner: &runner.Local{}}).RunTask(t.Context(), Run{Task: task, Params: map[string]string{"image": "x"}, Workspaces: ws, Dir: t.TempDir()})
	require.ErrorIs(t, err, runner.ErrUnmappedImage)

	_, err = mapped.RunTask(t.Context(), Run{Task: task, Workspaces: ws, Dir: t.TempDir()})
	require.ErrorContains(t, err, "param image has no value")

	_, err = mapped.RunTask(t.Context(), Run{Task: task, Params: map[string]string{"image": "x", "evil": "y"}, Workspaces: ws, Dir: t.TempDir()})
	require.ErrorContains(t, err, `no param "evil"`)

	_, err = mapped.RunTask(t.Context(), Run{Task: task, Params: map[string]string{"image": "x"}, Dir: t.TempDir()})
	require.ErrorContains(t, err, "workspace out is not bound")

	// /bin/false is the image's tool, named "false": the Task's command "tool" is not it.
	_, err = mapped.RunTask(t.Context(), Run{Task: task, Params: map[string]string{"image": "x"}, Workspaces: ws, Dir: t.TempDir()})
	require.ErrorContains(t, err, `is not the image's tool`)

	unresolved, err := parseTask(t.Context(), []byte(strings.Replace(okTask, "$(params.image)", "$(params.image) $(results.nope.path)", 1)))
	if err == nil { // Tekton's validation may already refuse it; the runner must too.
		_, err = mapped.RunTask(t.Context(), Run{Task: unresolved, Params: map[string]string{"image": "x"}, Workspaces: ws, Dir: t.TempDir()})
		require.ErrorIs(t, err, ErrUnresolved)
	}

	failing, err := parseTask(t.Context(), []byte(strings.Replace(okTask, "command: [tool]", "command: [false]", 1)))
	require.NoError(t, err)
	_, err = mapped.RunTask(t.Context(), Run{Task: failing, Params: map[string]string{"image": "x"}, Workspaces: ws, Dir: t.TempDir()})
	var se *runner.StepError
	require.True(t, errors.As(err, &se), "%v", err)
	require.Equal(t, 1, se.ExitCode)
}
