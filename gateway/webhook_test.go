package gateway_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"ciss.dev/gateway"
	"ciss.dev/gateway/internal/api"
	"ciss.dev/schemas"
)

const (
	webhookSecret    = "dev-webhook-secret-0123456789abcdef" // the default for both providers
	webhookRepoToken = "payments-only-secret-fedcba9876543210"
)

// whEnv is a gateway with the webhook receivers on, its topology, and a log
// capture to check that no secret is ever written.
type whEnv struct {
	*env
	base      string // https://host:port of the webhook listener
	hc        *http.Client
	logs      *syncBuffer
	secretDir string
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// teeHandler writes every record to two handlers.
type teeHandler struct{ a, b slog.Handler }

func (h teeHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	_ = h.a.Handle(ctx, r.Clone())
	return h.b.Handle(ctx, r)
}
func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{h.a.WithAttrs(as), h.b.WithAttrs(as)}
}
func (h teeHandler) WithGroup(n string) slog.Handler {
	return teeHandler{h.a.WithGroup(n), h.b.WithGroup(n)}
}

func setupWebhooks(t *testing.T, maxBody int64) *whEnv {
	t.Helper()
	w := &whEnv{logs: &syncBuffer{}, secretDir: t.TempDir()}
	writeFile(t, filepath.Join(w.secretDir, "default"), webhookSecret+"\n")
	cfgFile := filepath.Join(w.secretDir, "webhooks.yaml")
	writeFile(t, cfgFile, fmt.Sprintf(`version: 1
github:
  default: {secret_file: %[1]s/default}
  repos:
    acme/payments-api: {secret_env: CISS_TEST_REPO_SECRET}
gitlab:
  default: {secret_file: %[1]s/default}
`, w.secretDir))
	w.env = setup(t, setupOpt{noWait: true, config: func(c *gateway.Config) {
		c.WebhookConfigFile = cfgFile
		c.WebhookAddr = "127.0.0.1:0"
		c.WebhookMaxBodyBytes = maxBody
		c.ReloadInterval = time.Hour // reloads are explicit
		c.LookupEnv = func(k string) (string, bool) {
			if k == "CISS_TEST_REPO_SECRET" {
				return webhookRepoToken, true
			}
			return "", false
		}
		c.Logger = slog.New(teeHandler{c.Logger.Handler(), slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})})
	}})
	createWebhookTopology(t, w.js)
	w.waitReady(true)
	w.base = "https://" + w.gw.WebhookAddr()
	// A git host: trusts the server certificate, has no client certificate.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: w.ca.Pool(), MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	w.hc = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	t.Cleanup(func() {
		out := w.logs.String()
		for _, s := range []string{webhookSecret, webhookRepoToken} {
			require.NotContains(t, out, s, "a webhook secret reached the log")
		}
	})
	return w
}

// createWebhookTopology creates what the dispatcher's topology would.
func createWebhookTopology(t testing.TB, h *jsHandles) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, subj := range map[string]string{schemas.StreamWebhooks: "ciss.webhooks.>", schemas.StreamAudit: "ciss.audit.>"} {
		_, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, Storage: jetstream.FileStorage,
			Duplicates: 10 * time.Minute, MaxMsgSize: schemas.MaxEventSize})
		require.NoError(t, err)
	}
	_, err := h.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketWebhookDeliveries, TTL: 96 * time.Hour})
	require.NoError(t, err)
}

func signGitHub(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("internal", "webhook", "testdata", name))
	require.NoError(t, err)
	return b
}

