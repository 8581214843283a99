package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ciss.dev/gateway"
	"ciss.dev/gateway/internal/certtest"
	"ciss.dev/gateway/internal/cli"
	"ciss.dev/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

const policy = `version: 1
bindings:
  - name: acme-ci
    match: {spiffe_id: "spiffe://ciss.dev/tenant/acme/ci"}
    tenant: acme
    roles: [submitter, reader]
  - name: acme-reader
    match: {cn: "reader", o: "Acme"}
    tenant: acme
    roles: [reader]
`

const image = "registry.example.com:5000/team/app@sha256:9a3b0f7f6f4a6a0c8f3f4b6c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e"

// bundle is one test's world: a real gateway on embedded JetStream, the
// files a pipeline would have, and the test's own view of the job state.
type bundle struct {
	t      *testing.T
	dir    string
	ca     *certtest.CA
	caFile string
	cfg    gateway.Config
	gw     *gateway.Gateway
	kv     jetstream.KeyValue
	obj    jetstream.ObjectStore
	url    string
	cert   string // acme-ci client certificate and key
	key    string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{t: t, dir: t.TempDir(), ca: certtest.NewCA(t, "ciss test CA")}
	b.caFile = filepath.Join(b.dir, "ca.pem")
	certtest.WriteFile(t, b.caFile, b.ca.PEM)
	b.cfg.TLSCertFile, b.cfg.TLSKeyFile = b.ca.Server(t).WriteFiles(t, b.dir, "server")
	b.cfg.ClientCAFile = b.caFile
	b.cfg.PolicyFile = filepath.Join(b.dir, "policy.yaml")
	certtest.WriteFile(t, b.cfg.PolicyFile, []byte(policy))
	b.cfg.APIAddr, b.cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(ns.Shutdown)
	b.cfg.NATSURL = "nats://" + ns.Addr().String()
	nc, err := nats.Connect(b.cfg.NATSURL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: schemas.StreamJobs, Subjects: []string{"ciss.jobs.>"}, Duplicates: 2 * time.Minute})
	require.NoError(t, err)
	b.kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketJobs, History: 5})
	require.NoError(t, err)
	b.obj, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: schemas.ObjectReports})
	require.NoError(t, err)

	b.startGateway()
	b.url = "https://" + b.gw.APIAddr()
	b.cert, b.key = b.ca.Issue(t, certtest.Options{CommonName: "acme-ci", URIs: []string{"spiffe://ciss.dev/tenant/acme/ci"}}).WriteFiles(t, b.dir, "acme")
	return b
}

// startGateway starts a gateway (again on the same address after a stop)
// and waits until it is ready.
func (b *bundle) startGateway() {
	b.t.Helper()
	gw, err := gateway.New(b.cfg)
	require.NoError(b.t, err)
	require.NoError(b.t, gw.Start(context.Background()))
	b.gw = gw
	b.cfg.APIAddr = gw.APIAddr() // a restart binds the same port
	b.t.Cleanup(func() { _ = gw.Stop(context.Background()) })
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", gw.AdminAddr())
		if err == nil {
			_ = c.Close()
			break
		}
		require.True(b.t, time.Now().Before(deadline), "gateway admin not up")
		time.Sleep(10 * time.Millisecond)
	}
}

