// Package stack brings up the whole CISS stack on loopback: an embedded NATS
// JetStream server (unless an external URL is given), a loopback OCI registry
// seeded with the demo images, a dev PKI, the offline Trivy DB fixture, and the
// real gateway, dispatcher and worker binaries as child processes. `make run`
// and the end-to-end tests both use it, so the quick start is what is tested.
package stack

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"ciss.dev/test/fixture"
)

// Component names.
const (
	Gateway    = "gateway"
	Dispatcher = "dispatcher"
	Worker     = "worker"
)

// Config configures a stack. Zero values pick free loopback ports and defaults.
type Config struct {
	// Dir holds the stack's state: the dev PKI (ca.pem, client.pem, …), trivy-cache/, nats/, policy.yaml.
	// Required.
	Dir string
	// BinDir holds ciss-gateway, ciss-dispatcher and ciss-worker. Required;
	// see Build.
	BinDir string
	// Trivy is the trivy binary. Required.
	Trivy string
	// Gosec is the gosec binary for sast jobs; default gosec on PATH.
	Gosec string
	// NATSURL is an external NATS server; empty embeds one.
	NATSURL string
	// NATSPort is the embedded server's port; 0 picks a free one.
	NATSPort int
	// RegistryAddr is the registry listen address; default 127.0.0.1:0.
	RegistryAddr string
	// APIAddr is the gateway's mTLS address; default a free loopback port.
	APIAddr string
	// AdminAddrs are the components' admin addresses; default free ports.
	AdminAddrs map[string]string
	// Policy is the gateway policy YAML; default DevPolicy.
	Policy string
	// RoutingFile is the routing file; default deploy/routing.yaml of this repo.
	RoutingFile string
	// TasksDir holds the tool catalog (Tekton Tasks and tool manifests);
	// default deploy/tekton of this repo.
	TasksDir string
	// WebhookAddr is the gateway's webhook listener address (server TLS, no
	// client certificates); default a free loopback port.
	WebhookAddr string
	// Subscriptions is the dispatcher's webhook subscription YAML; default
	// DevSubscriptions of the demo image.
	Subscriptions string
	// Args adds flags per component, e.g. {Worker: {"-ack-wait", "3s"}}.
	Args map[string][]string
	// Output receives the components' logs, each line prefixed with its name;
	// default discards.
	Output io.Writer
}

// DevPolicy binds the dev admin identity (fixture.WriteDevPKI's client.pem) to
// the tenant "dev" with every role.
const DevPolicy = `version: 1
bindings:
  - name: dev-admin
    match:
      spiffe_id: "` + fixture.DevAdminSPIFFEID + `"
    tenant: dev
    roles: [admin]
`

// DevSubscriptions makes a push (or tag, or pull request) to any repository
// of any host create an image-scan job of image for the tenant "dev": every
// signed webhook sent to the dev stack gives a real job to watch.
func DevSubscriptions(image string) string {
	return `version: 1
subscriptions:
  - name: dev-any-repo
    tenant: dev
    match:
      events: [push, tag_push, pull_request]
    jobs:
      - type: image-scan
        target:
          image: "` + image + `"
`
}

// Webhook file names inside Config.Dir.
const (
	// WebhookSecretFile holds the dev webhook secret for GitHub and GitLab:
	// random, created once and reused across runs (like the dev CA).
	WebhookSecretFile = "webhook-secret"
	webhookConfigFile = "webhooks.yaml"
	subscriptionsFile = "subscriptions.yaml"
)