// post sends a webhook; hdr is name, value pairs.
func (w *whEnv) post(path string, body []byte, hdr ...string) *response {
	w.t.Helper()
	req, err := http.NewRequest(http.MethodPost, w.base+path, bytes.NewReader(body))
	require.NoError(w.t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/5fa4a5f")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := w.hc.Do(req)
	require.NoError(w.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(w.t, err)
	return &response{Response: resp, body: b}
}

// github posts a GitHub delivery signed with secret.
func (w *whEnv) github(event, delivery string, body []byte, secret string, hdr ...string) *response {
	w.t.Helper()
	return w.post("/v1/webhooks/github", body, append([]string{
		"X-GitHub-Event", event, "X-GitHub-Delivery", delivery, "X-Hub-Signature-256", signGitHub(secret, body),
		"X-GitHub-Hook-ID", "519838746",
	}, hdr...)...)
}

func (r *response) ack(t testing.TB, status int, verdict schemas.WebhookVerdict) {
	t.Helper()
	require.Equal(t, status, r.StatusCode, "%s", r.body)
	var a struct {
		Status     schemas.WebhookVerdict `json:"status"`
		DeliveryID string                 `json:"delivery_id"`
		Reason     string                 `json:"reason"`
	}
	require.NoError(t, json.Unmarshal(r.body, &a))
	require.Equal(t, verdict, a.Status, "%s", r.body)
}

// stored returns the events in the webhook stream.
func (w *whEnv) stored() []schemas.WebhookEvent {
	w.t.Helper()
	return readStream[schemas.WebhookEvent](w.t, w.js, schemas.StreamWebhooks, "ciss.webhooks.>", schemas.TypeWebhookReceived)
}

// audited returns the audit records, waiting until there are at least n
// (they are published asynchronously).
func (w *whEnv) audited(n int) []schemas.WebhookAudit {
	w.t.Helper()
	var recs []schemas.WebhookAudit
	eventually(w.t, 10*time.Second, fmt.Sprintf("%d audit records", n), func() bool {
		recs = readStream[schemas.WebhookAudit](w.t, w.js, schemas.StreamAudit, "ciss.audit.>", schemas.TypeWebhookAudited)
		return len(recs) >= n
	})
	return recs
}

func readStream[T any](t testing.TB, h *jsHandles, stream, filter, typ string) []T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, stream)
	require.NoError(t, err)
	var out []T
	last := st.CachedInfo().State.LastSeq
	for seq := uint64(1); seq <= last; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if err != nil {
			break
		}
		var v T
		_, err = schemas.Unmarshal(m.Data, typ, &v)
		require.NoError(t, err)
		out = append(out, v)
		seq = m.Sequence + 1
	}
	return out
}

