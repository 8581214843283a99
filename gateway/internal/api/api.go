// Package api serves the CISS job API (v1) to mutually authenticated clients.
//
// Every request is authenticated by its verified client certificate, mapped to
// a tenant and roles by the policy, routed, and answered either with JSON or
// with an RFC 9457 problem document. Jobs are keyed by tenant, so a job of
// another tenant is indistinguishable from a missing one (404).
//
// Submitting publishes the job-requested event to JetStream first and writes
// the job state to the KV bucket second. The answer is 202 only when JetStream
// acknowledged the event. If the state write then fails the job is still
// durable in the stream and the dispatcher creates the state when it takes the
// job, so a GET right after a 202 may briefly answer 404.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"ciss.dev/gateway/internal/jobstore"
	"ciss.dev/gateway/internal/metrics"
	"ciss.dev/gateway/internal/mtls"
	"ciss.dev/gateway/internal/policy"
	"ciss.dev/gateway/internal/problem"
	"ciss.dev/schemas"
	"github.com/google/uuid"
)

// Publisher puts events on NATS.
type Publisher interface {
	// Publish stores an event in the jobs stream, deduplicated by msgID, and
	// returns nil only once JetStream acknowledged it.
	Publish(ctx context.Context, subject, msgID string, data []byte) error
	// Notify publishes a core NATS message, best effort.
	Notify(subject string, data []byte) error
}

// States reads and swaps job state.
type States interface {
	Get(ctx context.Context, key string) (jobstore.Entry, error)
	Create(ctx context.Context, key string, job *schemas.Job) (uint64, error)
	Update(ctx context.Context, key string, job *schemas.Job, rev uint64) (uint64, error)
	Watch(ctx context.Context, key string) (<-chan jobstore.Entry, error)
	List(ctx context.Context, filter string) ([]jobstore.Entry, error)
}

// Reports opens stored report documents.
type Reports interface {
	OpenReport(ctx context.Context, name string) (jobstore.Object, error)
}

// Store is everything the API needs from JetStream.
type Store interface {
	Publisher
	States
	Reports
}

// Authorizer maps an identity to its policy binding.
type Authorizer interface {
	Match(id mtls.Identity) (*policy.Binding, bool)
}

var (
	_ Store      = (*jobstore.Store)(nil)
	_ Authorizer = (*policy.File)(nil)
)

// Config configures the handler. Store and Authorizer are required; every
// other zero value means the default.
type Config struct {
	// Store is the JetStream-backed job store.
	Store Store
	// Authorizer is the policy in force.
	Authorizer Authorizer
	// Metrics records requests; default a fresh, unexposed set.
	Metrics *metrics.Metrics
	// Logger gets one line per request; default discards.
	Logger *slog.Logger
	// Source is the CloudEvents source of published events; default "ciss-gateway".
	Source string
	// MaxBodyBytes bounds a request body; default 1 MiB.
	MaxBodyBytes int64
	// MaxWait caps the ?wait= long-poll duration; default 60s.
	MaxWait time.Duration
	// Guardrails decide protected actions (vault-* job types); nil refuses them.
	Guardrails Guardrails
	// PublicKeyFiles are PEM files of the public keys workers sign with,
	// published at GET /v1/keys; optional.
	PublicKeyFiles []string
	// AllowedSignersFile is an ssh allowed-signers file for signed git tags,
	// published at GET /v1/keys; optional.
	AllowedSignersFile string
}

// Defaults.
const (
	DefaultSource       = "ciss-gateway"
	DefaultMaxBodyBytes = 1 << 20
	DefaultMaxWait      = 60 * time.Second
)

// opTimeout bounds one JetStream operation done on the client's behalf.
const opTimeout = 5 * time.Second

// Handler serves API v1.
type Handler struct {
	cfg      Config
	mux      *http.ServeMux
	actions  map[string]policy.Action
	idemNS   uuid.UUID
	draining chan struct{}
	drain    sync.Once
}

var _ http.Handler = (*Handler)(nil)

type route struct {
	pattern string
	action  policy.Action
	handle  func(*Handler, http.ResponseWriter, *http.Request) error
}

func routeTable() []route {
	return []route{
		{"POST /v1/jobs", policy.ActionSubmit, (*Handler).submit},
		{"GET /v1/jobs", policy.ActionRead, (*Handler).list},
		{"GET /v1/jobs/{id}", policy.ActionRead, (*Handler).get},
		{"DELETE /v1/jobs/{id}", policy.ActionSubmit, (*Handler).cancel},
		{"POST /v1/jobs/{id}/approve", policy.ActionApprove, (*Handler).approve},
		{"GET /v1/jobs/{id}/result", policy.ActionRead, (*Handler).result},
		{"GET /v1/audit/webhooks", policy.ActionAudit, (*Handler).auditWebhooks},
		{"GET /v1/trials", policy.ActionAudit, (*Handler).listTrials},
		{"GET /v1/trials/{name}", policy.ActionAudit, (*Handler).getTrial},
		{"GET /v1/keys", policy.ActionRead, (*Handler).keys},
		{"GET /v1/provenance", policy.ActionRead, (*Handler).provenance},
	}
}