// Stack is a running CISS stack.
type Stack struct {
	cfg Config

	// NATSURL is the URL every component uses.
	NATSURL string
	// NATS is the embedded server, nil with an external one.
	NATS *server.Server
	// Registry is the loopback registry, Images what it was seeded with.
	Registry *fixture.Registry
	Images   fixture.Seeded
	// PKI is the dev PKI; DB the Trivy DB fixture.
	PKI fixture.DevPKI
	DB  fixture.DBInfo
	// APIURL is the gateway base URL (https://127.0.0.1:PORT).
	APIURL string
	// PolicyFile is the gateway policy file; rewrite it to change the policy.
	PolicyFile string
	// WebhookURL is the webhook listener's base URL (https://127.0.0.1:PORT);
	// the receivers are WebhookURL+"/v1/webhooks/github" and ".../gitlab".
	WebhookURL string
	// WebhookSecret is the dev webhook secret (both providers), kept in
	// WebhookSecretPath.
	WebhookSecret     string
	WebhookSecretPath string
	// SubscriptionsFile is the dispatcher's subscription file; rewrite it to
	// change the subscriptions (the dispatcher reloads it).
	SubscriptionsFile string
	// SigningKeyFile and SigningPublicKeyFile are the dev cosign key pair
	// (cosign.key, empty password; cosign.pub) the worker signs with and the
	// gateway publishes at GET /v1/keys. Created once, like the dev CA.
	SigningKeyFile, SigningPublicKeyFile string
	// Git is the loopback git server (smart HTTP, push enabled, basic auth)
	// holding SASTRepo; GitSigningKeyFile the dev SSH key that signs sast
	// tags and AllowedSignersFile the file that verifies them.
	Git                                   *fixture.GitServer
	SASTRepo                              fixture.SASTRepo
	GitSigningKeyFile, AllowedSignersFile string
	gitCredentials                        string

	natsOpts *server.Options
	out      *lineWriter
	picked   map[string]bool // addresses chosen by the stack, not the caller

	mu    sync.Mutex
	procs map[string]*exec.Cmd
	exits map[string]chan error
}

