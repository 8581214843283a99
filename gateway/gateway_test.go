package gateway_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ciss.dev/gateway"
	"ciss.dev/gateway/internal/api"
	"ciss.dev/gateway/internal/certtest"
	"ciss.dev/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	e := &env{t: t, dir: t.TempDir(), ca: certtest.NewCA(t, "ca")}
	cert, key := e.ca.Server(t).WriteFiles(t, e.dir, "server")
	ca := filepath.Join(e.dir, "ca.pem")
	certtest.WriteFile(t, ca, e.ca.PEM)
	pol := filepath.Join(e.dir, "policy.yaml")
	writeFile(t, pol, defaultPolicy)
	valid := gateway.Config{TLSCertFile: cert, TLSKeyFile: key, ClientCAFile: ca, PolicyFile: pol}
	for _, tc := range []struct {
		field  string
		mutate func(*gateway.Config)
	}{
		{"TLSCertFile", func(c *gateway.Config) { c.TLSCertFile = "" }},
		{"TLSKeyFile", func(c *gateway.Config) { c.TLSKeyFile = "" }},
		{"ClientCAFile", func(c *gateway.Config) { c.ClientCAFile = "" }},
		{"PolicyFile", func(c *gateway.Config) { c.PolicyFile = "" }},
		{"PolicyFile", func(c *gateway.Config) { c.PolicyFile = filepath.Join(e.dir, "missing.yaml") }},
		{"NATSCredsFile", func(c *gateway.Config) { c.NATSCredsFile = filepath.Join(e.dir, "missing.creds") }},
		{"NATSKeyFile", func(c *gateway.Config) { c.NATSCertFile = cert }},
		{"MaxWait", func(c *gateway.Config) { c.MaxWait = -time.Second }},
	} {
		cfg := valid
		tc.mutate(&cfg)
		_, err := gateway.New(cfg)
		var ce *gateway.ConfigError
		require.ErrorAs(t, err, &ce, tc.field)
		require.Equal(t, tc.field, ce.Field)
		require.ErrorContains(t, err, "Config."+tc.field)
	}
	cfg := valid
	cfg.ClientCAFile = key // a key is no CA bundle
	_, err := gateway.New(cfg)
	require.ErrorContains(t, err, "client CA bundle")

	g, err := gateway.New(valid)
	require.NoError(t, err)
	require.Equal(t, gateway.DefaultAPIAddr, g.APIAddr())
	require.Equal(t, gateway.DefaultAdminAddr, g.AdminAddr())
	require.NoError(t, g.Stop(context.Background()), "stopping an unstarted gateway is a no-op")
}

