package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ciss.dev/gateway"
	"ciss.dev/gateway/internal/certtest"
	"ciss.dev/gateway/internal/problem"
	"ciss.dev/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// Identities used across tests. The SPIFFE IDs and subjects are matched by
// defaultPolicy.
const (
	acmeSPIFFE   = "spiffe://ciss.dev/tenant/acme/ci"
	globexSPIFFE = "spiffe://ciss.dev/tenant/globex/ci"
)

const defaultPolicy = `version: 1
bindings:
  - name: acme-ci
    match: {spiffe_id: "spiffe://ciss.dev/tenant/acme/*"}
    tenant: acme
    roles: [submitter, reader]
  - name: acme-reader
    match: {cn: "reader", o: "Acme"}
    tenant: acme
    roles: [reader]
  - name: globex-ci
    match: {spiffe_id: "spiffe://ciss.dev/tenant/globex/*"}
    tenant: globex
    roles: [admin]
`

const validRequest = `{"type":"image-scan","target":{"image":"registry.example:5000/app/web:1.2"}}`

// testLogger logs to t until the test ends; later lines (from goroutines
// winding down) are dropped instead of panicking.
func testLogger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not a wait for an outcome
	}
}

// natsServer is an embedded JetStream server that can be restarted on the
// same port and store.
type natsServer struct {
	t     testing.TB
	opts  server.Options
	srv   *server.Server
	mu    sync.Mutex
	alive bool
}

func startNATS(t testing.TB) *natsServer {
	t.Helper()
	n := &natsServer{t: t, opts: server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true,
	}}
	n.start()
	n.opts.Port = n.srv.Addr().(*net.TCPAddr).Port // restarts reuse it
	t.Cleanup(n.shutdown)
	return n
}

func (n *natsServer) start() {
	n.t.Helper()
	opts := n.opts
	srv, err := server.NewServer(&opts)
	require.NoError(n.t, err)
	go srv.Start()
	require.True(n.t, srv.ReadyForConnections(10*time.Second), "nats-server not ready")
	n.mu.Lock()
	n.srv, n.alive = srv, true
	n.mu.Unlock()
}

func (n *natsServer) shutdown() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.alive {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.alive = false
	}
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port) }

// jsHandles are the test's own view of the topology the dispatcher would own.
type jsHandles struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
	obj    jetstream.ObjectStore
}

// connectJS connects the test itself to n (reconnecting across restarts).
func connectJS(t testing.TB, n *natsServer) *jsHandles {
	t.Helper()
	nc, err := nats.Connect(n.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return &jsHandles{nc: nc, js: js}
}

// createTopology creates the stream, bucket and object store as the
// dispatcher does.
func (h *jsHandles) createTopology(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	h.stream, err = h.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: schemas.StreamJobs, Subjects: []string{"ciss.jobs.>"}, Storage: jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	})
	require.NoError(t, err)
	h.kv, err = h.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketJobs, History: 5})
	require.NoError(t, err)
	h.obj, err = h.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: schemas.ObjectReports})
	require.NoError(t, err)
}

// streamMsgs is the number of messages in the jobs stream.
func (h *jsHandles) streamMsgs(t testing.TB) uint64 {
	t.Helper()
	info, err := h.stream.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

// getJob reads a job's state as stored.
func (h *jsHandles) getJob(t testing.TB, tenant, id string) (schemas.Job, uint64) {
	t.Helper()
	e, err := h.kv.Get(context.Background(), schemas.JobKey(tenant, id))
	require.NoError(t, err)
	var j schemas.Job
	require.NoError(t, json.Unmarshal(e.Value(), &j))
	return j, e.Revision()
}

// setJob changes a job's state as the dispatcher would.
func (h *jsHandles) setJob(t testing.TB, tenant, id string, mutate func(*schemas.Job)) {
	t.Helper()
	j, rev := h.getJob(t, tenant, id)
	mutate(&j)
	b, err := json.Marshal(j)
	require.NoError(t, err)
	_, err = h.kv.Update(context.Background(), schemas.JobKey(tenant, id), b, rev)
	require.NoError(t, err)
}

// env is one test's world: a CA, a NATS server with the topology, and a
// started gateway.
type env struct {
	t      testing.TB
	dir    string
	ca     *certtest.CA
	nats   *natsServer
	js     *jsHandles
	gw     *gateway.Gateway
	cfg    gateway.Config
	server *certtest.Leaf
}

type setupOpt struct {
	noTopology bool
	noWait     bool
	config     func(*gateway.Config)
}

// setup starts everything; the gateway is stopped when the test ends.
func setup(t testing.TB, opts ...setupOpt) *env {
	t.Helper()
	var o setupOpt
	for _, x := range opts {
		o.noTopology = o.noTopology || x.noTopology
		o.noWait = o.noWait || x.noWait
		if x.config != nil {
			o.config = x.config
		}
	}
	e := &env{t: t, dir: t.TempDir(), ca: certtest.NewCA(t, "ciss test CA")}
	e.server = e.ca.Server(t)
	e.cfg.TLSCertFile, e.cfg.TLSKeyFile = e.server.WriteFiles(t, e.dir, "server")
	e.cfg.ClientCAFile = filepath.Join(e.dir, "client-ca.pem")
	certtest.WriteFile(t, e.cfg.ClientCAFile, e.ca.PEM)
	e.cfg.PolicyFile = filepath.Join(e.dir, "policy.yaml")
	certtest.WriteFile(t, e.cfg.PolicyFile, []byte(defaultPolicy))
	e.cfg.APIAddr, e.cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	e.cfg.Logger = testLogger(t)
	e.cfg.MaxWait = 30 * time.Second
	e.nats = startNATS(t)
	e.cfg.NATSURL = e.nats.url()
	e.js = connectJS(t, e.nats)
	if !o.noTopology {
		e.js.createTopology(t)
	}
	if o.config != nil {
		o.config(&e.cfg)
	}
	gw, err := gateway.New(e.cfg)
	require.NoError(t, err)
	require.NoError(t, gw.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, gw.Stop(ctx))
	})
	e.gw = gw
	if !o.noWait {
		e.waitReady(true)
	}
	return e
}

