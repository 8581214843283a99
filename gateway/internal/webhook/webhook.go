// Package webhook receives git webhooks from GitHub and GitLab and stores the
// verified events in JetStream for the dispatcher to turn into jobs.
//
// Git hosts cannot present client certificates, so the receivers live on
// their own listener (server TLS only) and authenticate each request by the
// host's own mechanism: GitHub's X-Hub-Signature-256 (HMAC-SHA256 of the raw
// body) or GitLab's X-Gitlab-Token, both compared in constant time, with the
// secret configured for the repository, else its owner or group, else the
// provider's default (see File).
//
// A request is handled in this order, and answered as soon as its fate is
// known, well inside GitHub's 10-second budget:
//
//  1. the body is read up to Config.MaxBodyBytes (413 beyond);
//  2. the repository the body claims is looked up, only to choose the secret,
//     and the signature or token is verified (401 when missing or wrong);
//  3. the payload is parsed: malformed JSON is 400; a ping is answered 200; an
//     event or action CISS does not act on is answered 202 "ignored";
//  4. a delivery id seen before (BucketWebhookDeliveries, kept longer than
//     the hosts' redelivery windows) is answered 202 "duplicate";
//  5. the event is published to StreamWebhooks with the delivery key as
//     Nats-Msg-Id and, once JetStream acknowledged it, the delivery is
//     recorded and the answer is 202 "accepted". If it cannot be stored the
//     answer is 503 with Retry-After and nothing is recorded, so the host's
//     redelivery is accepted later.
//
// Every request, whatever its verdict, leaves an audit record in StreamAudit
// (asynchronously: auditing never delays the answer). Secrets, signatures,
// tokens and bodies never reach logs or audit records.
package webhook

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"ciss.dev/gateway/internal/problem"
	"ciss.dev/schemas"
)

// Receiver paths.
const (
	PathGitHub = "/v1/webhooks/github"
	PathGitLab = "/v1/webhooks/gitlab"
)

// Defaults for zero Config fields.
const (
	DefaultMaxBodyBytes = 1 << 20
	// DefaultTimeout bounds the JetStream work of one request, under GitHub's
	// 10-second delivery timeout.
	DefaultTimeout = 8 * time.Second
	DefaultSource  = "ciss-gateway"
)

// maxDeliveryIDLen bounds delivery id headers (GitHub and GitLab send UUIDs).
const maxDeliveryIDLen = 128

// Store is the JetStream side of the receiver.
type Store interface {
	// Delivered reports whether a delivery key was recorded.
	Delivered(ctx context.Context, key string) (bool, error)
	// PublishWebhook stores an event in StreamWebhooks with msgID as its
	// Nats-Msg-Id and returns once JetStream acknowledged it; duplicate is
	// true when the stream already had that message id.
	PublishWebhook(ctx context.Context, subject, msgID string, data []byte) (duplicate bool, err error)
	// MarkDelivered records a delivery key; created is false when it existed.
	MarkDelivered(ctx context.Context, key string, value []byte) (created bool, err error)
	// Audit stores an audit record in StreamAudit without waiting for the
	// acknowledgement; failures are the store's to log.
	Audit(subject string, data []byte) error
}

// SecretSource returns the webhook secrets in force.
type SecretSource interface {
	Secrets() *Secrets
}

// Observer records request outcomes, e.g. as metrics.
type Observer interface {
	ObserveWebhook(provider, verdict string, code int, d time.Duration)
}

var _ SecretSource = (*File)(nil)

// Config configures a Handler. Secrets, Store and Problem are required; every
// other zero value means the default.
type Config struct {
	// Secrets are the webhook secrets (normally a reloadable *File).
	Secrets SecretSource
	// Store is the JetStream-backed store.
	Store Store
	// Problem maps an error to its problem document: the gateway's single
	// error-to-status mapping.
	Problem func(error) problem.Problem
	// Observer records outcomes; optional.
	Observer Observer
	// Logger gets one line per request; default discards.
	Logger *slog.Logger
	// Source is the CloudEvents source of stored events; default "ciss-gateway".
	Source string
	// MaxBodyBytes bounds a request body; default 1 MiB.
	MaxBodyBytes int64
	// Timeout bounds the storing of one event; default 8s.
	Timeout time.Duration
}

