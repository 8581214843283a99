package runner

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// shell maps the step image "shell:*" to /bin/sh, so steps are shell scripts.
func shell() *Local { return &Local{Images: map[string]string{"shell:*": "/bin/sh"}} }

// script is a step running a shell script.
func script(name, src string, env ...string) Step {
	return Step{Name: name, Image: "shell:1", Command: []string{"sh"}, Args: []string{"-c", src}, Env: env}
}

func TestRunStepsInOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, err := shell().Run(t.Context(), Spec{Dir: dir, Steps: []Step{
		script("one", `echo "one $GREETING" >> log; echo out1; echo err1 >&2`, "GREETING=hello"),
		script("two", `echo "two $GREETING $(pwd) $HOME $TMPDIR" >> log; printf out2`),
		script("three", `cat log`),
	}})
	require.NoError(t, err)
	require.Len(t, out.Steps, 3)
	for i, name := range []string{"one", "two", "three"} {
		require.Equal(t, name, out.Steps[i].Name)
		require.Zero(t, out.Steps[i].ExitCode)
	}
	require.Equal(t, "out1\n", string(out.Steps[0].Stdout))
	require.Equal(t, "err1\n", string(out.Steps[0].Stderr))
	require.Equal(t, "out2", string(out.Steps[1].Stdout))
	// Env is per step; the working directory is Dir for every step and doubles
	// as HOME and TMPDIR.
	want := "one hello\ntwo  " + dir + " " + dir + " " + dir + "\n"
	require.Equal(t, want, string(out.Steps[2].Stdout))
	b, err := os.ReadFile(filepath.Join(dir, "log"))
	require.NoError(t, err)
	require.Equal(t, want, string(b))
}

// TestRunMinimalEnv: the step sees PATH and its Env only, not the worker's
// environment (which may hold credentials).
func TestRunMinimalEnv(t *testing.T) {
	t.Setenv("CISS_RUNNER_TEST_SECRET", "s3cret")
	out, err := shell().Run(t.Context(), Spec{Dir: t.TempDir(), Steps: []Step{script("env", `env | sort`, "A=1")}})
	require.NoError(t, err)
	env := string(out.Steps[0].Stdout)
	require.NotContains(t, env, "s3cret")
	require.Contains(t, env, "A=1\n")
	require.Contains(t, env, "PATH=")
}

func TestRunStepError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, err := shell().Run(t.Context(), Spec{Dir: dir, Steps: []Step{
		script("ok", `true`),
		script("fail", `echo progress; echo "first line" >&2; echo "FATAL: it broke" >&2; exit 3`),
		script("never", `touch never-ran`),
	}})
	var se *StepError
	require.ErrorAs(t, err, &se)
	require.Equal(t, "fail", se.Step)
	require.Equal(t, 3, se.ExitCode)
	require.Equal(t, "first line\nFATAL: it broke\n", se.Stderr)
	require.Equal(t, "step fail exited 3: FATAL: it broke", se.Error(), "the message carries the last stderr line")
	require.Len(t, out.Steps, 2, "steps after a failure must not run")
	require.Equal(t, 3, out.Steps[1].ExitCode)
	require.Equal(t, "progress\n", string(out.Steps[1].Stdout))
	require.NoFileExists(t, filepath.Join(dir, "never-ran"))
}

func TestRunSetupErrors(t *testing.T) {
	t.Parallel()
	l := &Local{Images: map[string]string{"shell:*": "/bin/sh", "gone:*": filepath.Join(t.TempDir(), "no-such-binary")}}
	tests := []struct {
		name string
		step Step
		is   error
		want string
	}{
		{"unmapped image", Step{Name: "scan", Image: "aquasec/trivy:0.69.0", Command: []string{"trivy"}}, ErrUnmappedImage, `"aquasec/trivy:0.69.0"`},
		{"no command", Step{Name: "empty", Image: "shell:1"}, nil, "no command"},
		{"binary missing", Step{Name: "gone", Image: "gone:1", Command: []string{"x"}}, os.ErrNotExist, "step gone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := l.Run(t.Context(), Spec{Dir: t.TempDir(), Steps: []Step{tt.step}})
			require.Error(t, err)
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
			}
			var se *StepError
			require.False(t, errors.As(err, &se), "a setup error is not a StepError")
			require.ErrorContains(t, err, tt.want)
			require.Len(t, out.Steps, 1)
		})
	}
}

