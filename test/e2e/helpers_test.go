package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/test/fixture"
	"ciss.dev/test/stack"
)

var (
	binDir    string
	trivyPath string
	buildOnce sync.Once
	buildErr  error
)

// e2ePolicy has the dev admin plus two tenants and a read-only identity.
const e2ePolicy = stack.DevPolicy + `  - name: acme-ci
    match:
      spiffe_id: "spiffe://ciss.dev/tenant/acme/ci"
    tenant: acme
    roles: [submitter, reader]
  - name: acme-auditor
    match:
      spiffe_id: "spiffe://ciss.dev/tenant/acme/auditor"
    tenant: acme
    roles: [reader]
  - name: globex-ci
    match:
      cn: "globex-ci"
      o: "globex"
    tenant: globex
    roles: [submitter, reader]
`

// requireTools finds trivy and the component binaries, building the binaries
// once per test run when CISS_BIN_DIR is not set.
func requireTools(t *testing.T) {
	t.Helper()
	trivyPath = os.Getenv("CISS_TRIVY")
	if trivyPath == "" {
		t.Skip("CISS_TRIVY is not set: run `make e2e` (it builds Trivy with deploy/tools/install-trivy.sh)")
	}
	buildOnce.Do(func() {
		binDir = os.Getenv("CISS_BIN_DIR")
		if binDir != "" {
			return
		}
		dir, err := os.MkdirTemp("", "ciss-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		buildErr = stack.Build(context.Background(), dir)
	})
	require.NoError(t, buildErr)
}

// logBuffer collects component logs and shows them when a test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// env is a running stack plus clients for the test's identities.
type env struct {
	t     *testing.T
	s     *stack.Stack
	admin *client // tenant dev
	acme  *client
	globe *client // tenant globex
	audit *client // acme, reader only
	js    jetstream.JetStream
	nc    *nats.Conn
	logs  *logBuffer // the components' output
}

// newEnv starts a private stack for the test. args adds component flags.
func newEnv(t *testing.T, args map[string][]string) *env {
	t.Helper()
	return newEnvConfig(t, stack.Config{Args: args})
}

// newEnvConfig starts a private stack from cfg; Dir, BinDir, Trivy, Output
// and (if empty) Policy are filled in.
func newEnvConfig(t *testing.T, cfg stack.Config) *env {
	t.Helper()
	requireTools(t)
	logs := &logBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg.Dir, cfg.BinDir, cfg.Trivy, cfg.Output = t.TempDir(), binDir, trivyPath, logs
	cfg.Gosec = cmp.Or(cfg.Gosec, os.Getenv("CISS_GOSEC"))
	if cfg.Policy == "" {
		cfg.Policy = e2ePolicy
	}
	s, err := stack.Start(ctx, cfg)
	if err != nil {
		t.Logf("component logs:\n%s", logs.String())
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			out := logs.String()
			if len(out) > 60000 {
				out = "…" + out[len(out)-60000:]
			}
			t.Logf("component logs:\n%s", out)
		}
	})
	e := &env{t: t, s: s, logs: logs}
	e.admin = e.clientFor(s.PKI.Client)
	e.acme = e.newClient(fixture.ClientOpts{CommonName: "acme-ci", SPIFFEID: "spiffe://ciss.dev/tenant/acme/ci"})
	e.audit = e.newClient(fixture.ClientOpts{CommonName: "acme-auditor", SPIFFEID: "spiffe://ciss.dev/tenant/acme/auditor"})
	e.globe = e.newClient(fixture.ClientOpts{CommonName: "globex-ci", Organization: "globex"})
	nc, err := nats.Connect(s.NATSURL, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	e.nc = nc
	e.js, err = jetstream.New(nc)
	require.NoError(t, err)
	return e
}

func (e *env) newClient(opts fixture.ClientOpts) *client {
	e.t.Helper()
	kp, err := e.s.PKI.CA.IssueClient(opts)
	require.NoError(e.t, err)
	return e.clientFor(kp)
}