// Handler serves the webhook receivers.
type Handler struct {
	cfg Config
}

var _ http.Handler = (*Handler)(nil)

// New validates cfg and returns the handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Secrets == nil:
		return nil, errors.New("webhook: Config.Secrets is required")
	case cfg.Store == nil:
		return nil, errors.New("webhook: Config.Store is required")
	case cfg.Problem == nil:
		return nil, errors.New("webhook: Config.Problem is required")
	case cfg.MaxBodyBytes < 0 || cfg.Timeout < 0:
		return nil, errors.New("webhook: Config.MaxBodyBytes and Config.Timeout must not be negative")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Source = cmp.Or(cfg.Source, DefaultSource)
	cfg.MaxBodyBytes = cmp.Or(cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTimeout)
	return &Handler{cfg: cfg}, nil
}

// Ack is the body of a successful answer.
type Ack struct {
	// Status is the verdict: accepted, duplicate or ignored.
	Status schemas.WebhookVerdict `json:"status"`
	// DeliveryID echoes the delivery id, when there was one.
	DeliveryID string `json:"delivery_id,omitempty"`
	// Reason says why a request was ignored or is a duplicate.
	Reason string `json:"reason,omitempty"`
}

// outcome is a request's fate when it is not an error.
type outcome struct {
	status  int
	verdict schemas.WebhookVerdict
	reason  string
}

// ServeHTTP routes to the GitHub or GitLab receiver.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var p schemas.GitProvider
	switch r.URL.Path {
	case PathGitHub:
		p = schemas.ProviderGitHub
	case PathGitLab:
		p = schemas.ProviderGitLab
	default:
		problem.Write(w, h.cfg.Problem(ErrRouteNotFound))
		return
	}
	if r.Method != http.MethodPost {
		problem.Write(w, h.cfg.Problem(ErrMethodNotAllowed))
		return
	}
	h.serve(w, r, p)
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, p schemas.GitProvider) {
	start := time.Now()
	rec := schemas.WebhookAudit{
		Provider: p, RemoteAddr: bound(r.RemoteAddr), ReceivedAt: start.UTC(), Headers: auditHeaders(r.Header),
	}
	// Detached from the client: a host hanging up must not abort a store half way.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), h.cfg.Timeout)
	defer cancel()
	var scope string
	out, err := h.receive(ctx, w, r, p, &rec, &scope)
	if err != nil {
		prob := h.cfg.Problem(err)
		rec.Status, rec.Reason = prob.Status, bound(err.Error())
		rec.Verdict = schemas.VerdictRejected
		if prob.Status >= 500 {
			rec.Verdict = schemas.VerdictUnavailable
		}
		problem.Write(w, prob)
	} else {
		rec.Status, rec.Verdict, rec.Reason = out.status, out.verdict, bound(out.reason)
		writeAck(w, out.status, Ack{Status: out.verdict, DeliveryID: rec.DeliveryID, Reason: out.reason})
	}
	d := time.Since(start)
	h.audit(rec)
	if h.cfg.Observer != nil {
		h.cfg.Observer.ObserveWebhook(string(p), string(rec.Verdict), rec.Status, d)
	}
	level := slog.LevelInfo
	switch rec.Verdict {
	case schemas.VerdictRejected:
		level = slog.LevelWarn
	case schemas.VerdictUnavailable:
		level = slog.LevelError
	}
	attrs := []slog.Attr{
		slog.String("provider", string(p)), slog.String("verdict", string(rec.Verdict)), slog.Int("status", rec.Status),
		slog.String("delivery", rec.DeliveryID), slog.String("event", rec.HostEvent), slog.String("repo", rec.Repo),
		slog.Bool("verified", rec.Verified), slog.String("remote", rec.RemoteAddr), slog.Duration("duration", d),
	}
	if scope != "" {
		attrs = append(attrs, slog.String("secret_scope", scope))
	}
	if rec.Reason != "" {
		attrs = append(attrs, slog.String("reason", rec.Reason))
	}
	h.cfg.Logger.LogAttrs(r.Context(), level, "webhook", attrs...)
}

