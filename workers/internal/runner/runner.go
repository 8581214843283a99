// Package runner executes a tool's steps. A Spec is the shape of a Tekton Task's
// steps (image, command, args, env, timeout) so that the local runner here and a
// cluster backend can run the same definitions; the local runner maps each step
// image to a locally installed binary instead of pulling it.
package runner

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Step is one process to run.
type Step struct {
	// Name identifies the step in errors and logs.
	Name string
	// Image is the container image the step would run in on a cluster.
	Image string
	// Command and Args are the process to run; Command[0] is resolved through
	// the image mapping when it equals the image's entrypoint name.
	Command []string
	Args    []string
	// Env holds KEY=value pairs added to a minimal environment.
	Env []string
	// Executable, when set, is run instead of the image's mapped binary (a
	// Task step's script, or a command resolved to the image's tools); the
	// image must still be mapped. Command[1:] and Args are its arguments.
	Executable string
	// PathDirs are put in front of PATH (the image's tools).
	PathDirs []string
	// Timeout bounds the step; zero means the spec's remaining time.
	Timeout time.Duration
}

// Spec is an ordered list of steps sharing one working directory.
type Spec struct {
	Steps []Step
	// Dir is the working directory for every step; it must exist.
	Dir string
	// Timeout bounds all steps together; zero means no bound beyond ctx.
	Timeout time.Duration
	// Nice, 1 to 19, runs every step at that lower CPU priority (through
	// nice(1), so every thread and child inherits it); 0 keeps the worker's.
	Nice int
}

// StepResult records a finished step.
type StepResult struct {
	Name     string
	ExitCode int
	// Stdout and Stderr hold at most the runner's output limit, keeping the tail.
	Stdout, Stderr []byte
	Duration       time.Duration
}

// Outcome is the result of a spec whose steps all succeeded.
type Outcome struct {
	Steps []StepResult
}

// Runner runs a Spec. Implementations: Local (processes on this host).
type Runner interface {
	Run(ctx context.Context, spec Spec) (Outcome, error)
}

// Errors from Run.
var (
	// ErrUnmappedImage means no local binary is configured for a step's image.
	ErrUnmappedImage = errors.New("no local binary mapped for step image")
	// ErrTimeout means a step or the spec ran out of time.
	ErrTimeout = errors.New("step timed out")
)

// StepError is a step that exited non-zero.
type StepError struct {
	Step     string
	ExitCode int
	// Stderr is the tail of the step's standard error.
	Stderr string
}

func (e *StepError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
		msg = msg[i+1:]
	}
	return fmt.Sprintf("step %s exited %d: %s", e.Step, e.ExitCode, msg)
}

// Local runs steps as local processes. Each step's image is mapped to a binary
// by the first matching glob (path.Match) in Images; an unmapped image is an
// error, never a silent skip.
type Local struct {
	// Images maps image globs ("aquasec/trivy:*") to binary paths.
	Images map[string]string
	// MaxOutput bounds captured stdout and stderr per step; default 1 MiB.
	MaxOutput int
}

var _ Runner = (*Local)(nil)

// Binary returns the local binary for an image.
func (l *Local) Binary(image string) (string, error) {
	var best, bin string
	for glob, b := range l.Images {
		// Most specific (longest) glob wins; equal lengths are ordered by the
		// glob text, so the choice never depends on map order.
		if ok, _ := path.Match(glob, image); ok && (len(glob) > len(best) || len(glob) == len(best) && glob < best) {
			best, bin = glob, b
		}
	}
	if bin == "" {
		return "", fmt.Errorf("%w: %q", ErrUnmappedImage, image)
	}
	return bin, nil
}

// Run runs the steps in order and stops at the first failure. Cancelling ctx or
// exceeding a timeout kills the step's whole process group.
func (l *Local) Run(ctx context.Context, spec Spec) (Outcome, error) {
	var out Outcome
	if spec.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, spec.Timeout, ErrTimeout)
		defer cancel()
	}
	for _, st := range spec.Steps {
		res, err := l.runStep(ctx, spec.Dir, spec.Nice, st)
		out.Steps = append(out.Steps, res)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (l *Local) runStep(ctx context.Context, dir string, nice int, st Step) (StepResult, error) {
	res := StepResult{Name: st.Name}
	if len(st.Command) == 0 {
		return res, fmt.Errorf("step %s: no command", st.Name)
	}
	bin, err := l.Binary(st.Image)
	if err != nil {
		return res, fmt.Errorf("step %s: %w", st.Name, err)
	}
	if st.Executable != "" {
		bin = st.Executable
	}
	if st.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, st.Timeout, ErrTimeout)
		defer cancel()
	}
	limit := cmp.Or(l.MaxOutput, 1<<20)
	stdout, stderr := &tailBuffer{max: limit}, &tailBuffer{max: limit}
	args := append(slices.Clone(st.Command[1:]), st.Args...)
	if nice > 0 && nice < 20 {
		if np, err := exec.LookPath("nice"); err == nil {
			args = append([]string{"-n", strconv.Itoa(nice), bin}, args...)
			bin = np
		}
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	pathEnv := strings.Join(append(slices.Clone(st.PathDirs), os.Getenv("PATH")), string(os.PathListSeparator))
	cmd.Env = append([]string{"PATH=" + pathEnv, "HOME=" + dir, "TMPDIR=" + dir}, st.Env...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Own process group, killed as a whole; and die with the worker if it dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	res.Duration = time.Since(start)
	res.Stdout, res.Stderr = stdout.Bytes(), stderr.Bytes()
	res.ExitCode = cmd.ProcessState.ExitCode()
	if ctx.Err() != nil {
		cause := context.Cause(ctx)
		if errors.Is(cause, context.DeadlineExceeded) {
			cause = ErrTimeout
		}
		return res, fmt.Errorf("step %s: %w", st.Name, cause)
	}
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return res, &StepError{Step: st.Name, ExitCode: res.ExitCode, Stderr: string(res.Stderr)}
		}
		return res, fmt.Errorf("step %s: %w", st.Name, err)
	}
	return res, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) > t.max {
		p = p[len(p)-t.max:]
	}
	if over := t.buf.Len() + len(p) - t.max; over > 0 {
		t.buf.Next(over)
	}
	t.buf.Write(p)
	return n, nil
}

func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.buf.Bytes())
}