func TestHandshake(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, err := e.client(nil).try(http.MethodGet, "/v1/jobs", "")
	require.ErrorContains(t, err, "tls: certificate required", "no client certificate must be refused")

	other := certtest.NewCA(t, "other CA")
	_, err = e.client(other.Issue(t, certtest.Options{URIs: []string{acmeSPIFFE}})).try(http.MethodGet, "/v1/jobs", "")
	require.ErrorContains(t, err, "tls: unknown certificate authority", "a certificate from an untrusted CA must be refused")

	expired := e.ca.Issue(t, certtest.Options{URIs: []string{acmeSPIFFE},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	_, err = e.client(expired).try(http.MethodGet, "/v1/jobs", "")
	require.ErrorContains(t, err, "tls: expired certificate", "an expired certificate must be refused")

	tls12 := e.client(e.acme())
	tls12.http.Transport.(*http.Transport).TLSClientConfig.MinVersion = 0
	tls12.http.Transport.(*http.Transport).TLSClientConfig.MaxVersion = 0x0303
	_, err = tls12.try(http.MethodGet, "/v1/jobs", "")
	require.ErrorContains(t, err, "protocol version not supported", "TLS 1.2 must be refused")

	r := e.client(e.acme()).do(http.MethodGet, "/v1/jobs", "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.body)
	require.Equal(t, uint16(0x0304), r.TLS.Version)

	h2 := e.client(e.acme())
	h2.http.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	r = h2.do(http.MethodGet, "/v1/jobs", "")
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.Equal(t, 2, r.ProtoMajor, "HTTP/2 is negotiated by ALPN")
}

func TestAuthorization(t *testing.T) {
	t.Parallel()
	e := setup(t)
	nobody := e.client(e.nobody())
	p := nobody.do(http.MethodGet, "/v1/jobs", "").problem(t, http.StatusForbidden, "forbidden")
	require.Contains(t, p.Detail, "no policy binding")
	nobody.do(http.MethodPost, "/v1/jobs", validRequest).problem(t, http.StatusForbidden, "forbidden")

	reader := e.client(e.acmeReader())
	reader.do(http.MethodPost, "/v1/jobs", validRequest).problem(t, http.StatusForbidden, "forbidden")
	job := e.client(e.acme()).submit("")
	r := reader.do(http.MethodGet, "/v1/jobs/"+job.ID, "")
	require.Equal(t, http.StatusOK, r.StatusCode)
	reader.do(http.MethodDelete, "/v1/jobs/"+job.ID, "").problem(t, http.StatusForbidden, "forbidden")
	require.EqualValues(t, 1, e.js.streamMsgs(t), "refused requests publish nothing")

	acme := e.client(e.acme())
	acme.do(http.MethodGet, "/v2/jobs", "").problem(t, http.StatusNotFound, "not-found")
	acme.do(http.MethodGet, "/v1/jobs/not-a-uuid", "").problem(t, http.StatusNotFound, "job-not-found")
	acme.do(http.MethodGet, "/v1/jobs/"+strings.ToUpper(job.ID), "").problem(t, http.StatusNotFound, "job-not-found")
	r = acme.do(http.MethodPut, "/v1/jobs", validRequest)
	r.problem(t, http.StatusMethodNotAllowed, "method-not-allowed")
	require.Equal(t, "GET, HEAD, POST", r.Header.Get("Allow"))
	r = acme.do(http.MethodPost, "/v1/jobs/"+job.ID, validRequest)
	r.problem(t, http.StatusMethodNotAllowed, "method-not-allowed")
	require.Contains(t, r.Header.Get("Allow"), "DELETE")
}

func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme, globex := e.client(e.acme()), e.client(e.globex())
	job := acme.submit("")
	gjob := globex.submit("")

	globex.do(http.MethodGet, "/v1/jobs/"+job.ID, "").problem(t, http.StatusNotFound, "job-not-found")
	globex.do(http.MethodGet, "/v1/jobs/"+job.ID+"/result", "").problem(t, http.StatusNotFound, "job-not-found")
	globex.do(http.MethodDelete, "/v1/jobs/"+job.ID, "").problem(t, http.StatusNotFound, "job-not-found")
	var list api.JobList
	r := globex.do(http.MethodGet, "/v1/jobs", "")
	require.NoError(t, schemas.DecodeStrict(r.body, &list))
	require.Len(t, list.Jobs, 1)
	require.Equal(t, gjob.ID, list.Jobs[0].ID)

	got, _ := e.js.getJob(t, "acme", job.ID)
	require.Equal(t, schemas.StatusQueued, got.Status, "globex's DELETE must not touch acme's job")
}

func TestSubmit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	r := acme.do(http.MethodPost, "/v1/jobs",
		`{"type":"image-scan","target":{"image":"registry.example:5000/app/web:1.2"},"lane":"bulk","cache":false,"params":{"severity":"HIGH"}}`)
	require.Equal(t, http.StatusAccepted, r.StatusCode, "%s", r.body)
	job := r.job()
	require.Equal(t, "/v1/jobs/"+job.ID, r.Header.Get("Location"))
	require.True(t, schemas.ValidJobID(job.ID))
	require.Equal(t, byte('7'), job.ID[14], "ids are UUIDv7")
	require.Equal(t, "acme", job.Tenant)
	require.Equal(t, schemas.LaneBulk, job.Lane)
	require.False(t, job.Cache)
	require.Equal(t, schemas.StatusQueued, job.Status)
	require.Equal(t, acmeSPIFFE, job.RequestedBy, "the SPIFFE ID wins over the CN")
	require.Equal(t, map[string]string{"severity": "HIGH"}, job.Params)
	require.Regexp(t, `^sha256:[a-f0-9]{64}$`, job.RequestDigest)
	require.WithinDuration(t, time.Now(), job.CreatedAt, time.Minute)

	// The event is in the stream, deduplicated by the job id.
	msg, err := e.js.stream.GetLastMsgForSubject(context.Background(), schemas.SubjectJobRequested(schemas.LaneBulk))
	require.NoError(t, err)
	require.Equal(t, job.ID, msg.Header.Get(nats.MsgIdHdr))
	var evJob schemas.Job
	ev, err := schemas.Unmarshal(msg.Data, schemas.TypeJobRequested, &evJob)
	require.NoError(t, err)
	require.Equal(t, gateway.DefaultSource, ev.Source)
	require.Equal(t, job.ID, ev.Subject)
	require.Equal(t, job.ID, evJob.ID)
	require.Equal(t, job.RequestDigest, evJob.RequestDigest)

	// The state is in the bucket.
	stored, _ := e.js.getJob(t, "acme", job.ID)
	require.Equal(t, job.ID, stored.ID)
	require.Equal(t, schemas.StatusQueued, stored.Status)

	// GET returns it with the revision as ETag.
	r = acme.do(http.MethodGet, "/v1/jobs/"+job.ID, "")
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.Equal(t, `"1"`, r.Header.Get("ETag"))
	require.Equal(t, job.ID, r.job().ID)

	// A subject-identified client is recorded by its DN.
	subj := e.ca.Issue(t, certtest.Options{CommonName: "runner", Organization: []string{"Acme"}, OrganizationalUnit: []string{"ci"}})
	pol := defaultPolicy + "  - {name: subj, match: {ou: ci}, tenant: acme, roles: [submitter]}\n"
	writeFile(t, e.cfg.PolicyFile, pol)
	require.NoError(t, e.gw.Reload())
	require.Equal(t, "CN=runner,OU=ci,O=Acme", e.client(subj).submit("").RequestedBy)
}

func TestSubmitRejects(t *testing.T) {
	t.Parallel()
	e := setup(t, setupOpt{config: func(c *gateway.Config) { c.MaxBodyBytes = 4096 }})
	acme := e.client(e.acme())

	acme.do(http.MethodPost, "/v1/jobs", `{"type":"image-scan","target":{"image":"r.example/a:1"},"priority":9}`).
		problem(t, http.StatusBadRequest, "malformed-request")
	acme.do(http.MethodPost, "/v1/jobs", `{"type":"image-scan"} {}`).problem(t, http.StatusBadRequest, "malformed-request")
	acme.do(http.MethodPost, "/v1/jobs", `not json`).problem(t, http.StatusBadRequest, "malformed-request")

	big := `{"type":"image-scan","target":{"image":"r.example/a:1"},"params":{"x":"` + strings.Repeat("a", 5000) + `"}}`
	acme.do(http.MethodPost, "/v1/jobs", big).problem(t, http.StatusRequestEntityTooLarge, "payload-too-large")

	acme.do(http.MethodPost, "/v1/jobs", validRequest, "Content-Type", "text/plain").
		problem(t, http.StatusUnsupportedMediaType, "unsupported-media-type")
	acme.do(http.MethodPost, "/v1/jobs", validRequest, "Content-Type", "application/json; charset=utf-8").job()

	p := acme.do(http.MethodPost, "/v1/jobs", `{"type":"image-scan","target":{"image":"not an image"},"lane":"turbo"}`).
		problem(t, http.StatusUnprocessableEntity, "invalid-request")
	require.Len(t, p.InvalidParams, 2)
	require.Equal(t, "lane", p.InvalidParams[0].Field)
	require.Equal(t, "target.image", p.InvalidParams[1].Field)
	require.NotEmpty(t, p.InvalidParams[1].Reason)

	p = acme.do(http.MethodPost, "/v1/jobs", validRequest, "Idempotency-Key", strings.Repeat("k", 256)).
		problem(t, http.StatusBadRequest, "invalid-parameter")
	require.Equal(t, "Idempotency-Key", p.InvalidParams[0].Field)

	require.EqualValues(t, 1, e.js.streamMsgs(t), "only the one valid request was published")
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	r1 := acme.do(http.MethodPost, "/v1/jobs", validRequest, "Idempotency-Key", "build-42")
	require.Equal(t, http.StatusAccepted, r1.StatusCode, "%s", r1.body)
	require.Empty(t, r1.Header.Get("Idempotent-Replayed"))
	j1 := r1.job()
	require.Equal(t, byte('5'), j1.ID[14], "idempotent ids are UUIDv5")
	require.Equal(t, "build-42", j1.IdempotencyKey)

	// Same request with the fields in another order and the default lane spelt out.
	r2 := acme.do(http.MethodPost, "/v1/jobs",
		`{"lane":"interactive","target":{"image":"registry.example:5000/app/web:1.2"},"type":"image-scan"}`,
		"Idempotency-Key", "build-42")
	require.Equal(t, http.StatusAccepted, r2.StatusCode, "%s", r2.body)
	require.Equal(t, "true", r2.Header.Get("Idempotent-Replayed"))
	require.Equal(t, j1.ID, r2.job().ID)
	require.Equal(t, j1.CreatedAt, r2.job().CreatedAt)
	require.EqualValues(t, 1, e.js.streamMsgs(t), "a replay publishes nothing")

	acme.do(http.MethodPost, "/v1/jobs", `{"type":"image-scan","target":{"image":"registry.example:5000/app/web:1.3"}}`,
		"Idempotency-Key", "build-42").problem(t, http.StatusUnprocessableEntity, "idempotency-key-reused")

	// The key is scoped to the tenant.
	g := e.client(e.globex()).submit("", "Idempotency-Key", "build-42")
	require.NotEqual(t, j1.ID, g.ID)
	require.EqualValues(t, 2, e.js.streamMsgs(t))
}

func TestNATSDown(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())

	e.nats.shutdown()
	e.waitReady(false)
	r := acme.do(http.MethodPost, "/v1/jobs", validRequest, "Idempotency-Key", "during-outage")
	r.problem(t, http.StatusServiceUnavailable, "unavailable")
	require.Equal(t, "5", r.Header.Get("Retry-After"))
	acme.do(http.MethodPost, "/v1/jobs", validRequest).problem(t, http.StatusServiceUnavailable, "unavailable")
	acme.do(http.MethodGet, "/v1/jobs", "").problem(t, http.StatusServiceUnavailable, "unavailable")

	e.nats.start()
	e.waitReady(true)
	require.EqualValues(t, 0, e.js.streamMsgs(t), "a request answered 503 must not become a job")

	r = acme.do(http.MethodPost, "/v1/jobs", validRequest, "Idempotency-Key", "during-outage")
	require.Equal(t, http.StatusAccepted, r.StatusCode, "%s", r.body)
	require.Empty(t, r.Header.Get("Idempotent-Replayed"), "the retry creates the job for the first time")
	require.EqualValues(t, 1, e.js.streamMsgs(t))

	resp, err := http.Get("http://" + e.gw.AdminAddr() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(b), "ciss_gateway_nats_unavailable_total 3")
}