func TestWebhookGitHubPush(t *testing.T) {
	t.Parallel()
	w := setupWebhooks(t, 0)
	body := readFixture(t, "github-push.json")

	w.github("push", "72d3162e-cc78-11e3-81ab-4c9367dc0958", body, webhookRepoToken).ack(t, http.StatusAccepted, schemas.VerdictAccepted)
	evs := w.stored()
	require.Len(t, evs, 1)
	ev := evs[0]
	require.Equal(t, schemas.ProviderGitHub, ev.Provider)
	require.Equal(t, "72d3162e-cc78-11e3-81ab-4c9367dc0958", ev.DeliveryID)
	require.Equal(t, schemas.GitEventPush, ev.Event)
	require.Equal(t, "acme/payments-api", ev.Repo)
	require.Equal(t, "github.com", ev.Host)
	require.Equal(t, "refs/heads/main", ev.Ref)
	require.Equal(t, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", ev.Commit)
	require.Equal(t, "octocat", ev.Sender)
	require.Equal(t, len(body), ev.PayloadSize)
	sum := sha256.Sum256(body)
	require.Equal(t, "sha256:"+hex.EncodeToString(sum[:]), ev.PayloadDigest)
	require.JSONEq(t, string(body), string(ev.Payload), "the payload is kept as received")

	t.Run("a redelivery is a duplicate and stores nothing", func(t *testing.T) {
		w.github("push", "72d3162e-cc78-11e3-81ab-4c9367dc0958", body, webhookRepoToken).ack(t, http.StatusAccepted, schemas.VerdictDuplicate)
		require.Len(t, w.stored(), 1)
	})
	t.Run("the repository's own secret wins over the default", func(t *testing.T) {
		r := w.github("push", "second-delivery", body, webhookSecret)
		r.problem(t, http.StatusUnauthorized, "webhook-unauthenticated")
		require.Len(t, w.stored(), 1)
	})
	t.Run("another repository uses the default secret", func(t *testing.T) {
		other := bytes.ReplaceAll(body, []byte("acme/payments-api"), []byte("acme/web"))
		w.github("push", "third-delivery", other, webhookSecret).ack(t, http.StatusAccepted, schemas.VerdictAccepted)
		require.Len(t, w.stored(), 2)
	})
	t.Run("a pull request and a tag", func(t *testing.T) {
		pr := bytes.ReplaceAll(readFixture(t, "github-pull_request.json"), []byte("acme/payments-api"), []byte("acme/web"))
		w.github("pull_request", "pr-delivery", pr, webhookSecret).ack(t, http.StatusAccepted, schemas.VerdictAccepted)
		w.github("push", "tag-delivery", readFixture(t, "github-push-tag.json"), webhookRepoToken).ack(t, http.StatusAccepted, schemas.VerdictAccepted)
		evs := w.stored()
		require.Len(t, evs, 4)
		require.Equal(t, schemas.GitEventPullRequest, evs[2].Event)
		require.Equal(t, 42, evs[2].Number)
		require.Equal(t, "refs/heads/main", evs[2].BaseRef)
		require.Equal(t, schemas.GitEventTagPush, evs[3].Event)
	})
	t.Run("ping and other events are answered without storing", func(t *testing.T) {
		w.github("ping", "ping-delivery", readFixture(t, "github-ping.json"), webhookRepoToken).ack(t, http.StatusOK, schemas.VerdictIgnored)
		w.github("issues", "issues-delivery", []byte(`{"action":"opened","sender":{"login":"x"}}`), webhookSecret).ack(t, http.StatusAccepted, schemas.VerdictIgnored)
		closed := bytes.Replace(readFixture(t, "github-pull_request.json"), []byte(`"action": "synchronize"`), []byte(`"action": "closed"`), 1)
		w.github("pull_request", "closed-delivery", closed, webhookRepoToken).ack(t, http.StatusAccepted, schemas.VerdictIgnored)
		require.Len(t, w.stored(), 4)
	})
	recs := w.audited(9)
	verdicts := map[schemas.WebhookVerdict]int{}
	for _, r := range recs {
		verdicts[r.Verdict]++
		require.Equal(t, schemas.ProviderGitHub, r.Provider)
		require.NotContains(t, r.Headers, "X-Hub-Signature-256")
		require.Equal(t, "GitHub-Hookshot/5fa4a5f", r.Headers["User-Agent"])
		require.NotEmpty(t, r.RemoteAddr)
	}
	require.Equal(t, map[schemas.WebhookVerdict]int{schemas.VerdictAccepted: 4, schemas.VerdictDuplicate: 1, schemas.VerdictRejected: 1, schemas.VerdictIgnored: 3}, verdicts)
	require.True(t, recs[0].Verified)
	require.Equal(t, schemas.GitEventPush, recs[0].Event)
	require.Equal(t, "acme/payments-api", recs[0].Repo)
}

// TestWebhookRejects sends hostile requests: each gets its problem document,
// stores nothing, and leaves a rejected audit record with the reason.
func TestWebhookRejects(t *testing.T) {
	t.Parallel()
	w := setupWebhooks(t, 16<<10)
	body := bytes.ReplaceAll(readFixture(t, "github-push.json"), []byte("acme/payments-api"), []byte("acme/web"))
	sig := signGitHub(webhookSecret, body)
	other := bytes.Replace(body, []byte(`"refs/heads/main"`), []byte(`"refs/heads/evil"`), 1)
	big := append(bytes.Repeat([]byte(" "), 16<<10), body...)
	for _, tc := range []struct {
		what   string
		body   []byte
		hdr    []string
		status int
		slug   string
		reason string
	}{
		{"no signature", body, []string{"X-Hub-Signature-256", ""}, 401, "webhook-unauthenticated", "header missing"},
		{"wrong secret", body, []string{"X-Hub-Signature-256", signGitHub("not-the-secret-0123456789abcdef", body)}, 401, "webhook-unauthenticated", "signature mismatch"},
		{"truncated signature", body, []string{"X-Hub-Signature-256", sig[:len(sig)-8]}, 401, "webhook-unauthenticated", "64 hex digits"},
		{"sha1= instead of sha256=", body, []string{"X-Hub-Signature-256", "sha1=" + strings.Repeat("0", 40)}, 401, "webhook-unauthenticated", "sha256=<hex>"},
		{"legacy sha1 header only", body, []string{"X-Hub-Signature-256", "", "X-Hub-Signature", "sha1=" + strings.Repeat("0", 40)}, 401, "webhook-unauthenticated", "SHA-1"},
		{"signature over a different body", other, []string{"X-Hub-Signature-256", sig}, 401, "webhook-unauthenticated", "signature mismatch"},
		{"over the size limit", big, []string{"X-Hub-Signature-256", signGitHub(webhookSecret, big)}, 413, "payload-too-large", "too large"},
		{"malformed JSON", []byte(`{"ref":`), []string{"X-Hub-Signature-256", signGitHub(webhookSecret, []byte(`{"ref":`))}, 400, "malformed-payload", "unexpected EOF"},
		{"duplicate keys", []byte(`{"ref":"a","ref":"b"}`), []string{"X-Hub-Signature-256", signGitHub(webhookSecret, []byte(`{"ref":"a","ref":"b"}`))}, 400, "malformed-payload", "duplicate"},
		{"form encoded", body, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "unsupported-media-type", "Content-Type"},
		{"no delivery id", body, []string{"X-GitHub-Delivery", ""}, 400, "invalid-header", "X-Github-Delivery"},
		{"no event", body, []string{"X-GitHub-Event", ""}, 400, "invalid-header", "X-Github-Event"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			hdr := append([]string{"X-GitHub-Event", "push", "X-GitHub-Delivery", "d-" + strings.ReplaceAll(tc.what, " ", "-"), "X-Hub-Signature-256", sig}, tc.hdr...)
			r := w.post("/v1/webhooks/github", tc.body, hdr...)
			p := r.problem(t, tc.status, tc.slug)
			require.NotContains(t, p.Detail, webhookSecret)
		})
	}
	w.post("/v1/webhooks/bitbucket", body).problem(t, http.StatusNotFound, "not-found")
	req, err := http.NewRequest(http.MethodGet, w.base+"/v1/webhooks/github", nil)
	require.NoError(t, err)
	resp, err := w.hc.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "POST", resp.Header.Get("Allow"))

	require.Empty(t, w.stored(), "no rejected request may be stored")
	recs := w.audited(12)
	require.Len(t, recs, 12)
	for _, r := range recs {
		require.Equal(t, schemas.VerdictRejected, r.Verdict, "%+v", r)
		require.NotEmpty(t, r.Reason)
	}
	require.Contains(t, recs[1].Reason, "signature mismatch")
	require.False(t, recs[1].Verified)
	require.Equal(t, "acme/web", recs[1].Repo, "the claimed repository is recorded")
	require.Equal(t, 401, recs[1].Status)
	require.Equal(t, 413, recs[6].Status)
	require.EqualValues(t, 16<<10, recs[6].BodySize, "reading stops at the limit")
	require.True(t, recs[7].Verified, "a signed malformed body is verified first")

	raw := readRaw(t, w.js, schemas.StreamAudit)
	require.NotContains(t, raw, webhookSecret)
	require.NotContains(t, raw, strings.TrimPrefix(sig, "sha256="), "signatures are not audited")
	require.NotContains(t, raw, "Bump golang.org", "bodies are not audited")
}

