// Package gateway is the CISS API gateway: the only component CI pipelines talk
// to. It authenticates callers by mutual TLS, authorizes them with a policy file
// that maps certificate identities to tenants and roles, and turns API calls into
// CloudEvents on NATS JetStream and reads of the job state bucket and report
// object store. It never runs tools and never creates JetStream resources.
//
// A Gateway serves two listeners: the API (HTTPS with client certificates,
// TLS 1.3 only) and the admin endpoint (plain HTTP: /healthz, /readyz,
// /metrics), which is meant to be reachable only from the node or the cluster.
// With a webhook configuration it serves a third: the git webhook receivers
// (HTTPS with the same server certificate, TLS 1.2+, no client certificates:
// git hosts authenticate by signature; see package webhook).
//
// Certificates, the client CA bundle and the policy are reloaded without a
// restart when their files change (polled every Config.ReloadInterval) or when
// Reload is called. A reload that fails keeps the previous material in force.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"ciss.dev/gateway/internal/api"
	"ciss.dev/gateway/internal/guardrail"
	"ciss.dev/gateway/internal/jobstore"
	"ciss.dev/gateway/internal/metrics"
	"ciss.dev/gateway/internal/mtls"
	"ciss.dev/gateway/internal/policy"
	"ciss.dev/gateway/internal/webhook"
)

// Defaults for zero Config fields.
const (
	DefaultAPIAddr        = "127.0.0.1:8443"
	DefaultAdminAddr      = "127.0.0.1:9443"
	DefaultWebhookAddr    = "127.0.0.1:8444"
	DefaultNATSURL        = "nats://127.0.0.1:4222"
	DefaultReloadInterval = 2 * time.Second
	DefaultMaxBodyBytes   = api.DefaultMaxBodyBytes
	DefaultMaxWait        = api.DefaultMaxWait
	DefaultSource         = api.DefaultSource
)

// Config configures a Gateway. The zero value of every optional field means
// its default; the four file fields are required.
type Config struct {
	// APIAddr is the mTLS API listen address; default "127.0.0.1:8443".
	// Port 0 picks a free port (see Gateway.APIAddr).
	APIAddr string
	// AdminAddr is the plain HTTP admin listen address (/healthz, /readyz,
	// /metrics); default "127.0.0.1:9443".
	AdminAddr string

	// TLSCertFile and TLSKeyFile hold the server certificate chain and key (PEM).
	TLSCertFile string
	TLSKeyFile  string
	// ClientCAFile is a PEM bundle of the CAs trusted to issue client certificates.
	ClientCAFile string
	// PolicyFile is the authorization policy (YAML; see package policy's format
	// in testdata/policy.yaml).
	PolicyFile string
	// GuardrailsFile, if set, enables protected actions (vault-* job types)
	// within these guardrails (YAML; see package guardrail). Unset: refused.
	GuardrailsFile string

	// NATSURL is the NATS server URL (comma-separated list allowed); default
	// "nats://127.0.0.1:4222".
	NATSURL string
	// NATSCredsFile is a NATS credentials file (JWT and seed); optional.
	NATSCredsFile string
	// NATSCAFile is a PEM bundle of CAs trusted for the NATS server; optional.
	NATSCAFile string
	// NATSCertFile and NATSKeyFile are a client certificate for NATS; optional,
	// both or neither.
	NATSCertFile string
	NATSKeyFile  string

	// ReloadInterval is how often the certificate, CA and policy files are
	// checked for changes (modification time and size); default 2s.
	ReloadInterval time.Duration
	// MaxBodyBytes bounds request bodies; default 1 MiB.
	MaxBodyBytes int64
	// MaxWait caps GET /v1/jobs/{id}?wait=; default 60s.
	MaxWait time.Duration
	// Logger receives request and lifecycle logs; default discards.
	Logger *slog.Logger
	// Source is the CloudEvents source of published events; default "ciss-gateway".
	Source string

	// PublicKeyFiles are PEM files of the workers' signing public keys,
	// published at GET /v1/keys; AllowedSignersFile is the ssh allowed-signers
	// file for signed git tags, published there too. Both optional.
	PublicKeyFiles     []string
	AllowedSignersFile string

	// WebhookConfigFile is the webhook secret configuration (YAML; see
	// deploy/webhooks.example.yaml). Empty disables the webhook receivers.
	WebhookConfigFile string
	// WebhookAddr is the webhook receivers' listen address, default
	// "127.0.0.1:8444"; "-" disables them.
	WebhookAddr string
	// WebhookMaxBodyBytes bounds webhook bodies; default 1 MiB.
	WebhookMaxBodyBytes int64
	// LookupEnv resolves the webhook configuration's secret_env references
	// (cmd/ciss-gateway passes os.LookupEnv); nil resolves none.
	LookupEnv func(string) (string, bool)
}