func TestStartsBeforeTopology(t *testing.T) {
	t.Parallel()
	e := setup(t, setupOpt{noTopology: true, noWait: true})
	resp, err := http.Get("http://" + e.gw.AdminAddr() + "/readyz")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Contains(t, string(b), "not bound")
	e.client(e.acme()).do(http.MethodPost, "/v1/jobs", validRequest).problem(t, http.StatusServiceUnavailable, "unavailable")

	e.js.createTopology(t)
	e.waitReady(true)
	e.client(e.acme()).submit("")
}

func TestStartsBeforeNATS(t *testing.T) {
	t.Parallel()
	n := startNATS(t)
	n.shutdown()
	e := setup(t, setupOpt{noWait: true, config: func(c *gateway.Config) { c.NATSURL = n.url() }})
	require.Equal(t, http.StatusServiceUnavailable, e.readyz())
	n.start()
	js := connectJS(t, n)
	js.createTopology(t)
	e.waitReady(true)
	e.client(e.acme()).submit("")
	require.EqualValues(t, 1, js.streamMsgs(t))
}

// kvConsumers counts consumers on the jobs bucket's stream: a long-poll's
// watcher is one.
func (e *env) kvConsumers() int {
	s, err := e.js.js.Stream(context.Background(), "KV_"+schemas.BucketJobs)
	require.NoError(e.t, err)
	info, err := s.Info(context.Background())
	require.NoError(e.t, err)
	return info.State.Consumers
}