// Start brings the stack up and returns once every component reports ready.
// On error everything already started is stopped.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if cfg.Dir == "" || cfg.BinDir == "" || cfg.Trivy == "" {
		return nil, errors.New("stack: Config.Dir, BinDir and Trivy are required")
	}
	if cfg.RoutingFile == "" || cfg.TasksDir == "" {
		root, err := RepoRoot()
		if err != nil {
			return nil, err
		}
		cfg.RoutingFile = cmp.Or(cfg.RoutingFile, filepath.Join(root, "deploy", "routing.yaml"))
		cfg.TasksDir = cmp.Or(cfg.TasksDir, filepath.Join(root, "deploy", "tekton"))
	}
	cfg.Policy = cmp.Or(cfg.Policy, DevPolicy)
	cfg.RegistryAddr = cmp.Or(cfg.RegistryAddr, "127.0.0.1:0")
	if cfg.Output == nil {
		cfg.Output = io.Discard
	}
	admin := map[string]string{}
	picked := map[string]bool{} // ports we chose, which may be re-picked
	for _, c := range []string{Gateway, Dispatcher, Worker} {
		if a := cfg.AdminAddrs[c]; a != "" {
			admin[c] = a
		} else if admin[c], err = FreeAddr(); err != nil {
			return nil, err
		} else {
			picked[c] = true
		}
	}
	cfg.AdminAddrs = admin
	if cfg.APIAddr == "" {
		if cfg.APIAddr, err = FreeAddr(); err != nil {
			return nil, err
		}
		picked["api"] = true
	}
	if cfg.WebhookAddr == "" {
		if cfg.WebhookAddr, err = FreeAddr(); err != nil {
			return nil, err
		}
		picked["webhook"] = true
	}
	s := &Stack{cfg: cfg, out: &lineWriter{w: cfg.Output}, procs: map[string]*exec.Cmd{}, exits: map[string]chan error{}, picked: picked}
	defer func() {
		if err != nil {
			s.Close() // s, not the nil returned alongside err
		}
	}()
	if s.PKI, err = fixture.WriteDevPKI(cfg.Dir); err != nil {
		return nil, err
	}
	if s.DB, err = fixture.BuildTrivyDB(filepath.Join(cfg.Dir, "trivy-cache")); err != nil {
		return nil, err
	}
	s.PolicyFile = filepath.Join(cfg.Dir, "policy.yaml")
	if err := os.WriteFile(s.PolicyFile, []byte(cfg.Policy), 0o600); err != nil {
		return nil, fmt.Errorf("stack: write policy: %w", err)
	}
	// The registry lives as long as the stack, not as long as start-up.
	if s.Registry, err = fixture.StartRegistry(context.WithoutCancel(ctx), cfg.RegistryAddr); err != nil {
		return nil, err
	}
	if s.Images, err = s.Registry.Seed(ctx); err != nil {
		return nil, err
	}
	if err := s.writeWebhookFiles(); err != nil {
		return nil, err
	}
	if err := s.writeSigningKey(ctx); err != nil {
		return nil, err
	}
	if err := s.setupSAST(ctx); err != nil {
		return nil, err
	}
	s.NATSURL = cfg.NATSURL
	if s.NATSURL == "" {
		if err := s.startNATS(); err != nil {
			return nil, err
		}
	}
	s.APIURL = "https://" + cfg.APIAddr
	s.WebhookURL = "https://" + cfg.WebhookAddr
	// The dispatcher creates the topology; the others wait for it anyway, but
	// starting it first makes start-up quicker and its errors clearer.
	for _, c := range []string{Dispatcher, Gateway, Worker} {
		if err := s.startWithFreshPorts(ctx, c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Stack) startNATS() error {
	port := cmp.Or(s.cfg.NATSPort, -1)
	if s.natsOpts != nil {
		port = s.natsOpts.Port // a restart keeps the port clients reconnect to
	}
	opts := &server.Options{
		ServerName: "ciss-embedded",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(s.cfg.Dir, "nats"),
		NoSigs:     true,
		MaxPayload: 1 << 20,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("stack: embedded NATS: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return errors.New("stack: embedded NATS did not become ready in 30s")
	}
	addr := ns.Addr().(*net.TCPAddr)
	opts.Port = addr.Port
	s.natsOpts = opts
	s.NATS = ns
	s.NATSURL = fmt.Sprintf("nats://127.0.0.1:%d", addr.Port)
	return nil
}

// StopNATS shuts the embedded NATS server down (its file store stays).
func (s *Stack) StopNATS() {
	if s.NATS != nil {
		s.NATS.Shutdown()
		s.NATS.WaitForShutdown()
	}
}

// StartNATS starts the embedded server again on the same port and store.
func (s *Stack) StartNATS() error { return s.startNATS() }

// args returns a component's command line.
func (s *Stack) args(c string) []string {
	a := []string{"-nats-url", s.NATSURL, "-admin-addr", s.cfg.AdminAddrs[c]}
	switch c {
	case Gateway:
		a = append(a, "-api-addr", s.cfg.APIAddr, "-tls-cert", s.PKI.ServerCertFile, "-tls-key", s.PKI.ServerKeyFile,
			"-client-ca", s.PKI.CAFile, "-policy", s.PolicyFile,
			"-webhook-addr", s.cfg.WebhookAddr, "-webhook-config", filepath.Join(s.cfg.Dir, webhookConfigFile),
			"-signing-public-keys", s.SigningPublicKeyFile)
	case Dispatcher:
		a = append(a, "-routing", s.cfg.RoutingFile, "-subscriptions", s.SubscriptionsFile, "-catalog", s.cfg.TasksDir)
	case Worker:
		a = append(a, "-tasks-dir", s.cfg.TasksDir, "-trivy", s.cfg.Trivy, "-trivy-cache-dir", s.DB.CacheDir, "-work-dir", s.workDir(),
			"-signing-key", s.SigningKeyFile)
	}
	a = append(a, s.sastArgs(c)...)
	return append(a, s.cfg.Args[c]...)
}

// writeWebhookFiles writes the dev webhook secret (once: it is reused across
// runs), the gateway's webhook configuration using it for GitHub and GitLab,
// and the dispatcher's subscriptions.
func (s *Stack) writeWebhookFiles() error {
	s.WebhookSecretPath = filepath.Join(s.cfg.Dir, WebhookSecretFile)
	b, err := os.ReadFile(s.WebhookSecretPath)
	if secret := strings.TrimSpace(string(b)); err == nil && len(secret) >= 32 {
		s.WebhookSecret = secret
	} else {
		var raw [32]byte
		_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails (Go ≥1.24 panics instead).
		s.WebhookSecret = hex.EncodeToString(raw[:])
		if err := os.WriteFile(s.WebhookSecretPath, []byte(s.WebhookSecret+"\n"), 0o600); err != nil {
			return fmt.Errorf("stack: write webhook secret: %w", err)
		}
	}
	ref := fmt.Sprintf("{secret_file: %q}", s.WebhookSecretPath)
	conf := "version: 1\ngithub:\n  default: " + ref + "\ngitlab:\n  default: " + ref + "\n"
	if err := os.WriteFile(filepath.Join(s.cfg.Dir, webhookConfigFile), []byte(conf), 0o600); err != nil {
		return fmt.Errorf("stack: write webhook config: %w", err)
	}
	s.SubscriptionsFile = filepath.Join(s.cfg.Dir, subscriptionsFile)
	subs := cmp.Or(s.cfg.Subscriptions, DevSubscriptions(s.Images.Vulnerable))
	if err := os.WriteFile(s.SubscriptionsFile, []byte(subs), 0o600); err != nil {
		return fmt.Errorf("stack: write subscriptions: %w", err)
	}
	return nil
}

func (s *Stack) workDir() string { return filepath.Join(s.cfg.Dir, "work") }

// StartComponent starts a component's binary and waits until its /readyz says
// ready (or it exits, or ctx ends).
func (s *Stack) StartComponent(ctx context.Context, c string) error {
	if err := os.MkdirAll(s.workDir(), 0o700); err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(s.cfg.BinDir, "ciss-"+c), s.args(c)...)
	cmd.Env = append(os.Environ(), "HOME="+s.cfg.Dir, "COSIGN_PASSWORD=") // the dev key has an empty password
	logw := s.out.prefixed(c)
	cmd.Stdout, cmd.Stderr = logw, logw
	// Its own process group (so a kill reaches its children, e.g. trivy), and
	// dead with us if the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("stack: start %s: %w", c, err)
	}
	exit := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		_ = logw.Close()
		exit <- err
	}()
	s.mu.Lock()
	s.procs[c], s.exits[c] = cmd, exit
	s.mu.Unlock()
	return s.waitReady(ctx, c, exit)
}