// receive does the work of one request and fills rec as it learns things.
func (h *Handler) receive(ctx context.Context, w http.ResponseWriter, r *http.Request, p schemas.GitProvider, rec *schemas.WebhookAudit, scope *string) (outcome, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	rec.BodySize = int64(len(body))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return outcome{}, err
		}
		return outcome{}, &PayloadError{Err: fmt.Errorf("read body: %w", err)}
	}
	sum := sha256.Sum256(body)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	rec.PayloadDigest = digest

	eventHeader, deliveryHeader := "X-GitHub-Event", "X-GitHub-Delivery"
	if p == schemas.ProviderGitLab {
		eventHeader, deliveryHeader = "X-Gitlab-Event", "X-Gitlab-Event-UUID"
		if r.Header.Get("Idempotency-Key") != "" {
			deliveryHeader = "Idempotency-Key"
		}
	}
	event, delivery := r.Header.Get(eventHeader), r.Header.Get(deliveryHeader)
	rec.HostEvent, rec.DeliveryID = bound(event), bound(delivery)

	// Authenticate. The claimed repository only chooses the secret; nothing
	// else is taken from the body before the signature is verified.
	var claimedRepo, org, sender string
	if p == schemas.ProviderGitHub {
		claimedRepo, org, sender = claimGitHub(body)
	} else {
		claimedRepo, sender = claimGitLab(body)
	}
	rec.Repo, rec.Sender = bound(claimedRepo), bound(sender)
	secret, sc, ok := h.cfg.Secrets.Secrets().Lookup(p, claimedRepo, org)
	if !ok {
		return outcome{}, &AuthError{Reason: "no secret configured for this repository, its owner or the provider"}
	}
	*scope = sc
	if p == schemas.ProviderGitHub {
		err = VerifyGitHub(secret, r.Header, body)
	} else {
		err = VerifyGitLab(secret, r.Header)
	}
	if err != nil {
		return outcome{}, err
	}
	rec.Verified = true

	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != schemas.MediaTypeJSON {
		return outcome{}, ErrUnsupportedMediaType
	}
	if event == "" || !safeText(event, 64) {
		return outcome{}, &HeaderError{Name: eventHeader, Reason: "is required: at most 64 printable characters"}
	}
	if err := checkDeliveryID(delivery); err != nil {
		return outcome{}, &HeaderError{Name: deliveryHeader, Reason: err.Error()}
	}
	var parsed Parsed
	if p == schemas.ProviderGitHub {
		parsed, err = ParseGitHub(event, body)
	} else {
		parsed, err = ParseGitLab(event, body)
	}
	if err != nil {
		return outcome{}, err
	}
	rec.Repo, rec.Sender = bound(parsed.Repo), bound(parsed.Sender)
	switch {
	case parsed.Ping:
		return outcome{status: http.StatusOK, verdict: schemas.VerdictIgnored, reason: "ping"}, nil
	case parsed.Event == nil:
		return outcome{status: http.StatusAccepted, verdict: schemas.VerdictIgnored, reason: parsed.Ignored}, nil
	}
	ev := parsed.Event
	rec.Event = ev.Event
	ev.DeliveryID, ev.ReceivedAt, ev.PayloadDigest, ev.PayloadSize = delivery, rec.ReceivedAt, digest, len(body)
	return h.store(ctx, p, ev, body)
}