// env is the process environment the CLI sees: the acme-ci identity.
func (b *bundle) env() map[string]string {
	return map[string]string{cli.EnvURL: b.url, cli.EnvCert: b.cert, cli.EnvKey: b.key, cli.EnvCA: b.caFile}
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs the CLI with the given environment.
func run(env map[string]string, args ...string) result {
	return runWith(cli.Env{}, env, args...)
}

func runWith(e cli.Env, env map[string]string, args ...string) result {
	var out, errb syncBuffer
	e.Stdout, e.Stderr = &out, &errb
	e.LookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	e.MinBackoff = 20 * time.Millisecond
	code := cli.Run(context.Background(), args, e)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitJob polls the job state bucket until acme has exactly one job.
func (b *bundle) waitJob() string {
	b.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		keys, err := b.kv.ListKeys(context.Background())
		require.NoError(b.t, err)
		var ids []string
		for k := range keys.Keys() {
			ids = append(ids, strings.TrimPrefix(k, "acme."))
		}
		if len(ids) == 1 {
			return ids[0]
		}
		require.True(b.t, time.Now().Before(deadline), "no job appeared")
		time.Sleep(10 * time.Millisecond)
	}
}

func (b *bundle) setJob(id string, mutate func(*schemas.Job)) {
	b.t.Helper()
	ctx := context.Background()
	e, err := b.kv.Get(ctx, "acme."+id)
	require.NoError(b.t, err)
	var j schemas.Job
	require.NoError(b.t, json.Unmarshal(e.Value(), &j))
	mutate(&j)
	v, err := json.Marshal(j)
	require.NoError(b.t, err)
	_, err = b.kv.Update(ctx, "acme."+id, v, e.Revision())
	require.NoError(b.t, err)
}

// complete stores the testdata reports and marks the job succeeded.
func (b *bundle) complete(id string, s schemas.Summary) {
	b.t.Helper()
	var reports []schemas.Report
	for _, f := range []struct{ format, mt, file string }{
		{schemas.FormatNative, schemas.MediaTypeJSON, "trivy.json"},
		{schemas.FormatSARIF, schemas.MediaTypeSARIF, "trivy.sarif.json"},
	} {
		doc, err := os.ReadFile(filepath.Join("..", "report", "testdata", f.file))
		require.NoError(b.t, err)
		sum := sha256.Sum256(doc)
		name := "sha256/" + hex.EncodeToString(sum[:])
		_, err = b.obj.PutBytes(context.Background(), name, doc)
		require.NoError(b.t, err)
		reports = append(reports, schemas.Report{Format: f.format, MediaType: f.mt, Object: name,
			Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(doc))})
	}
	b.setJob(id, func(j *schemas.Job) {
		now := time.Now().UTC()
		j.Status, j.Tool, j.ToolVersion, j.FinishedAt = schemas.StatusSucceeded, "trivy", "0.69.0", &now
		j.Result = &schemas.Result{Summary: s, Reports: reports}
	})
}

var sixFindings = schemas.Summary{Critical: 1, High: 2, Medium: 1, Low: 1, Unknown: 1}

func TestSubmitPrintsTheJobID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := run(b.env(), "submit", "image-scan", "--image", image, "--param", "severity=HIGH")
	require.Equal(t, cli.ExitOK, r.code, r.stderr)
	id := strings.TrimSpace(r.stdout)
	require.True(t, schemas.ValidJobID(id), r.stdout)
	require.Empty(t, r.stderr, "not a terminal: nothing but the id")
	require.Equal(t, id, b.waitJob())

	r = run(b.env(), "status", id, "--output", "json")
	require.Equal(t, cli.ExitOK, r.code, r.stderr)
	var j schemas.Job
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &j))
	require.Equal(t, map[string]string{"severity": "HIGH"}, j.Params)
	require.Equal(t, schemas.StatusQueued, j.Status)

	r = run(b.env(), "jobs", "--status", "queued")
	require.Equal(t, cli.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, id)
	r = run(b.env(), "jobs", "--status", "succeeded")
	require.NotContains(t, r.stdout, id)

	r = run(b.env(), "result", id)
	require.Equal(t, cli.ExitUsage, r.code)
	require.Contains(t, r.stderr, "no result yet")

	r = run(b.env(), "cancel", id)
	require.Equal(t, cli.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "cancelled")
	r = run(b.env(), "cancel", id)
	require.Equal(t, cli.ExitUsage, r.code)
	require.Equal(t, "ciss: cannot cancel: job is already cancelled\n", r.stderr)
}

// TestWaitFailOn: --wait follows the job to the end; --fail-on turns findings
// at or above the threshold into exit 1 with a summary; below it, exit 0.
func TestWaitFailOn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	out := filepath.Join(b.dir, "ciss.sarif")
	done := make(chan result, 1)
	go func() {
		done <- run(b.env(), "submit", "image-scan", "--image", image, "--wait", "--fail-on", "high",
			"--output", "sarif", "--out", out)
	}()
	id := b.waitJob()
	b.setJob(id, func(j *schemas.Job) { j.Status = schemas.StatusRunning })
	b.complete(id, sixFindings)
	r := <-done
	require.Equal(t, cli.ExitPolicy, r.code, r.stderr)
	require.Equal(t, "ciss: policy failure: 3 finding(s) at or above HIGH in job "+id+"\n", r.stderr)
	want, err := os.ReadFile(filepath.Join("testdata", "summary.golden"))
	require.NoError(t, err)
	require.Equal(t, string(want), r.stdout, "with --out the summary table goes to stdout")
	sarif, err := os.ReadFile(out)
	require.NoError(t, err)
	want, err = os.ReadFile(filepath.Join("..", "report", "testdata", "trivy.sarif.json"))
	require.NoError(t, err)
	require.Equal(t, want, sarif)

	// The same finished job through result: critical passes at 1 finding? No:
	// 1 critical fails --fail-on critical; nothing is at or above a threshold
	// only when the counts are zero, which the clean run below shows.
	r = run(b.env(), "result", id, "--fail-on", "critical")
	require.Equal(t, cli.ExitPolicy, r.code)
	require.Contains(t, r.stdout, "CVE-2024-5535", "the table lists the findings")
	r = run(b.env(), "result", id, "--output", "json", "--fail-on", "critical")
	require.Equal(t, cli.ExitPolicy, r.code)
	require.Contains(t, r.stdout, `"SchemaVersion": 2`, "stdout holds only the native report")
	require.Contains(t, r.stderr, "SEVERITY  COUNT", "the summary goes to stderr when stdout is the report")
	r = run(b.env(), "result", id, "--output", "table")
	require.Equal(t, cli.ExitOK, r.code, "no --fail-on: findings do not fail")
	require.Contains(t, r.stdout, "TOTAL     6")

	b2 := setup(t)
	go func() {
		done <- run(b2.env(), "submit", "image-scan", "--image", image, "--wait", "--fail-on", "critical")
	}()
	id2 := b2.waitJob()
	b2.complete(id2, schemas.Summary{High: 2})
	r = <-done
	require.Equal(t, cli.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "HIGH      2")
}