func (s *Stack) waitReady(ctx context.Context, c string, exit chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	url := "http://" + s.cfg.AdminAddrs[c] + "/readyz"
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := client.Get(url); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exit:
			exit <- err // keep it for Stop
			return &StartError{Component: c, Err: err, Output: s.out.tail(c)}
		case <-ctx.Done():
			return fmt.Errorf("stack: %s not ready: %w", c, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// StartError is a component that exited before it was ready.
type StartError struct {
	Component string
	Err       error
	// Output is the component's last lines of output.
	Output string
}

func (e *StartError) Error() string {
	return fmt.Sprintf("stack: %s exited before it was ready: %v\n%s", e.Component, e.Err, e.Output)
}

func (e *StartError) Unwrap() error { return e.Err }

// startWithFreshPorts starts a component; if it died because a port picked by
// FreeAddr was taken in between (another listener can grab a port between
// FreeAddr closing it and the component binding it), it picks new ports and
// tries again, up to three times. Addresses the caller fixed are never moved.
func (s *Stack) startWithFreshPorts(ctx context.Context, c string) error {
	for attempt := 1; ; attempt++ {
		err := s.StartComponent(ctx, c)
		var se *StartError
		if err == nil || attempt == 3 || !errors.As(err, &se) || !strings.Contains(se.Output, "address already in use") ||
			!s.picked[c] || (c == Gateway && !s.picked["api"]) {
			return err // a caller's fixed port in use is the caller's to resolve
		}
		addr, ferr := FreeAddr()
		if ferr != nil {
			return err
		}
		s.cfg.AdminAddrs[c] = addr
		if c == Gateway {
			if s.cfg.APIAddr, ferr = FreeAddr(); ferr != nil {
				return err
			}
			s.APIURL = "https://" + s.cfg.APIAddr
			if s.picked["webhook"] {
				if s.cfg.WebhookAddr, ferr = FreeAddr(); ferr != nil {
					return err
				}
				s.WebhookURL = "https://" + s.cfg.WebhookAddr
			}
		}
	}
}

// StopComponent sends sig to a component's process group and waits for it to
// exit. SIGKILL simulates a crash; SIGTERM a graceful stop.
func (s *Stack) StopComponent(c string, sig syscall.Signal) error {
	s.mu.Lock()
	cmd, exit := s.procs[c], s.exits[c]
	delete(s.procs, c)
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-exit:
	case <-time.After(45 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exit
	}
	return nil
}

// AdminURL is a component's admin base URL.
func (s *Stack) AdminURL(c string) string { return "http://" + s.cfg.AdminAddrs[c] }

// Close stops every component gracefully, then the registry and NATS.
func (s *Stack) Close() {
	for _, c := range []string{Gateway, Worker, Dispatcher} {
		_ = s.StopComponent(c, syscall.SIGTERM)
	}
	if s.Registry != nil {
		_ = s.Registry.Close()
	}
	if s.Git != nil {
		s.Git.Close()
	}
	s.StopNATS()
}

// Client returns an HTTPS client for the gateway presenting kp (nil: no
// client certificate) and trusting the dev CA.
func (s *Stack) Client(kp *fixture.KeyPair) (*http.Client, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.PKI.CA.CertPEM())
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if kp != nil {
		c, err := kp.TLSCertificate()
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 64}}, nil
}