// withDefaults fills zero fields and validates the result.
func (c Config) withDefaults() (Config, error) {
	if c.APIAddr == "" {
		c.APIAddr = DefaultAPIAddr
	}
	if c.AdminAddr == "" {
		c.AdminAddr = DefaultAdminAddr
	}
	if c.NATSURL == "" {
		c.NATSURL = DefaultNATSURL
	}
	if c.ReloadInterval == 0 {
		c.ReloadInterval = DefaultReloadInterval
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.Source == "" {
		c.Source = DefaultSource
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	for _, f := range []struct{ name, value string }{
		{"TLSCertFile", c.TLSCertFile}, {"TLSKeyFile", c.TLSKeyFile},
		{"ClientCAFile", c.ClientCAFile}, {"PolicyFile", c.PolicyFile},
	} {
		if f.value == "" {
			return c, &ConfigError{Field: f.name, Err: errRequired}
		}
	}
	for _, f := range []struct{ name, value string }{
		{"NATSCredsFile", c.NATSCredsFile}, {"NATSCAFile", c.NATSCAFile},
		{"NATSCertFile", c.NATSCertFile}, {"NATSKeyFile", c.NATSKeyFile},
	} {
		if f.value == "" {
			continue
		}
		if _, err := os.Stat(f.value); err != nil {
			return c, &ConfigError{Field: f.name, Err: err}
		}
	}
	switch {
	case c.NATSCertFile != "" && c.NATSKeyFile == "":
		return c, &ConfigError{Field: "NATSKeyFile", Err: errors.New("is required with NATSCertFile")}
	case c.NATSKeyFile != "" && c.NATSCertFile == "":
		return c, &ConfigError{Field: "NATSCertFile", Err: errors.New("is required with NATSKeyFile")}
	case c.ReloadInterval < 0:
		return c, &ConfigError{Field: "ReloadInterval", Err: errors.New("must not be negative")}
	case c.MaxBodyBytes < 0:
		return c, &ConfigError{Field: "MaxBodyBytes", Err: errors.New("must not be negative")}
	case c.MaxWait < 0:
		return c, &ConfigError{Field: "MaxWait", Err: errors.New("must not be negative")}
	case c.WebhookMaxBodyBytes < 0:
		return c, &ConfigError{Field: "WebhookMaxBodyBytes", Err: errors.New("must not be negative")}
	}
	if c.WebhookConfigFile != "" && c.WebhookAddr == "" {
		c.WebhookAddr = DefaultWebhookAddr
	}
	return c, nil
}

// Server timeouts. The API write timeout must outlast the longest long-poll.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
	writeTimeoutSlack = 30 * time.Second
)

// Gateway is one gateway instance. Create it with New, then Start and Stop it once.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	tls     *mtls.Reloader
	policy  *policy.File
	metrics *metrics.Metrics

	mu         sync.Mutex
	started    bool
	stopped    bool
	store      *jobstore.Store
	api        *api.Handler
	apiSrv     *http.Server
	adminSrv   *http.Server
	apiAddr    string
	adminAddr  string
	stopReload context.CancelFunc
	wg         sync.WaitGroup

	guardrails  *guardrail.File // nil when protected actions are refused
	webhooks    *webhook.File   // nil when the receivers are disabled
	webhookSrv  *http.Server
	webhookAddr string
}