func readRaw(t testing.TB, h *jsHandles, stream string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, stream)
	require.NoError(t, err)
	var all strings.Builder
	for seq := uint64(1); seq <= st.CachedInfo().State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		all.Write(m.Data)
		for k, v := range m.Header {
			all.WriteString(k + strings.Join(v, ","))
		}
	}
	return all.String()
}

func TestWebhookGitLab(t *testing.T) {
	t.Parallel()
	w := setupWebhooks(t, 0)
	mr := readFixture(t, "gitlab-merge-request.json")
	send := func(event string, body []byte, token string, hdr ...string) *response {
		return w.post("/v1/webhooks/gitlab", body, append([]string{
			"X-Gitlab-Event", event, "X-Gitlab-Token", token, "X-Gitlab-Event-UUID", "9f2a6c1e-0b6d-4b7e-9b44-1d3a8e5c7f10",
			"X-Gitlab-Instance", "https://gitlab.acme.example", "User-Agent", "GitLab/17.7.0",
		}, hdr...)...)
	}
	send("Merge Request Hook", mr, webhookSecret, "Idempotency-Key", "b5e9c1d2-7a4f-4e1b-8c3d-2f6a9e0b1c4d").ack(t, http.StatusAccepted, schemas.VerdictAccepted)
	// Same Idempotency-Key, another event UUID: GitLab's retry of the same delivery.
	send("Merge Request Hook", mr, webhookSecret, "Idempotency-Key", "b5e9c1d2-7a4f-4e1b-8c3d-2f6a9e0b1c4d",
		"X-Gitlab-Event-UUID", "other").ack(t, http.StatusAccepted, schemas.VerdictDuplicate)
	send("Push Hook", readFixture(t, "gitlab-push.json"), webhookSecret).ack(t, http.StatusAccepted, schemas.VerdictAccepted)
	send("Push Hook", readFixture(t, "gitlab-push.json"), webhookSecret).ack(t, http.StatusAccepted, schemas.VerdictDuplicate)
	send("Tag Push Hook", readFixture(t, "gitlab-tag-push.json"), webhookSecret, "X-Gitlab-Event-UUID", "tag-1").ack(t, http.StatusAccepted, schemas.VerdictAccepted)
	send("Note Hook", []byte(`{"object_kind":"note"}`), webhookSecret, "X-Gitlab-Event-UUID", "note-1").ack(t, http.StatusAccepted, schemas.VerdictIgnored)
	send("Push Hook", readFixture(t, "gitlab-push.json"), "wrong-token-0123456789abcdef", "X-Gitlab-Event-UUID", "p-2").
		problem(t, http.StatusUnauthorized, "webhook-unauthenticated")
	send("Push Hook", readFixture(t, "gitlab-push.json"), "", "X-Gitlab-Event-UUID", "p-3").
		problem(t, http.StatusUnauthorized, "webhook-unauthenticated")

	evs := w.stored()
	require.Len(t, evs, 3)
	require.Equal(t, "b5e9c1d2-7a4f-4e1b-8c3d-2f6a9e0b1c4d", evs[0].DeliveryID, "Idempotency-Key is the delivery id when sent")
	require.Equal(t, schemas.GitEventPullRequest, evs[0].Event)
	require.Equal(t, "acme/platform/checkout", evs[0].Repo)
	require.Equal(t, "gitlab.acme.example", evs[0].Host)
	require.Equal(t, schemas.GitEventPush, evs[1].Event)
	require.Equal(t, schemas.GitEventTagPush, evs[2].Event)
	recs := w.audited(8)
	require.Equal(t, "https://gitlab.acme.example", recs[0].Headers["X-Gitlab-Instance"])
	require.NotContains(t, readRaw(t, w.js, schemas.StreamAudit), "wrong-token-0123456789abcdef", "tokens are not audited")
}