// FreeAddr returns a loopback address with a port free at the time of the call.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("stack: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// RepoRoot finds the repository root (the directory holding go.work).
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOWORK").Output()
	if err != nil {
		return "", fmt.Errorf("stack: go env GOWORK: %w", err)
	}
	gowork := strings.TrimSpace(string(out))
	if gowork == "" || gowork == "off" {
		return "", errors.New("stack: not inside the CISS workspace (go env GOWORK is empty)")
	}
	return filepath.Dir(gowork), nil
}

// Build compiles the three component binaries and the ciss client into dir.
func Build(ctx context.Context, dir string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator),
		"ciss.dev/gateway/cmd/ciss-gateway", "ciss.dev/dispatcher/cmd/ciss-dispatcher", "ciss.dev/workers/cmd/ciss-worker",
		"ciss.dev/gateway/cmd/ciss")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("stack: build binaries: %w\n%s", err, out)
	}
	return nil
}

// lineWriter serialises prefixed log lines from several processes and keeps
// the last lines of each, for start-up errors.
type lineWriter struct {
	mu    sync.Mutex
	w     io.Writer
	tails map[string][]string
}

const tailLines = 15

func (l *lineWriter) prefixed(name string) *io.PipeWriter {
	pr, pw := io.Pipe()
	l.mu.Lock()
	if l.tails == nil {
		l.tails = map[string][]string{}
	}
	l.tails[name] = nil
	l.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			fmt.Fprintf(l.w, "%-10s| %s\n", name, sc.Text())
			t := append(l.tails[name], sc.Text())
			l.tails[name] = t[max(0, len(t)-tailLines):]
			l.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	return pw
}

// tail returns a component's last output lines.
func (l *lineWriter) tail(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.tails[name], "\n")
}

// Port returns the port of a host:port address.
func Port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}
