// Package backendtest is the conformance suite every Task backend passes
// (Watermill style): the same Tasks, the same inputs, the same results and
// errors, for the local backend (RunLocal, in the unit tests) and the
// cluster backend (RunCluster, on a real Kubernetes + Tekton from test/k8s).
package backendtest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"github.com/tektoncd/pipeline/pkg/client/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"ciss.dev/workers/internal/runner"
	"ciss.dev/workers/internal/tekton"
)

// InputSource is the worker-provided data name the suite's Tasks bind their
// read-only input workspace to; its directory holds fixture.txt.
const InputSource = "input"

type env struct {
	name    string
	backend tekton.Backend
	// image is the step image: sh, printf, cat, mkdir, sleep.
	image string
	// input is InputSource's directory, as the worker sees it.
	input string
	// after checks nothing is left behind once every case finished.
	after func(t *testing.T)
}

// RunLocal runs the suite against the local backend, mapping the step image
// to /bin/sh.
func RunLocal(t *testing.T) {
	const image = "ciss.test/sh:1"
	run(t, env{
		name:    "local",
		backend: &tekton.Local{Runner: &runner.Local{Images: map[string]string{image: "/bin/sh"}}},
		image:   image,
		input:   t.TempDir(),
	})
}

// ClusterEnv is a cluster to run the suite on.
type ClusterEnv struct {
	// Kubeconfig reaches the cluster; Namespace holds the TaskRuns.
	Kubeconfig, Namespace string
	// StepImage (sh and busybox applets) is present on the node; it also
	// serves as the report upload helper image.
	StepImage string
	// InputClaim is a PersistentVolumeClaim in Namespace whose volume is the
	// host directory InputDir (the node is this host).
	InputClaim, InputDir string
	// UploadHost is the address pods reach this process at (127.0.0.1 with
	// hostNetwork pods).
	UploadHost string
}