// Routes lists the served route patterns ("METHOD /path", in net/http ServeMux
// syntax), so documentation can be checked against them.
func Routes() []string {
	var out []string
	for _, r := range routeTable() {
		out = append(out, r.pattern)
	}
	return out
}

// New validates cfg and builds the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("api: Config.Store is required")
	}
	if cfg.Authorizer == nil {
		return nil, errors.New("api: Config.Authorizer is required")
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Source == "" {
		cfg.Source = DefaultSource
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	h := &Handler{
		cfg:     cfg,
		mux:     http.NewServeMux(),
		actions: make(map[string]policy.Action),
		// Never change this name: job ids of idempotent requests derive from it,
		// and a retry across an upgrade must land on the same job.
		idemNS:   uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://ciss.dev/ns/idempotency-key")),
		draining: make(chan struct{}),
	}
	for _, rt := range routeTable() {
		h.actions[rt.pattern] = rt.action
		h.mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := rt.handle(h, w, r); err != nil {
				callOf(r.Context()).err = err
				h.writeError(w, err)
			}
		})
	}
	return h, nil
}

// Drain makes pending long-polls answer now with the job as it is, so a
// graceful shutdown does not wait for them. Call it before http.Server.Shutdown.
func (h *Handler) Drain() { h.drain.Do(func() { close(h.draining) }) }

// call is the per-request record: who called, and what went wrong.
type call struct {
	id      mtls.Identity
	binding *policy.Binding
	err     error
}

type callKey struct{}

func callOf(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	if c == nil { // only when a handler is invoked outside ServeHTTP
		return &call{binding: &policy.Binding{}}
	}
	return c
}

// ServeHTTP authenticates, authorizes, routes and logs one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	c := &call{}
	_, pattern := h.mux.Handler(r)
	routeLabel := pattern
	action, known := h.actions[pattern]
	if !known {
		routeLabel = "unmatched"
	}
	defer func() {
		d := time.Since(start)
		h.cfg.Metrics.ObserveRequest(routeLabel, sw.code(), d)
		level := slog.LevelInfo
		if sw.code() >= 500 {
			level = slog.LevelError
		}
		attrs := []slog.Attr{
			slog.String("method", r.Method), slog.String("route", routeLabel), slog.String("path", r.URL.Path),
			slog.Int("status", sw.code()), slog.Duration("duration", d), slog.String("remote", r.RemoteAddr),
		}
		if c.id.String() != "" {
			attrs = append(attrs, slog.String("identity", c.id.String()))
		}
		if c.binding != nil {
			attrs = append(attrs, slog.String("binding", c.binding.Name), slog.String("tenant", c.binding.Tenant))
		}
		if c.err != nil {
			attrs = append(attrs, slog.String("err", c.err.Error()))
		}
		h.cfg.Logger.LogAttrs(r.Context(), level, "request", attrs...)
	}()

	fail := func(err error) {
		c.err = err
		h.writeError(sw, err)
	}
	id, err := mtls.PeerIdentity(r.TLS)
	if err != nil {
		fail(err)
		return
	}
	c.id = id
	b, ok := h.cfg.Authorizer.Match(id)
	if !ok {
		fail(ErrNoBinding)
		return
	}
	c.binding = b
	if pattern == "" {
		fail(h.unrouted(r))
		return
	}
	if known && !b.Can(action) {
		fail(&ForbiddenError{Binding: b.Name, Action: action})
		return
	}
	h.mux.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
}

// unrouted tells 404 from 405 the way ServeMux does, by running its fallback
// handler into a recorder, and returns the error to report.
func (h *Handler) unrouted(r *http.Request) error {
	fallback, _ := h.mux.Handler(r)
	rec := &headerRecorder{header: http.Header{}}
	fallback.ServeHTTP(rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		return &MethodNotAllowedError{Allow: rec.header.Get("Allow")}
	}
	return ErrRouteNotFound
}

func (h *Handler) writeError(w http.ResponseWriter, err error) {
	p := toProblem(err)
	if p.Status == http.StatusServiceUnavailable {
		h.cfg.Metrics.NATSUnavailable()
	}
	problem.Write(w, p)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", schemas.MediaTypeJSON)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b) // The client may be gone; nothing useful to do about it.
	return nil
}

// statusWriter remembers the status code for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader implements http.ResponseWriter.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// headerRecorder captures the headers and status of ServeMux's fallback handler.
type headerRecorder struct {
	header http.Header
	status int
}

// Header implements http.ResponseWriter.
func (r *headerRecorder) Header() http.Header { return r.header }

// Write implements http.ResponseWriter.
func (r *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }

// WriteHeader implements http.ResponseWriter.
func (r *headerRecorder) WriteHeader(code int) { r.status = code }