func TestLongPoll(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	job := acme.submit("")

	acme.do(http.MethodGet, "/v1/jobs/"+job.ID+"?wait=soon", "").problem(t, http.StatusBadRequest, "invalid-parameter")

	// The wait elapses without a change.
	start := time.Now()
	r := acme.do(http.MethodGet, "/v1/jobs/"+job.ID+"?wait=100ms", "")
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.Equal(t, schemas.StatusQueued, r.job().Status)
	require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)

	// A status change ends the wait early.
	type result struct {
		r   *response
		err error
		d   time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		r, err := acme.try(http.MethodGet, "/v1/jobs/"+job.ID+"?wait=30s", "")
		done <- result{r, err, time.Since(start)}
	}()
	eventually(t, 10*time.Second, "the long-poll's watcher", func() bool { return e.kvConsumers() > 0 })
	e.js.setJob(t, "acme", job.ID, func(j *schemas.Job) { j.Status = schemas.StatusRunning })
	select {
	case res := <-done:
		require.NoError(t, res.err)
		require.Equal(t, http.StatusOK, res.r.StatusCode)
		require.Equal(t, schemas.StatusRunning, res.r.job().Status)
		require.Equal(t, `"2"`, res.r.Header.Get("ETag"))
		require.Less(t, res.d, 20*time.Second)
	case <-time.After(20 * time.Second):
		t.Fatal("long-poll did not return after the status changed")
	}

	// A terminal job answers at once.
	e.js.setJob(t, "acme", job.ID, func(j *schemas.Job) { j.Status = schemas.StatusFailed })
	start = time.Now()
	r = acme.do(http.MethodGet, "/v1/jobs/"+job.ID+"?wait=30s", "")
	require.Equal(t, schemas.StatusFailed, r.job().Status)
	require.Less(t, time.Since(start), 10*time.Second)
}