// New validates cfg and loads the TLS material and the policy, so that a
// misconfiguration fails here rather than on the first request. It does not
// listen or connect.
func New(cfg Config) (*Gateway, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	tlsr, err := mtls.NewReloader(mtls.Files{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile, ClientCAFile: cfg.ClientCAFile})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	pol, err := policy.OpenFile(cfg.PolicyFile)
	if err != nil {
		return nil, &ConfigError{Field: "PolicyFile", Err: err}
	}
	g := &Gateway{
		cfg:         cfg,
		log:         cfg.Logger,
		tls:         tlsr,
		policy:      pol,
		metrics:     metrics.New(),
		apiAddr:     cfg.APIAddr,
		adminAddr:   cfg.AdminAddr,
		webhookAddr: cfg.WebhookAddr,
	}
	if err := g.openGuardrails(); err != nil {
		return nil, err
	}
	if err := g.openWebhooks(); err != nil {
		return nil, err
	}
	return g, nil
}

// Start listens on both addresses, connects to NATS and returns once both
// listeners are bound; serving, JetStream binding and file polling continue in
// the background until Stop. ctx only bounds the start itself. Start does not
// wait for NATS: /readyz reports when JetStream is usable.
func (g *Gateway) Start(ctx context.Context) (err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.started {
		return ErrAlreadyStarted
	}

	var lc net.ListenConfig
	apiLn, err := lc.Listen(ctx, "tcp", g.cfg.APIAddr)
	if err != nil {
		return &ConfigError{Field: "APIAddr", Err: err}
	}
	adminLn, err := lc.Listen(ctx, "tcp", g.cfg.AdminAddr)
	if err != nil {
		_ = apiLn.Close()
		return &ConfigError{Field: "AdminAddr", Err: err}
	}
	webhookLn, err := g.listenWebhooks(ctx, &lc)
	if err != nil {
		_ = apiLn.Close()
		_ = adminLn.Close()
		return err
	}
	g.store, err = jobstore.Open(jobstore.Config{
		URL:       g.cfg.NATSURL,
		CredsFile: g.cfg.NATSCredsFile,
		CAFile:    g.cfg.NATSCAFile,
		CertFile:  g.cfg.NATSCertFile,
		KeyFile:   g.cfg.NATSKeyFile,
		Name:      g.cfg.Source,
		Logger:    g.log.With("component", "jobstore"),
		Webhooks:  g.webhooks != nil,
	})
	if err != nil {
		_ = apiLn.Close()
		_ = adminLn.Close()
		closeListener(webhookLn)
		return fmt.Errorf("gateway: %w", err)
	}
	g.api, err = api.New(api.Config{
		Store:        g.store,
		Authorizer:   g.policy,
		Metrics:      g.metrics,
		Logger:       g.log.With("component", "api"),
		Source:       g.cfg.Source,
		MaxBodyBytes: g.cfg.MaxBodyBytes,
		MaxWait:      g.cfg.MaxWait,
		Guardrails:   g.guardrailsOrNil(),

		PublicKeyFiles:     g.cfg.PublicKeyFiles,
		AllowedSignersFile: g.cfg.AllowedSignersFile,
	})
	if err != nil { // Cannot happen: Store and Authorizer are set.
		g.store.Close()
		_ = apiLn.Close()
		_ = adminLn.Close()
		return fmt.Errorf("gateway: %w", err)
	}
	apiHandler, err := g.mountAPI()
	if err == nil {
		err = g.newWebhookServer(webhookLn)
	}
	if err != nil { // Cannot happen: Store and Authorizer are set.
		g.store.Close()
		_ = apiLn.Close()
		_ = adminLn.Close()
		closeListener(webhookLn)
		return fmt.Errorf("gateway: %w", err)
	}
	errLog := slog.NewLogLogger(g.log.Handler(), slog.LevelWarn)
	g.apiSrv = &http.Server{
		Handler:           apiHandler,
		TLSConfig:         g.tls.TLSConfig(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      g.cfg.MaxWait + writeTimeoutSlack,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errLog,
	}
	g.adminSrv = &http.Server{
		Handler:           g.adminHandler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errLog,
	}
	g.apiAddr, g.adminAddr = apiLn.Addr().String(), adminLn.Addr().String()
	g.wg.Go(func() { g.serve("api", func() error { return g.apiSrv.ServeTLS(apiLn, "", "") }) })
	g.wg.Go(func() { g.serve("admin", func() error { return g.adminSrv.Serve(adminLn) }) })
	if webhookLn != nil {
		g.webhookAddr = webhookLn.Addr().String()
		g.wg.Go(func() { g.serve("webhook", func() error { return g.webhookSrv.ServeTLS(webhookLn, "", "") }) })
	}
	rctx, cancel := context.WithCancel(context.Background())
	g.stopReload = cancel
	g.wg.Go(func() { g.watchFiles(rctx) })
	g.started = true
	g.log.Info("gateway started", "api", g.apiAddr, "admin", g.adminAddr, "webhook", g.webhookAddr, "nats", g.cfg.NATSURL)
	return nil
}

func (g *Gateway) serve(name string, serve func() error) {
	if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		g.log.Error("listener failed", "listener", name, "err", err)
	}
}