func (e *env) clientFor(kp *fixture.KeyPair) *client {
	e.t.Helper()
	hc, err := e.s.Client(kp)
	require.NoError(e.t, err)
	return &client{t: e.t, hc: hc, base: e.s.APIURL}
}

// client speaks the v1 API.
type client struct {
	t    *testing.T
	hc   *http.Client
	base string
}

func (c *client) do(method, path string, body any, hdr map[string]string) (*http.Response, []byte) {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(c.t, err)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, r)
	require.NoError(c.t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return resp, b
}

// submit posts a job and requires 202.
func (c *client) submit(req schemas.JobRequest, hdr map[string]string) schemas.Job {
	c.t.Helper()
	resp, b := c.do(http.MethodPost, "/v1/jobs", req, hdr)
	require.Equal(c.t, http.StatusAccepted, resp.StatusCode, "submit: %s", b)
	var j schemas.Job
	require.NoError(c.t, json.Unmarshal(b, &j))
	require.Equal(c.t, "/v1/jobs/"+j.ID, resp.Header.Get("Location"))
	return j
}

// get returns a job, long-polling with wait when non-zero.
func (c *client) get(id string, wait time.Duration) (schemas.Job, int) {
	c.t.Helper()
	path := "/v1/jobs/" + id
	if wait > 0 {
		path += "?wait=" + wait.String()
	}
	resp, b := c.do(http.MethodGet, path, nil, nil)
	var j schemas.Job
	if resp.StatusCode == http.StatusOK {
		require.NoError(c.t, json.Unmarshal(b, &j), "%s", b)
	}
	return j, resp.StatusCode
}

// waitFor long-polls a job until cond holds or the deadline passes.
func (c *client) waitFor(id string, within time.Duration, cond func(schemas.Job) bool) schemas.Job {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		j, code := c.get(id, 5*time.Second)
		if code == http.StatusOK && cond(j) {
			return j
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("job %s: condition not met within %s; last status %q (HTTP %d), error %+v", id, within, j.Status, code, j.Error)
		}
	}
}

func (c *client) waitDone(id string) schemas.Job {
	c.t.Helper()
	return c.waitFor(id, 2*time.Minute, func(j schemas.Job) bool { return j.Status.Terminal() })
}

func (c *client) result(id, accept string) (*http.Response, []byte) {
	c.t.Helper()
	return c.do(http.MethodGet, "/v1/jobs/"+id+"/result", nil, map[string]string{"Accept": accept})
}

func scan(image string) schemas.JobRequest {
	return schemas.JobRequest{Type: schemas.JobTypeImageScan, Target: schemas.Target{Image: image}}
}

func noCache(r schemas.JobRequest) schemas.JobRequest {
	f := false
	r.Cache = &f
	return r
}

func bulk(r schemas.JobRequest) schemas.JobRequest {
	r.Lane = schemas.LaneBulk
	return r
}

// waitCount waits until want messages on subject of stream contain needle,
// then checks no more arrived: announcements such as a job's completion
// trail the state the API already shows.
func (e *env) waitCount(want int, stream, subject, needle string, msgAndArgs ...any) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := e.countMsgs(stream, subject, needle)
		if n >= want || time.Now().After(deadline) {
			require.Equal(e.t, want, n, msgAndArgs...)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// countMsgs counts the messages on subject in stream whose body contains needle.
func (e *env) countMsgs(stream, subject, needle string) int {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := e.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	require.NoError(e.t, err)
	info, err := e.js.Stream(ctx, stream)
	require.NoError(e.t, err)
	si, err := info.Info(ctx, jetstream.WithSubjectFilter(subject))
	require.NoError(e.t, err)
	total := si.State.Subjects[subject]
	n := 0
	for i := uint64(0); i < total; i++ {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(e.t, err)
		if strings.Contains(string(m.Data()), needle) {
			n++
		}
	}
	return n
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("must: %v", err))
	}
	return v
}