func TestLongPollEndsOnStop(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	job := acme.submit("")
	done := make(chan *response, 1)
	go func() {
		r, err := acme.try(http.MethodGet, "/v1/jobs/"+job.ID+"?wait=30s", "")
		if err != nil {
			r = nil
		}
		done <- r
	}()
	eventually(t, 10*time.Second, "the long-poll's watcher", func() bool { return e.kvConsumers() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.gw.Stop(ctx))
	select {
	case r := <-done:
		require.NotNil(t, r)
		require.Equal(t, http.StatusOK, r.StatusCode)
		require.Equal(t, schemas.StatusQueued, r.job().Status)
	case <-ctx.Done():
		t.Fatal("long-poll outlived Stop")
	}
}

func TestResult(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	job := acme.submit("")
	path := "/v1/jobs/" + job.ID + "/result"

	r := acme.do(http.MethodGet, path, "")
	require.Equal(t, http.StatusAccepted, r.StatusCode)
	require.Equal(t, "2", r.Header.Get("Retry-After"))
	require.Equal(t, schemas.StatusQueued, r.job().Status)

	e.js.setJob(t, "acme", job.ID, func(j *schemas.Job) { j.Status = schemas.StatusRunning })
	r = acme.do(http.MethodGet, path, "")
	require.Equal(t, http.StatusAccepted, r.StatusCode)
	require.Equal(t, schemas.StatusRunning, r.job().Status)

	docs := map[string]string{
		schemas.FormatNative: `{"native":true}`,
		schemas.FormatSARIF:  `{"version":"2.1.0","runs":[]}`,
	}
	var reports []schemas.Report
	for _, f := range []struct{ format, mt string }{
		{schemas.FormatNative, schemas.MediaTypeJSON}, {schemas.FormatSARIF, schemas.MediaTypeSARIF},
	} {
		name := "acme/" + job.ID + "/" + f.format
		_, err := e.js.obj.PutBytes(context.Background(), name, []byte(docs[f.format]))
		require.NoError(t, err)
		sum := sha256.Sum256([]byte(docs[f.format]))
		reports = append(reports, schemas.Report{Format: f.format, MediaType: f.mt, Object: name,
			Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(docs[f.format]))})
	}
	e.js.setJob(t, "acme", job.ID, func(j *schemas.Job) {
		j.Status = schemas.StatusSucceeded
		j.Result = &schemas.Result{Reports: reports}
	})

	for _, tc := range []struct {
		accept, query, format string
	}{
		{"", "", schemas.FormatNative},
		{"*/*", "", schemas.FormatNative},
		{"application/json", "", schemas.FormatNative},
		{"application/sarif+json", "", schemas.FormatSARIF},
		{"application/json;q=0.4, application/sarif+json;q=0.8", "", schemas.FormatSARIF},
		{"text/html, */*;q=0.1", "", schemas.FormatNative},
		{"application/json", "?format=sarif", schemas.FormatSARIF},
	} {
		r := acme.do(http.MethodGet, path+tc.query, "", "Accept", tc.accept)
		require.Equal(t, http.StatusOK, r.StatusCode, "Accept %q: %s", tc.accept, r.body)
		require.Equal(t, docs[tc.format], string(r.body), "Accept %q", tc.accept)
		var rep schemas.Report
		for _, x := range reports {
			if x.Format == tc.format {
				rep = x
			}
		}
		require.Equal(t, rep.MediaType, r.Header.Get("Content-Type"))
		require.Equal(t, fmt.Sprint(len(docs[tc.format])), r.Header.Get("Content-Length"))
		require.Equal(t, `"`+rep.Digest+`"`, r.Header.Get("ETag"))
		require.True(t, strings.HasPrefix(r.Header.Get("Digest"), "sha-256="))
	}

	p := acme.do(http.MethodGet, path, "", "Accept", "application/vnd.cyclonedx+json").
		problem(t, http.StatusNotAcceptable, "not-acceptable")
	require.Equal(t, []string{schemas.MediaTypeJSON, schemas.MediaTypeSARIF}, p.Available)
	acme.do(http.MethodGet, path+"?format=cyclonedx", "").problem(t, http.StatusNotAcceptable, "not-acceptable")
	acme.do(http.MethodGet, path+"?format=pdf", "").problem(t, http.StatusBadRequest, "invalid-parameter")
	acme.do(http.MethodGet, path, "", "Accept", "text/html").problem(t, http.StatusNotAcceptable, "not-acceptable")

	// A reader may fetch it too.
	r = e.client(e.acmeReader()).do(http.MethodGet, path+"?format=sarif", "")
	require.Equal(t, http.StatusOK, r.StatusCode)

	// A failed job has no result.
	failed := acme.submit("")
	e.js.setJob(t, "acme", failed.ID, func(j *schemas.Job) {
		j.Status = schemas.StatusFailed
		j.Error = &schemas.Error{Code: schemas.CodeToolFailed, Message: "trivy exited 2"}
	})
	p = acme.do(http.MethodGet, "/v1/jobs/"+failed.ID+"/result", "").problem(t, http.StatusConflict, "job-not-succeeded")
	require.Contains(t, p.Detail, "tool_failed")
}