func (g *Gateway) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := g.store.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", g.metrics.Handler())
	return mux
}

// Stop shuts down gracefully: pending long-polls answer at once, the listeners
// close, in-flight requests finish until ctx is done (then connections are cut),
// and the NATS connection closes. Stop on a gateway that never started, or a
// second time, does nothing.
func (g *Gateway) Stop(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.started || g.stopped {
		return nil
	}
	g.stopped = true
	g.api.Drain()
	g.stopReload()
	var errs []error
	for _, srv := range []*http.Server{g.apiSrv, g.adminSrv, g.webhookSrv} {
		if srv == nil {
			continue
		}
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err, srv.Close())
		}
	}
	g.wg.Wait()
	g.store.Close()
	g.log.Info("gateway stopped")
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gateway: stop: %w", err)
	}
	return nil
}

// APIAddr returns the API listener's address: the bound one once started
// (useful with port 0), else the configured one.
func (g *Gateway) APIAddr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.apiAddr
}

// AdminAddr returns the admin listener's address, like APIAddr.
func (g *Gateway) AdminAddr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.adminAddr
}

// Reload re-reads the server certificate, the client CA bundle, the policy
// and the webhook configuration with its secrets now. Each part that fails to
// load keeps its previous version in force; the returned error joins the
// failures. New TLS material applies to new connections only.
func (g *Gateway) Reload() error {
	return errors.Join(g.reloadTLS(), g.reloadPolicy(), g.reloadWebhooks(), g.reloadGuardrails())
}

func (g *Gateway) reloadTLS() error {
	if err := g.tls.Reload(); err != nil {
		return fmt.Errorf("gateway: reload TLS: %w", err)
	}
	g.log.Info("TLS material reloaded", "cert", g.cfg.TLSCertFile, "client_ca", g.cfg.ClientCAFile)
	return nil
}

func (g *Gateway) reloadPolicy() error {
	if err := g.policy.Reload(); err != nil {
		return fmt.Errorf("gateway: reload policy: %w", err)
	}
	g.log.Info("policy reloaded", "file", g.cfg.PolicyFile, "bindings", len(g.policy.Policy().Bindings))
	return nil
}