// RunCluster runs the suite against the cluster backend and checks that no
// TaskRun is left afterwards.
func RunCluster(t *testing.T, ce ClusterEnv) {
	rc, err := tekton.RestConfig(ce.Kubeconfig)
	require.NoError(t, err)
	client, err := versioned.NewForConfig(rc)
	require.NoError(t, err)
	uploads := &tekton.Uploads{MaxBytes: 1 << 20}
	ln, err := net.Listen("tcp", net.JoinHostPort(ce.UploadHost, "0"))
	require.NoError(t, err)
	srv := &http.Server{Handler: uploads, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	b, err := tekton.NewCluster(tekton.ClusterConfig{
		Client: client, Namespace: ce.Namespace, Claims: map[string]string{InputSource: ce.InputClaim},
		HelperImage: ce.StepImage, Uploads: uploads, UploadURL: "http://" + ln.Addr().String(), Worker: "backendtest",
		Grace: 30 * time.Second,
	})
	require.NoError(t, err)
	run(t, env{
		name: "cluster", backend: b, image: ce.StepImage, input: ce.InputDir,
		after: func(t *testing.T) {
			list, err := client.TektonV1().TaskRuns(ce.Namespace).List(context.Background(),
				metav1.ListOptions{LabelSelector: tekton.LabelManagedBy + "=" + tekton.ManagedBy})
			require.NoError(t, err)
			var left []string
			for _, tr := range list.Items {
				if tr.DeletionTimestamp == nil {
					left = append(left, tr.Name)
				}
			}
			require.Empty(t, left, "TaskRuns left behind")
		},
	})
}

func task(t *testing.T, e env, body string) *pipelinev1.Task {
	t.Helper()
	var tk pipelinev1.Task
	require.NoError(t, yaml.UnmarshalStrict([]byte(
		"apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: conformance\nspec:\n"+body), &tk))
	for i := range tk.Spec.Steps {
		tk.Spec.Steps[i].Image = e.image
	}
	tk.SetDefaults(t.Context())
	require.Nil(t, tk.Validate(t.Context()))
	return &tk
}

func run(t *testing.T, e env) {
	require.NoError(t, os.WriteFile(filepath.Join(e.input, "fixture.txt"), []byte("fixture input\n"), 0o644))
	newRun := func(t *testing.T, tk *pipelinev1.Task) tekton.Run {
		return tekton.Run{Task: tk, Name: "conformance-" + filepath.Base(t.Name()), Dir: t.TempDir(),
			Owner: tekton.Owner{Tenant: "acme", Job: "job-1", Task: "job-1.conformance", Tool: "conformance"}}
	}
	t.Run("group", func(t *testing.T) {
		t.Run("params, defaults, env, script and command steps, results", func(t *testing.T) {
			t.Parallel()
			tk := task(t, e, `
  params:
    - name: who
    - name: greeting
      default: hello
  results:
    - name: said
    - name: echoed
  steps:
    - name: script
      env:
        - name: WHO
          value: $(params.who)
      script: |
        #!/bin/sh
        set -eu
        printf '%s %s from %s' "$(params.greeting)" "$WHO" "$(echo shell)" > "$(results.said.path)"
    - name: no-shebang
      script: |
        test -s "$(results.said.path)"
    - name: command
      command: [sh, -c, 'printf "%s" "$1" > "$2"', sh, $(params.who)]
      args: [$(results.echoed.path)]
`)
			r := newRun(t, tk)
			r.Params = map[string]string{"who": "ciss"}
			out, err := e.backend.RunTask(t.Context(), r)
			require.NoError(t, err)
			require.Equal(t, map[string]string{"said": "hello ciss from shell", "echoed": "ciss"}, out.Results)
		})
		t.Run("unknown param refused", func(t *testing.T) {
			t.Parallel()
			tk := task(t, e, "  steps:\n    - name: s\n      script: 'true'\n")
			r := newRun(t, tk)
			r.Params = map[string]string{"evil": "x"}
			_, err := e.backend.RunTask(t.Context(), r)
			require.ErrorContains(t, err, `no param "evil"`)
		})
		t.Run("workspaces: read-only input, output reports brought back", func(t *testing.T) {
			t.Parallel()
			tk := task(t, e, `
  workspaces:
    - name: in
      readOnly: true
    - name: out
  steps:
    - name: write
      script: |
        #!/bin/sh
        set -eu
        cat "$(workspaces.in.path)/fixture.txt" > "$(workspaces.out.path)/report.txt"
        mkdir -p "$(workspaces.out.path)/sub"
        printf '{"ok":true}' > "$(workspaces.out.path)/sub/nested.json"
        printf 'not a report' > "$(workspaces.out.path)/other.txt"
`)
			out := t.TempDir()
			r := newRun(t, tk)
			r.Workspaces = map[string]string{"in": e.input, "out": out}
			r.Sources = map[string]string{"in": InputSource}
			r.Output, r.Reports = "out", []string{"report.txt", "sub/nested.json", "missing.json"}
			_, err := e.backend.RunTask(t.Context(), r)
			require.NoError(t, err)
			b, err := os.ReadFile(filepath.Join(out, "report.txt"))
			require.NoError(t, err)
			require.Equal(t, "fixture input\n", string(b))
			b, err = os.ReadFile(filepath.Join(out, "sub", "nested.json"))
			require.NoError(t, err)
			require.Equal(t, `{"ok":true}`, string(b))
			require.NoFileExists(t, filepath.Join(out, "missing.json"))
		})
		t.Run("failing step stops the run with its exit code", func(t *testing.T) {
			t.Parallel()
			tk := task(t, e, `
  results:
    - name: after
  steps:
    - name: ok
      script: 'true'
    - name: fail
      script: |
        echo boom >&2
        exit 3
    - name: never
      script: printf ran > "$(results.after.path)"
`)
			out, err := e.backend.RunTask(t.Context(), newRun(t, tk))
			var se *runner.StepError
			require.True(t, errors.As(err, &se), "%v", err)
			require.Equal(t, "fail", se.Step)
			require.Equal(t, 3, se.ExitCode)
			require.Empty(t, out.Results["after"])
		})
		t.Run("step timeout", func(t *testing.T) {
			t.Parallel()
			tk := task(t, e, `
  steps:
    - name: slow
      timeout: 1s
      script: sleep 60
`)
			_, err := e.backend.RunTask(t.Context(), newRun(t, tk))
			require.ErrorIs(t, err, runner.ErrTimeout)
		})
		t.Run("task timeout", func(t *testing.T) {
			t.Parallel()
			tk := task(t, e, "  steps:\n    - name: slow\n      script: sleep 60\n")
			r := newRun(t, tk)
			r.Timeout = 2 * time.Second
			_, err := e.backend.RunTask(t.Context(), r)
			require.ErrorIs(t, err, runner.ErrTimeout)
		})
		t.Run("cancel", func(t *testing.T) {
			t.Parallel()
			tk := task(t, e, "  steps:\n    - name: slow\n      script: sleep 60\n")
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(time.Second, cancel)
			_, err := e.backend.RunTask(ctx, newRun(t, tk))
			require.ErrorIs(t, err, context.Canceled)
		})
	})
	if e.after != nil {
		e.after(t)
	}
	latency(t, e, 3)
}

// latency runs the same one-step Task n times, one after the other, and logs
// the median end-to-end time of RunTask (create to result read back).
func latency(t *testing.T, e env, n int) time.Duration {
	tk := task(t, e, "  results:\n    - name: r\n  steps:\n    - name: s\n      script: printf ok > \"$(results.r.path)\"\n")
	var took []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		r := tekton.Run{Task: tk, Name: "latency", Dir: t.TempDir()}
		out, err := e.backend.RunTask(t.Context(), r)
		require.NoError(t, err)
		require.Equal(t, "ok", out.Results["r"])
		took = append(took, time.Since(start))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	med := took[len(took)/2]
	t.Logf("latency: %s backend: one-step TaskRun end to end, median of %d: %s (all: %v)", e.name, n, med, slices.Clip(took))
	return med
}