func TestList(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	var ids []string
	for i := range 7 {
		var hdr []string
		if i%3 == 0 { // mix UUIDv5 ids in: order must come from created_at
			hdr = []string{"Idempotency-Key", fmt.Sprintf("key-%d", i)}
		}
		ids = append(ids, acme.submit("", hdr...).ID)
	}
	e.client(e.globex()).submit("")
	e.js.setJob(t, "acme", ids[2], func(j *schemas.Job) { j.Status = schemas.StatusRunning })
	e.js.setJob(t, "acme", ids[5], func(j *schemas.Job) { j.Status = schemas.StatusRunning })

	list := func(query string) api.JobList {
		t.Helper()
		r := acme.do(http.MethodGet, "/v1/jobs"+query, "")
		require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.body)
		var l api.JobList
		require.NoError(t, schemas.DecodeStrict(r.body, &l))
		return l
	}
	var got []string
	token := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5)
		q := "?limit=3"
		if token != "" {
			q += "&page_token=" + token
		}
		l := list(q)
		require.LessOrEqual(t, len(l.Jobs), 3)
		for _, j := range l.Jobs {
			got = append(got, j.ID)
		}
		if token = l.NextPageToken; token == "" {
			break
		}
	}
	want := make([]string, len(ids))
	for i, id := range ids {
		want[len(ids)-1-i] = id
	}
	require.Equal(t, want, got, "newest first, each job once")

	running := list("?status=running")
	require.Len(t, running.Jobs, 2)
	require.Equal(t, ids[5], running.Jobs[0].ID)
	require.Empty(t, running.NextPageToken)
	require.Len(t, list("").Jobs, 7)
	require.Empty(t, list("?status=succeeded").Jobs)
	require.Contains(t, string(acme.do(http.MethodGet, "/v1/jobs?status=succeeded", "").body), `"jobs":[]`)

	acme.do(http.MethodGet, "/v1/jobs?limit=0", "").problem(t, http.StatusBadRequest, "invalid-parameter")
	acme.do(http.MethodGet, "/v1/jobs?limit=201", "").problem(t, http.StatusBadRequest, "invalid-parameter")
	acme.do(http.MethodGet, "/v1/jobs?status=done", "").problem(t, http.StatusBadRequest, "invalid-parameter")
	acme.do(http.MethodGet, "/v1/jobs?page_token=xyz", "").problem(t, http.StatusBadRequest, "invalid-parameter")
}