// TestWaitSurvivesGatewayRestart: the gateway goes away mid-wait and comes
// back on the same address; the CLI retries and still reports the result.
func TestWaitSurvivesGatewayRestart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	done := make(chan result, 1)
	go func() {
		done <- run(b.env(), "submit", "image-scan", "--image", image, "--wait", "--output", "json", "--timeout", "1m")
	}()
	id := b.waitJob()
	// Stop answers the CLI's pending long-poll; its next request finds the
	// port closed and backs off until the new gateway is up.
	require.NoError(t, b.gw.Stop(context.Background()))
	b.complete(id, sixFindings)
	b.startGateway()
	r := <-done
	require.Equal(t, cli.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, `"SchemaVersion": 2`)
	require.Empty(t, r.stderr, "retries are silent off a terminal")
}

func TestTerminalProgress(t *testing.T) {
	t.Parallel()
	b := setup(t)
	done := make(chan result, 1)
	go func() {
		done <- runWith(cli.Env{Interactive: true}, b.env(), "submit", "image-scan", "--image", image, "--wait")
	}()
	id := b.waitJob()
	b.setJob(id, func(j *schemas.Job) { j.Status, j.Tool = schemas.StatusRunning, "trivy" })
	b.complete(id, sixFindings)
	r := <-done
	require.Equal(t, cli.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stderr, "submitted job "+id)
	// Intermediate states are printed as the CLI observes them; a poll may
	// skip one (here the job moves on at once), so only the ends are certain.
	require.Contains(t, r.stderr, "job "+id+" succeeded")
	require.Regexp(t, `\[\s+\d+m?\d*s\] `, r.stderr, "lines carry the elapsed time")
}