// spawner is a step that starts a background child, records its pid in
// child.pid, and waits for it: killing only the step's own process would leave
// the child running.
var spawner = script("spawn", `sleep 300 & echo $! > child.pid; wait`)

// childGone waits until the pid recorded in dir/child.pid no longer runs. A
// zombie (killed, not yet reaped by its new parent) counts as gone.
func childGone(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "child.pid"))
	require.NoError(t, err, "the step did not get to start its child")
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return
		}
		if st, rerr := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); rerr == nil {
			if f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:])); len(f) > 0 && f[0] == "Z" {
				return
			}
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("child %d of the step still runs after Run returned", pid)
		}
		time.Sleep(10 * time.Millisecond) // polling a process table: there is no event to wait on
	}
}

// waitFile polls for a file the step writes.
func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written", path)
		}
		time.Sleep(5 * time.Millisecond) // polling the file system
	}
}

func TestRunTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec func(dir string) Spec
	}{
		{"step timeout", func(dir string) Spec {
			st := spawner
			st.Timeout = time.Second
			return Spec{Dir: dir, Steps: []Step{st}}
		}},
		{"spec timeout", func(dir string) Spec {
			return Spec{Dir: dir, Timeout: time.Second, Steps: []Step{script("first", "true"), spawner}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			start := time.Now()
			_, err := shell().Run(t.Context(), tt.spec(dir))
			require.ErrorIs(t, err, ErrTimeout)
			require.ErrorContains(t, err, "step spawn")
			var se *StepError
			require.False(t, errors.As(err, &se), "a killed step is not reported as a StepError")
			require.Less(t, time.Since(start), 4*time.Second, "Run waited for the child (WaitDelay) instead of killing the group")
			childGone(t, dir)
		})
	}
}

func TestRunContextCancelKillsWithCause(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cause := errors.New("job cancelled by alice")
	ctx, cancel := context.WithCancelCause(t.Context())
	go func() {
		waitFile(t, filepath.Join(dir, "child.pid"))
		cancel(cause)
	}()
	start := time.Now()
	_, err := shell().Run(ctx, Spec{Dir: dir, Steps: []Step{spawner}})
	require.ErrorIs(t, err, cause)
	require.NotErrorIs(t, err, ErrTimeout)
	require.Less(t, time.Since(start), 4*time.Second)
	childGone(t, dir)
}

func TestRunCancelledBeforeStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithCancelCause(t.Context())
	cancel(context.Canceled)
	_, err := shell().Run(ctx, Spec{Dir: dir, Steps: []Step{script("s", "touch ran")}})
	require.ErrorIs(t, err, context.Canceled)
	require.NoFileExists(t, filepath.Join(dir, "ran"))
}

func TestRunOutputKeepsTail(t *testing.T) {
	t.Parallel()
	l := shell()
	l.MaxOutput = 10
	out, err := l.Run(t.Context(), Spec{Dir: t.TempDir(), Steps: []Step{
		// Several writes, the last one shorter than the limit.
		script("loud", `printf 0123456789; printf abcdefghij; printf KLM; printf 0123456789abcdefghijXYZ >&2`),
		script("quiet", `printf short`),
	}})
	require.NoError(t, err)
	require.Equal(t, "defghijKLM", string(out.Steps[0].Stdout))
	require.Equal(t, "defghijXYZ", string(out.Steps[0].Stderr))
	require.Equal(t, "short", string(out.Steps[1].Stdout))

	// The StepError carries the stderr tail as well.
	_, err = l.Run(t.Context(), Spec{Dir: t.TempDir(), Steps: []Step{
		script("fail", `i=0; while [ $i -lt 100 ]; do echo "noise $i" >&2; i=$((i+1)); done; printf MANIFEST >&2; exit 1`),
	}})
	var se *StepError
	require.ErrorAs(t, err, &se)
	require.Equal(t, "\nMANIFEST", se.Stderr[len(se.Stderr)-9:])
	require.Len(t, se.Stderr, 10)
}

