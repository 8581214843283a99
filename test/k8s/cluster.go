//go:build k8s

package k8s

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the script's subcommands. A cold install builds Kubernetes and
// Tekton from source (~20 minutes on 2 cores); a warm one takes a second.
const (
	installTimeout = 60 * time.Minute
	upTimeout      = 5 * time.Minute
	downTimeout    = 3 * time.Minute
)

// Cluster is a running test cluster started by [Up].
type Cluster struct {
	// Dir holds the cluster's state, configuration and logs (logs/*.log).
	Dir string
	// Kubeconfig is the path of an administrator kubeconfig (static token).
	Kubeconfig string
	// StepImage is a busybox image present on the node (never pulled); use it
	// for steps, with a script or an explicit command.
	StepImage string
	// PodLogsDir is the kubelet's podLogsDir: container logs are read here,
	// since the API server cannot reach the kubelet for `kubectl logs`.
	PodLogsDir string

	script string
	pids   map[string]int
	once   sync.Once
	err    error
}

// Up starts a cluster in a fresh t.TempDir() (after `cluster.sh install`,
// which returns at once when everything is cached) and registers its
// teardown with t.Cleanup; the test fails if the teardown leaves a process or
// a mount behind. Up skips the test when not running as root.
func Up(t testing.TB) *Cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the Kubernetes test cluster needs root (containerd, kubelet, mounts, cgroups)")
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("k8s: cannot locate cluster.sh")
	}
	c := &Cluster{Dir: t.TempDir(), script: filepath.Join(filepath.Dir(file), "cluster.sh")}
	ctx := context.Background()
	if err := c.run(ctx, t, installTimeout, "install"); err != nil {
		t.Fatalf("k8s: install: %v", err)
	}
	// One cluster per machine (cluster.sh refuses a second): tests in
	// packages that go test runs in parallel queue here instead.
	lockFile := filepath.Join(cacheDir(), "k8s", "cluster.lock")
	lock, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("k8s: %v", err)
	}
	waited := time.Now()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("k8s: lock %s: %v", lockFile, err)
	}
	if d := time.Since(waited); d > time.Second {
		t.Logf("k8s: waited %s for another test's cluster", d.Round(time.Second))
	}
	t.Cleanup(func() {
		if err := c.Down(t); err != nil {
			t.Errorf("k8s: %v", err)
		}
		_ = lock.Close() // releases the flock
	})
	if err := c.run(ctx, t, upTimeout, "up", c.Dir); err != nil {
		t.Fatalf("k8s: up: %v", err)
	}
	env, err := readEnv(filepath.Join(c.Dir, "env"))
	if err != nil {
		t.Fatalf("k8s: %v", err)
	}
	c.Kubeconfig, c.StepImage, c.PodLogsDir = env["KUBECONFIG"], env["CISS_K8S_STEP_IMAGE"], env["CISS_K8S_POD_LOGS"]
	if c.pids, err = readPids(filepath.Join(c.Dir, "pids")); err != nil {
		t.Fatalf("k8s: %v", err)
	}
	return c
}

// Down stops the cluster (`cluster.sh down`, which itself fails if anything
// is left) and checks independently that no process it started is alive and
// nothing is mounted under Dir. Later calls return the first call's result.
func (c *Cluster) Down(t testing.TB) error {
	c.once.Do(func() {
		err := c.run(context.Background(), t, downTimeout, "down", c.Dir)
		if left := c.Leftovers(); len(left) > 0 {
			err = errors.Join(err, fmt.Errorf("left behind: %s", strings.Join(left, "; ")))
		}
		c.err = err
	})
	return c.err
}

// Leftovers describes the cluster's processes still alive (by the pids Up
// recorded) and the mounts at or under Dir.
func (c *Cluster) Leftovers() []string {
	var left []string
	for name, pid := range c.pids {
		if processAlive(pid, c.Dir) {
			left = append(left, fmt.Sprintf("process %s (pid %d)", name, pid))
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return append(left, err.Error())
	}
	for line := range strings.SplitSeq(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		m := strings.ReplaceAll(f[4], `\040`, " ")
		if m == c.Dir || strings.HasPrefix(m, c.Dir+"/") {
			left = append(left, "mount "+m)
		}
	}
	return left
}

// processAlive reports whether pid runs (and is not a zombie) with dir on its
// command line, as every process the script starts has.
func processAlive(pid int, dir string) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && strings.HasPrefix(string(stat[i:]), ") Z") {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), dir+"/")
}

// run runs cluster.sh with args, its output logged through t line by line.
func (c *Cluster) run(ctx context.Context, t testing.TB, timeout time.Duration, args ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{c.script}, args...)...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			t.Log(sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	start := time.Now()
	err := cmd.Run()
	_ = pw.Close()
	<-done
	if err != nil {
		return fmt.Errorf("cluster.sh %s after %s: %w", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), err)
	}
	return nil
}

// cacheDir is cluster.sh's cache: $CISS_CACHE, else $XDG_CACHE_HOME/ciss,
// else ~/.cache/ciss.
func cacheDir() string {
	if d := os.Getenv("CISS_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "ciss")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "ciss")
}

func readEnv(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

func readPids(dir string) (map[string]int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.pid"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no pid files in %s: %v", dir, err)
	}
	pids := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		pids[strings.TrimSuffix(filepath.Base(f), ".pid")] = pid
	}
	return pids, nil
}

// LogPods logs the tail of every container log the kubelet wrote (the way
// to see a failed step's output: `kubectl logs` cannot reach the kubelet).
func (c *Cluster) LogPods(t testing.TB) {
	t.Helper()
	_ = filepath.WalkDir(c.PodLogsDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil {
			if len(b) > 4096 {
				b = b[len(b)-4096:]
			}
			t.Logf("%s:\n%s", strings.TrimPrefix(path, c.PodLogsDir+"/"), b)
		}
		return nil
	})
}