// TestErrors: the common mistakes each give one clear line and exit 2; an
// unreachable gateway exits 3 after retrying until --timeout.
func TestErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := certtest.NewCA(t, "other CA")
	otherCA := filepath.Join(b.dir, "other-ca.pem")
	certtest.WriteFile(t, otherCA, other.PEM)
	foreignCert, foreignKey := other.Issue(t, certtest.Options{CommonName: "x", URIs: []string{"spiffe://ciss.dev/tenant/acme/ci"}}).WriteFiles(t, b.dir, "foreign")
	expiredCert, expiredKey := b.ca.Issue(t, certtest.Options{URIs: []string{"spiffe://ciss.dev/tenant/acme/ci"},
		NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}).WriteFiles(t, b.dir, "expired")
	readerCert, readerKey := b.ca.Issue(t, certtest.Options{CommonName: "reader", Organization: []string{"Acme"}}).WriteFiles(t, b.dir, "reader")
	with := func(kv ...string) map[string]string {
		env := b.env()
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedURL := "https://" + closed.Addr().String()
	require.NoError(t, closed.Close())
	submit := []string{"submit", "image-scan", "--image", image}

	for _, tc := range []struct {
		name string
		env  map[string]string
		now  func() time.Time
		args []string
		code int
		want string
	}{
		{"wrong CA", with(cli.EnvCA, otherCA), nil, submit, cli.ExitUsage,
			"ciss: server certificate not trusted by CA " + otherCA + "\n"},
		{"expired certificate, seen locally", with(cli.EnvCert, expiredCert, cli.EnvKey, expiredKey), nil, submit, cli.ExitUsage,
			"ciss: client certificate " + expiredCert + " expired on "},
		{"expired certificate, refused by the gateway", with(cli.EnvCert, expiredCert, cli.EnvKey, expiredKey),
			func() time.Time { return time.Now().Add(-48 * time.Hour) }, submit, cli.ExitUsage,
			"ciss: the gateway rejected the client certificate as expired (renew it)\n"},
		{"certificate of another CA", with(cli.EnvCert, foreignCert, cli.EnvKey, foreignKey), nil, submit, cli.ExitUsage,
			"ciss: the gateway does not trust the client certificate's issuer"},
		{"no permission", with(cli.EnvCert, readerCert, cli.EnvKey, readerKey), nil, submit, cli.ExitUsage,
			`ciss: identity CN=reader,O=Acme has no permission for submit: binding "acme-reader" does not allow submit` + "\n"},
		{"unknown job type", b.env(), nil, []string{"submit", "dast", "--image", image}, cli.ExitUsage,
			`ciss: the gateway refused the request: invalid request: type: unknown job type "dast"; one of image-scan, sbom, sast, vault-auth-onboard, vault-namespace-create, vault-policy-apply (HTTP 422)` + "\n"},
		{"short commit", b.env(), nil, []string{"submit", "sast", "--repo", "https://git.example.com/a.git", "--commit", "abc123"}, cli.ExitUsage,
			`ciss: the gateway refused the request: invalid request: target.commit: must be a full 40-character lower-case hex commit SHA (HTTP 422)` + "\n"},
		{"repo with credentials", b.env(), nil, []string{"submit", "sast", "--repo", "https://bot:secret@git.example.com/a.git", "--commit", strings.Repeat("ab", 20)}, cli.ExitUsage,
			`ciss: the gateway refused the request: invalid request: target.repo: must not carry credentials`},
		{"invalid image", b.env(), nil, []string{"submit", "image-scan", "--image", "alpine"}, cli.ExitUsage,
			"ciss: the gateway refused the request: invalid request: target.image: "},
		{"unknown job", b.env(), nil, []string{"status", "0194649e-5a10-7c3e-9b2a-6f1d2c3b4a59"}, cli.ExitUsage,
			"ciss: the gateway refused the request: job not found (HTTP 404)\n"},
		{"not a job id", b.env(), nil, []string{"status", "../jobs"}, cli.ExitUsage, `ciss: job id "../jobs" is not a job id`},
		{"no URL", map[string]string{}, nil, submit, cli.ExitUsage, "ciss: URL is required (flag --url or CISS_URL)\n"},
		{"bad flag", b.env(), nil, []string{"submit", "image-scan", "--nope"}, cli.ExitUsage, "flag provided but not defined: -nope"},
		{"bad fail-on", b.env(), nil, append(submit, "--wait", "--fail-on", "severe"), cli.ExitUsage, `ciss: --fail-on "severe": want critical`},
		{"fail-on without wait", b.env(), nil, append(submit, "--fail-on", "high"), cli.ExitUsage, "ciss: --fail-on and --out need --wait"},
		{"unknown command", b.env(), nil, []string{"scan"}, cli.ExitUsage, `ciss: unknown command "scan"`},
		{"gateway unreachable", with(cli.EnvURL, closedURL), nil, append(submit, "--timeout", "1s"), cli.ExitService,
			"ciss: timed out after 1s (--timeout); last error: POST /v1/jobs: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runWith(cli.Env{Now: tc.now}, tc.env, tc.args...)
			require.Equal(t, tc.code, r.code, "stderr: %s", r.stderr)
			require.Contains(t, r.stderr, tc.want)
			require.Empty(t, r.stdout)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			require.True(t, strings.HasPrefix(lines[len(lines)-1], "ciss: "), "the error is the last line: %q", r.stderr)
		})
	}
}

// TestFailedJob: a job that fails exits 3 with the job's error.
func TestFailedJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	done := make(chan result, 1)
	go func() { done <- run(b.env(), "submit", "image-scan", "--image", image, "--wait") }()
	id := b.waitJob()
	b.setJob(id, func(j *schemas.Job) {
		j.Status, j.Error = schemas.StatusFailed, &schemas.Error{Code: schemas.CodeTargetNotFound, Message: "manifest unknown"}
	})
	r := <-done
	require.Equal(t, cli.ExitService, r.code)
	require.Equal(t, "ciss: job "+id+" failed: target_not_found: manifest unknown\n", r.stderr)
	r = run(b.env(), "status", id, "--wait")
	require.Equal(t, cli.ExitService, r.code)
	require.Contains(t, r.stdout, "target_not_found")
}