// TestWebhookListenerIsSeparate checks the listeners keep their own
// authentication: webhooks need no client certificate, and the mTLS API does
// not serve them.
func TestWebhookListenerIsSeparate(t *testing.T) {
	t.Parallel()
	w := setupWebhooks(t, 0)
	require.NotEqual(t, w.gw.APIAddr(), w.gw.WebhookAddr())
	r := w.env.client(w.acme()).do(http.MethodPost, "/v1/webhooks/github", "{}")
	require.Equal(t, http.StatusNotFound, r.StatusCode)
	_, err := w.env.client(nil).try(http.MethodGet, "/v1/jobs", "")
	require.ErrorContains(t, err, "certificate required", "the API still requires a client certificate")

	conn, err := tls.Dial("tcp", w.gw.WebhookAddr(), &tls.Config{RootCAs: w.ca.Pool(), MaxVersion: tls.VersionTLS12})
	require.NoError(t, err, "TLS 1.2 without a client certificate is accepted")
	require.Equal(t, uint16(tls.VersionTLS12), conn.ConnectionState().Version)
	_ = conn.Close()
	_, err = tls.Dial("tcp", w.gw.WebhookAddr(), &tls.Config{RootCAs: w.ca.Pool(), MaxVersion: tls.VersionTLS11})
	require.Error(t, err, "TLS 1.1 is refused")
}

// TestWebhookNATSDown answers 503 with Retry-After while JetStream is away,
// records nothing, and takes the host's redelivery afterwards.
func TestWebhookNATSDown(t *testing.T) {
	t.Parallel()
	w := setupWebhooks(t, 0)
	body := bytes.ReplaceAll(readFixture(t, "github-push.json"), []byte("acme/payments-api"), []byte("acme/web"))
	w.nats.shutdown()
	w.waitReady(false)
	start := time.Now()
	r := w.github("push", "outage-delivery", body, webhookSecret)
	r.problem(t, http.StatusServiceUnavailable, "unavailable")
	require.Equal(t, "5", r.Header.Get("Retry-After"))
	require.Less(t, time.Since(start), 10*time.Second, "inside GitHub's delivery timeout")
	w.nats.start()
	w.waitReady(true)
	w.github("push", "outage-delivery", body, webhookSecret).ack(t, http.StatusAccepted, schemas.VerdictAccepted)
	require.Len(t, w.stored(), 1)
}