func TestRunDefaultOutputLimit(t *testing.T) {
	t.Parallel()
	out, err := shell().Run(t.Context(), Spec{Dir: t.TempDir(), Steps: []Step{
		script("big", `head -c 1100000 /dev/zero | tr '\0' x; printf END`),
	}})
	require.NoError(t, err)
	require.Len(t, out.Steps[0].Stdout, 1<<20)
	require.True(t, strings.HasSuffix(string(out.Steps[0].Stdout), "xEND"))
}

func TestBinary(t *testing.T) {
	t.Parallel()
	l := &Local{Images: map[string]string{
		"*":                     "/bin/any",
		"aquasec/*":             "/bin/aquasec",
		"aquasec/trivy:*":       "/bin/trivy",
		"aquasec/trivy:0.69.0":  "/bin/trivy-0.69.0",
		"ghcr.io/*/grype:v*":    "/bin/grype",
		"[":                     "/bin/bad-pattern",
		"registry:5000/tools/*": "/bin/tools",
	}}
	tests := []struct{ image, want string }{
		{"aquasec/trivy:0.69.0", "/bin/trivy-0.69.0"},
		{"aquasec/trivy:0.70.0", "/bin/trivy"},
		{"aquasec/kube-bench:1", "/bin/aquasec"},
		{"alpine", "/bin/any"},
		{"ghcr.io/anchore/grype:v0.80.0", "/bin/grype"},
		{"registry:5000/tools/cosign", "/bin/tools"},
	}
	for _, tt := range tests {
		got, err := l.Binary(tt.image)
		require.NoError(t, err, tt.image)
		require.Equal(t, tt.want, got, tt.image)
	}
	// "*" does not cross "/": multi-level names need their own glob.
	for _, image := range []string{"docker.io/library/alpine:3", "quay.io/x/y"} {
		_, err := l.Binary(image)
		require.ErrorIs(t, err, ErrUnmappedImage, image)
	}
	_, err := (&Local{}).Binary("aquasec/trivy:0.69.0")
	require.ErrorIs(t, err, ErrUnmappedImage)
}

// TestBinaryTieIsDeterministic: two globs of the same length that both match
// must give the same binary every time.
func TestBinaryTieIsDeterministic(t *testing.T) {
	t.Parallel()
	l := &Local{Images: map[string]string{"a/b:*": "/bin/one", "a/*:1": "/bin/two"}}
	first, err := l.Binary("a/b:1")
	require.NoError(t, err)
	for range 200 {
		got, err := l.Binary("a/b:1")
		require.NoError(t, err)
		require.Equal(t, first, got)
	}
}

// TestRunNice: a spec with Nice runs its steps (and their children) at that
// niceness, relative to the worker's own.
func TestRunNice(t *testing.T) {
	t.Parallel()
	own, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	require.NoError(t, err)
	// The raw getpriority syscall answers 20 - nice.
	base := 20 - own
	prio := func(nice int) int {
		out, err := shell().Run(t.Context(), Spec{Dir: t.TempDir(), Nice: nice, Steps: []Step{
			script("prio", `sh -c 'cut -d" " -f19 /proc/$$/stat'`)}})
		require.NoError(t, err)
		n, err := strconv.Atoi(strings.TrimSpace(string(out.Steps[0].Stdout)))
		require.NoError(t, err)
		return n
	}
	require.Equal(t, base, prio(0))
	require.Equal(t, min(base+10, 19), prio(10))
}