func (e *env) readyz() int {
	resp, err := http.Get("http://" + e.gw.AdminAddr() + "/readyz")
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// waitReady polls /readyz until it reports ready (or not ready).
func (e *env) waitReady(ready bool) {
	e.t.Helper()
	want := map[bool]int{true: http.StatusOK, false: http.StatusServiceUnavailable}[ready]
	eventually(e.t, 15*time.Second, fmt.Sprintf("/readyz %d", want), func() bool { return e.readyz() == want })
}

// Client certificates.
func (e *env) acme() *certtest.Leaf {
	return e.ca.Issue(e.t, certtest.Options{CommonName: "acme-ci", URIs: []string{acmeSPIFFE}})
}

func (e *env) globex() *certtest.Leaf {
	return e.ca.Issue(e.t, certtest.Options{URIs: []string{globexSPIFFE}})
}

func (e *env) acmeReader() *certtest.Leaf {
	return e.ca.Issue(e.t, certtest.Options{CommonName: "reader", Organization: []string{"Acme"}})
}

func (e *env) nobody() *certtest.Leaf {
	return e.ca.Issue(e.t, certtest.Options{CommonName: "nobody", Organization: []string{"Nowhere"}})
}

// client talks to the gateway's API with a client certificate (nil: none).
type client struct {
	t    testing.TB
	http *http.Client
	base string
}

func (e *env) client(leaf *certtest.Leaf) *client {
	e.t.Helper()
	cfg := &tls.Config{RootCAs: e.ca.Pool(), MinVersion: tls.VersionTLS13}
	if leaf != nil {
		// Always present the certificate, even when the server's list of
		// acceptable CAs does not name its issuer (crypto/tls would otherwise
		// send none), so that the server's verification is what is tested.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &leaf.TLS, nil }
	}
	tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 4}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &client{t: e.t, http: &http.Client{Transport: tr, Timeout: 60 * time.Second}, base: "https://" + e.gw.APIAddr()}
}

type response struct {
	*http.Response
	body []byte
}

// try sends a request; hdr is name, value pairs.
func (c *client) try(method, path, body string, hdr ...string) (*response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &response{Response: resp, body: b}, nil
}

func (c *client) do(method, path, body string, hdr ...string) *response {
	c.t.Helper()
	r, err := c.try(method, path, body, hdr...)
	require.NoError(c.t, err)
	return r
}

// submit posts validRequest (or body) and requires 202.
func (c *client) submit(body string, hdr ...string) schemas.Job {
	c.t.Helper()
	if body == "" {
		body = validRequest
	}
	r := c.do(http.MethodPost, "/v1/jobs", body, hdr...)
	require.Equal(c.t, http.StatusAccepted, r.StatusCode, "%s", r.body)
	return r.job()
}

func (r *response) job() schemas.Job {
	var j schemas.Job
	if err := schemas.DecodeStrict(r.body, &j); err != nil {
		panic(fmt.Sprintf("not a job: %v: %s", err, r.body))
	}
	return j
}

// problem decodes a problem document and checks status and slug.
func (r *response) problem(t testing.TB, status int, slug string) problem.Problem {
	t.Helper()
	require.Equal(t, status, r.StatusCode, "%s", r.body)
	require.Equal(t, problem.MediaType, r.Header.Get("Content-Type"))
	var p problem.Problem
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&p))
	require.Equal(t, problem.TypePrefix+slug, p.Type, "%s", r.body)
	require.Equal(t, status, p.Status)
	require.NotEmpty(t, p.Title)
	return p
}

// writeFile is certtest.WriteFile for non-PEM content.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	certtest.WriteFile(t, path, []byte(content))
	_, err := os.Stat(path)
	require.NoError(t, err)
}