// store records a verified event exactly once per delivery.
func (h *Handler) store(ctx context.Context, p schemas.GitProvider, ev *schemas.WebhookEvent, body []byte) (outcome, error) {
	key := schemas.WebhookDeliveryKey(p, ev.DeliveryID)
	seen, err := h.cfg.Store.Delivered(ctx, key)
	if err != nil {
		return outcome{}, err
	}
	if seen {
		return outcome{status: http.StatusAccepted, verdict: schemas.VerdictDuplicate, reason: "delivery already received"}, nil
	}
	ev.Payload = body
	data, err := schemas.Marshal(schemas.TypeWebhookReceived, h.cfg.Source, ev.Repo, ev)
	if errors.Is(err, schemas.ErrEventTooLarge) {
		// Everything CISS acts on is in the normalised fields.
		ev.Payload = nil
		data, err = schemas.Marshal(schemas.TypeWebhookReceived, h.cfg.Source, ev.Repo, ev)
	}
	if err != nil {
		return outcome{}, fmt.Errorf("encode webhook event: %w", err)
	}
	dup, err := h.cfg.Store.PublishWebhook(ctx, schemas.SubjectWebhook(p), key, data)
	if err != nil {
		return outcome{}, err
	}
	// Recorded only now that the event is durable: a delivery whose store
	// failed stays unrecorded, so the host's redelivery is taken.
	created, err := h.cfg.Store.MarkDelivered(ctx, key, []byte(ev.ReceivedAt.Format(time.RFC3339Nano)))
	switch {
	case err != nil:
		// The event is durable; a redelivery beyond JetStream's duplicate
		// window would be stored again, and the dispatcher's deterministic job
		// ids keep it from creating jobs twice.
		h.cfg.Logger.Warn("webhook stored but delivery not recorded", "provider", p, "delivery", ev.DeliveryID, "err", err)
	case !created || dup:
		return outcome{status: http.StatusAccepted, verdict: schemas.VerdictDuplicate, reason: "delivery already received"}, nil
	}
	return outcome{status: http.StatusAccepted, verdict: schemas.VerdictAccepted}, nil
}

func (h *Handler) audit(rec schemas.WebhookAudit) {
	b, err := schemas.Marshal(schemas.TypeWebhookAudited, h.cfg.Source, rec.DeliveryID, rec)
	if err == nil {
		err = h.cfg.Store.Audit(schemas.SubjectAuditWebhook(rec.Provider, rec.Verdict), b)
	}
	if err != nil {
		h.cfg.Logger.Warn("webhook audit record lost", "provider", rec.Provider, "delivery", rec.DeliveryID, "verdict", rec.Verdict, "err", err)
	}
}

// checkDeliveryID requires 1 to maxDeliveryIDLen printable ASCII characters
// without spaces.
func checkDeliveryID(s string) error {
	if s == "" || len(s) > maxDeliveryIDLen {
		return fmt.Errorf("is required: 1 to %d printable ASCII characters", maxDeliveryIDLen)
	}
	for i := range len(s) {
		if s[i] <= ' ' || s[i] > '~' {
			return fmt.Errorf("must be printable ASCII without spaces")
		}
	}
	return nil
}

// auditedHeaders are the request headers copied into audit records. The
// signature and token headers are deliberately absent.
var auditedHeaders = []string{
	"Content-Type", "Content-Length", "User-Agent", "X-Forwarded-For",
	"X-GitHub-Event", "X-GitHub-Delivery", "X-GitHub-Hook-ID",
	"X-GitHub-Hook-Installation-Target-Type", "X-GitHub-Hook-Installation-Target-ID",
	"X-Gitlab-Event", "X-Gitlab-Event-UUID", "X-Gitlab-Webhook-UUID", "X-Gitlab-Instance", "Idempotency-Key",
}

func auditHeaders(hdr http.Header) map[string]string {
	out := map[string]string{}
	for _, k := range auditedHeaders {
		if v := hdr.Values(k); len(v) > 0 {
			out[k] = bound(strings.Join(v, ", "))
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// bound makes untrusted text safe and small for an audit record or a log:
// valid UTF-8, control and format characters replaced, cut to
// schemas.MaxAuditValue bytes on a character boundary.
func bound(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return '\uFFFD'
		}
		return r
	}, s)
	if len(s) <= schemas.MaxAuditValue {
		return s
	}
	n := schemas.MaxAuditValue
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func writeAck(w http.ResponseWriter, status int, a Ack) {
	b, _ := json.Marshal(a) // An Ack always encodes.
	w.Header().Set("Content-Type", schemas.MediaTypeJSON)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b) // The host may be gone; nothing useful to do about it.
}
