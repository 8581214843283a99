// Package vaultdev starts a real Vault server in dev mode on loopback for tests and
// `make run`: a pinned binary built by deploy/tools/install-vault.sh, a random free
// port, a known root token, ready when /v1/sys/health says unsealed and active.
//
// Dev mode keeps everything in memory and mounts a KV v2 engine at secret/. The
// process is its own process group and dies with its parent (Pdeathsig), so a killed
// test never leaves a Vault behind.
package vaultdev

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvBinary names the environment variable holding the path of the vault binary
// (what deploy/tools/install-vault.sh prints).
const EnvBinary = "CISS_VAULT"

// ErrNoBinary is returned when no vault binary is configured.
var ErrNoBinary = errors.New("vaultdev: no vault binary: set " + EnvBinary + " (deploy/tools/install-vault.sh prints the path)")

// Config says how to start the server. The zero value is usable apart from Binary.
type Config struct {
	// Binary is the vault executable. Required.
	Binary string
	// Addr is the listen address; default a free port on 127.0.0.1.
	Addr string
	// RootToken is the dev root token; default a random one.
	RootToken string
	// Dir is the working directory (HOME for the process); default a new temp dir.
	Dir string
	// Output receives the server's stdout and stderr; default kept in memory for errors.
	Output io.Writer
	// ReadyTimeout bounds the wait for readiness; default 60 s.
	ReadyTimeout time.Duration
}

// Server is a running Vault dev server.
type Server struct {
	// Addr is the base URL, e.g. http://127.0.0.1:8200.
	Addr string
	// RootToken is the dev root token. Tests hand it only to set-up code.
	RootToken string

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	out     *tailBuffer
	ownDir  string
	stopped sync.Once
}

// Start starts a dev server and waits until it is ready. Stop it with Stop.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Binary == "" {
		return nil, ErrNoBinary
	}
	if cfg.RootToken == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("vaultdev: root token: %w", err)
		}
		cfg.RootToken = "root-" + hex.EncodeToString(b)
	}
	var ownDir string
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "vaultdev-")
		if err != nil {
			return nil, fmt.Errorf("vaultdev: %w", err)
		}
		cfg.Dir, ownDir = d, d
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 60 * time.Second
	}
	// A port picked by the kernel can be taken again before vault binds it: retry.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr := cfg.Addr
		if addr == "" {
			a, err := freeAddr()
			if err != nil {
				return nil, err
			}
			addr = a
		}
		s, err := start(ctx, cfg, addr)
		if err == nil {
			s.ownDir = ownDir
			return s, nil
		}
		lastErr = err
		if cfg.Addr != "" || ctx.Err() != nil {
			break
		}
	}
	if ownDir != "" {
		_ = os.RemoveAll(ownDir)
	}
	return nil, lastErr
}

func start(ctx context.Context, cfg Config, addr string) (*Server, error) {
	out := &tailBuffer{max: 64 << 10}
	var w io.Writer = out
	if cfg.Output != nil {
		w = io.MultiWriter(out, cfg.Output)
	}
	cmd := exec.Command(cfg.Binary, "server", "-dev",
		"-dev-listen-address="+addr,
		"-dev-root-token-id="+cfg.RootToken,
		"-dev-no-store-token",
	)
	cmd.Dir = cfg.Dir
	// Only what vault needs: no VAULT_* from the caller's environment leaks in.
	cmd.Env = []string{"HOME=" + cfg.Dir, "PATH=" + os.Getenv("PATH"), "VAULT_LOG_LEVEL=info"}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vaultdev: start %s: %w", cfg.Binary, err)
	}
	s := &Server{Addr: "http://" + addr, RootToken: cfg.RootToken, cmd: cmd, done: make(chan struct{}), out: out}
	go func() { s.waitErr = cmd.Wait(); close(s.done) }()
	rctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	if err := s.waitReady(rctx); err != nil {
		_ = s.Stop(context.Background())
		return nil, fmt.Errorf("vaultdev: %w; output:\n%s", err, out.String())
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Addr+"/v1/sys/health", nil)
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("vault exited before it was ready: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("vault not ready: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// Stop terminates the server (SIGTERM, then SIGKILL after ctx ends or 10 s) and
// removes its temporary directory. It is safe to call more than once.
func (s *Server) Stop(ctx context.Context) error {
	var err error
	s.stopped.Do(func() {
		pgid := s.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		select {
		case <-s.done:
		case <-ctx.Done():
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.done
		case <-t.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.done
		}
		if s.ownDir != "" {
			err = os.RemoveAll(s.ownDir)
		}
	})
	return err
}

// Output returns the last part of the server's output, for failure messages.
func (s *Server) Output() string { return s.out.String() }

// New starts a dev server for a test with the binary named by CISS_VAULT, skipping
// the test when it is not set, and stops it on cleanup. The server's output goes to
// the test log only when the test fails.
func New(t testing.TB) *Server {
	t.Helper()
	bin := os.Getenv(EnvBinary)
	if bin == "" {
		t.Skip("CISS_VAULT is not set: run deploy/tools/install-vault.sh and export its output (make unit does)")
	}
	s, err := Start(context.Background(), Config{Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vault output:\n%s", s.Output())
		}
		if err := s.Stop(context.Background()); err != nil {
			t.Errorf("vaultdev: stop: %v", err)
		}
	})
	return s
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("vaultdev: free port: %w", err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.max; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