func TestCancel(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	job := acme.submit("")

	sub, err := e.js.nc.SubscribeSync(schemas.SubjectCancel(job.ID))
	require.NoError(t, err)
	require.NoError(t, e.js.nc.Flush())

	r := acme.do(http.MethodDelete, "/v1/jobs/"+job.ID, "")
	require.Equal(t, http.StatusAccepted, r.StatusCode, "%s", r.body)
	got := r.job()
	require.Equal(t, schemas.StatusCancelled, got.Status)
	require.Equal(t, schemas.CodeCancelled, got.Error.Code)
	require.Equal(t, "cancelled by "+acmeSPIFFE, got.Error.Message)
	require.NotNil(t, got.FinishedAt)

	stored, _ := e.js.getJob(t, "acme", job.ID)
	require.Equal(t, schemas.StatusCancelled, stored.Status)

	msg, err := sub.NextMsg(10 * time.Second)
	require.NoError(t, err)
	var cr schemas.CancelRequest
	_, err = schemas.Unmarshal(msg.Data, schemas.TypeCancelRequest, &cr)
	require.NoError(t, err)
	require.Equal(t, schemas.CancelRequest{JobID: job.ID, Tenant: "acme", By: acmeSPIFFE}, cr)

	sm, err := e.js.stream.GetLastMsgForSubject(context.Background(), schemas.SubjectJobCompleted("acme"))
	require.NoError(t, err)
	require.Equal(t, job.ID+".completed", sm.Header.Get(nats.MsgIdHdr))
	var done schemas.Job
	_, err = schemas.Unmarshal(sm.Data, schemas.TypeJobCompleted, &done)
	require.NoError(t, err)
	require.Equal(t, schemas.StatusCancelled, done.Status)

	acme.do(http.MethodDelete, "/v1/jobs/"+job.ID, "").problem(t, http.StatusConflict, "job-terminal")
	acme.do(http.MethodGet, "/v1/jobs/"+job.ID+"/result", "").problem(t, http.StatusConflict, "job-not-succeeded")
	acme.do(http.MethodDelete, "/v1/jobs/0190a5c4-0000-7000-8000-000000000000", "").problem(t, http.StatusNotFound, "job-not-found")
}