// TestWebhookSecretReload rotates the default secret: the old one stops
// verifying once the gateway reloads.
func TestWebhookSecretReload(t *testing.T) {
	t.Parallel()
	w := setupWebhooks(t, 0)
	body := bytes.ReplaceAll(readFixture(t, "github-push.json"), []byte("acme/payments-api"), []byte("acme/web"))
	const rotated = "rotated-webhook-secret-0123456789"
	writeFile(t, filepath.Join(w.secretDir, "default"), rotated)
	require.NoError(t, w.gw.Reload())
	w.github("push", "before-rotation", body, webhookSecret).problem(t, http.StatusUnauthorized, "webhook-unauthenticated")
	w.github("push", "after-rotation", body, rotated).ack(t, http.StatusAccepted, schemas.VerdictAccepted)
	require.NotContains(t, w.logs.String(), rotated)

	writeFile(t, filepath.Join(w.secretDir, "default"), "short")
	require.ErrorContains(t, w.gw.Reload(), "16 to 4096 bytes")
	w.github("push", "after-bad-rotation", body, rotated).ack(t, http.StatusAccepted, schemas.VerdictAccepted)
}

// TestWebhookAuditAPI reads the audit stream through the mTLS API.
func TestWebhookAuditAPI(t *testing.T) {
	t.Parallel()
	w := setupWebhooks(t, 0)
	body := bytes.ReplaceAll(readFixture(t, "github-push.json"), []byte("acme/payments-api"), []byte("acme/web"))
	for i := range 5 {
		w.github("push", fmt.Sprintf("audit-%d", i), body, webhookSecret).ack(t, http.StatusAccepted, schemas.VerdictAccepted)
	}
	w.github("push", "audit-bad", body, "wrong-secret-0123456789abcdef").problem(t, http.StatusUnauthorized, "webhook-unauthenticated")
	w.audited(6)

	admin := w.env.client(w.globex()) // globex-ci has the admin role
	list := func(query string) api.AuditList {
		r := admin.do(http.MethodGet, "/v1/audit/webhooks"+query, "")
		require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.body)
		var l api.AuditList
		require.NoError(t, json.Unmarshal(r.body, &l))
		return l
	}
	all := list("")
	require.Len(t, all.Records, 6)
	require.Equal(t, schemas.VerdictRejected, all.Records[0].Record.Verdict, "newest first")
	require.Greater(t, all.Records[0].Sequence, all.Records[1].Sequence)

	rejected := list("?verdict=rejected")
	require.Len(t, rejected.Records, 1)
	require.Contains(t, rejected.Records[0].Record.Reason, "signature mismatch")

	page := list("?provider=github&verdict=accepted&limit=2")
	require.Len(t, page.Records, 2)
	require.Equal(t, "audit-4", page.Records[0].Record.DeliveryID)
	var seen []string
	for page.NextPageToken != "" {
		for _, r := range page.Records {
			seen = append(seen, r.Record.DeliveryID)
		}
		page = list("?provider=github&verdict=accepted&limit=2&page_token=" + page.NextPageToken)
	}
	for _, r := range page.Records {
		seen = append(seen, r.Record.DeliveryID)
	}
	require.Equal(t, []string{"audit-4", "audit-3", "audit-2", "audit-1", "audit-0"}, seen)
	require.Empty(t, list("?provider=gitlab").Records)

	w.env.client(w.acme()).do(http.MethodGet, "/v1/audit/webhooks", "").problem(t, http.StatusForbidden, "forbidden")
	admin.do(http.MethodGet, "/v1/audit/webhooks?verdict=maybe", "").problem(t, http.StatusBadRequest, "invalid-parameter")
	admin.do(http.MethodGet, "/v1/audit/webhooks?page_token=x", "").problem(t, http.StatusBadRequest, "invalid-parameter")
}