func TestPolicyReload(t *testing.T) {
	t.Parallel()
	e := setup(t, setupOpt{config: func(c *gateway.Config) { c.ReloadInterval = 20 * time.Millisecond }})
	nobody := e.client(e.nobody())
	nobody.do(http.MethodGet, "/v1/jobs", "").problem(t, http.StatusForbidden, "forbidden")

	// Reload on demand (SIGHUP).
	writeFile(t, e.cfg.PolicyFile, defaultPolicy+"  - {name: nobody, match: {cn: nobody}, tenant: nowhere, roles: [reader]}\n")
	require.NoError(t, e.gw.Reload())
	require.Equal(t, http.StatusOK, nobody.do(http.MethodGet, "/v1/jobs", "").StatusCode)

	// A broken policy keeps the previous one.
	writeFile(t, e.cfg.PolicyFile, defaultPolicy+"  - {name: everyone, match: {}, tenant: x, roles: [admin]}\n")
	require.ErrorContains(t, e.gw.Reload(), "match")
	require.Equal(t, http.StatusOK, nobody.do(http.MethodGet, "/v1/jobs", "").StatusCode)
	writeFile(t, e.cfg.PolicyFile, "version: 1\nbindings: []\nextra: true\n")
	require.Error(t, e.gw.Reload())
	require.Equal(t, http.StatusOK, nobody.do(http.MethodGet, "/v1/jobs", "").StatusCode)

	// Reload by polling the file.
	writeFile(t, e.cfg.PolicyFile, defaultPolicy)
	eventually(t, 10*time.Second, "the policy file to be picked up", func() bool {
		return nobody.do(http.MethodGet, "/v1/jobs", "").StatusCode == http.StatusForbidden
	})
}

func TestTLSReload(t *testing.T) {
	t.Parallel()
	e := setup(t, setupOpt{config: func(c *gateway.Config) { c.ReloadInterval = 20 * time.Millisecond }})
	ca2 := certtest.NewCA(t, "second CA")
	fromCA2 := ca2.Issue(t, certtest.Options{URIs: []string{acmeSPIFFE}})
	_, err := e.client(fromCA2).try(http.MethodGet, "/v1/jobs", "")
	require.ErrorContains(t, err, "unknown certificate authority")

	// Trust a second client CA, on demand.
	certtest.WriteFile(t, e.cfg.ClientCAFile, certtest.Bundle(e.ca.PEM, ca2.PEM))
	require.NoError(t, e.gw.Reload())
	require.Equal(t, http.StatusOK, e.client(fromCA2).do(http.MethodGet, "/v1/jobs", "").StatusCode)
	require.Equal(t, http.StatusOK, e.client(e.acme()).do(http.MethodGet, "/v1/jobs", "").StatusCode)

	// A broken CA bundle keeps the previous pool.
	certtest.WriteFile(t, e.cfg.ClientCAFile, []byte("not PEM"))
	require.ErrorContains(t, e.gw.Reload(), "client CA bundle")
	require.Equal(t, http.StatusOK, e.client(fromCA2).do(http.MethodGet, "/v1/jobs", "").StatusCode)

	// Rotate the server certificate; new connections see it (polling).
	certtest.WriteFile(t, e.cfg.ClientCAFile, e.ca.PEM)
	next := e.ca.Server(t)
	next.WriteFiles(t, e.dir, "server")
	eventually(t, 10*time.Second, "the new server certificate", func() bool {
		r, err := e.client(e.acme()).try(http.MethodGet, "/v1/jobs", "")
		return err == nil && r.TLS.PeerCertificates[0].SerialNumber.Cmp(next.Cert.SerialNumber) == 0
	})
	// And the CA2 trust was dropped by the same poll.
	_, err = e.client(fromCA2).try(http.MethodGet, "/v1/jobs", "")
	require.ErrorContains(t, err, "unknown certificate authority")
}

func TestAdmin(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.client(e.acme()).submit("")
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + e.gw.AdminAddr() + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, _ := get("/healthz")
	require.Equal(t, http.StatusOK, code)
	code, _ = get("/readyz")
	require.Equal(t, http.StatusOK, code)
	code, body := get("/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `ciss_gateway_http_requests_total{code="202",route="POST /v1/jobs"} 1`)
	require.Contains(t, body, `ciss_gateway_jobs_submitted_total{lane="interactive",type="image-scan"} 1`)
	require.Contains(t, body, `ciss_gateway_http_request_duration_seconds_bucket`)
	require.Contains(t, body, `ciss_gateway_nats_unavailable_total 0`)

	require.ErrorIs(t, e.gw.Start(context.Background()), gateway.ErrAlreadyStarted)
}

func TestStopIsGraceful(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	acme.submit("")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.gw.Stop(ctx))
	require.NoError(t, e.gw.Stop(ctx), "a second Stop is a no-op")
	_, err := acme.try(http.MethodGet, "/v1/jobs", "")
	require.Error(t, err)
	var ce *gateway.ConfigError
	require.False(t, errors.As(err, &ce))
}
