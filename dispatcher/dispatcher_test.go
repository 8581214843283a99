package dispatcher_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"ciss.dev/dispatcher"
	"ciss.dev/schemas"
)

const routingTrivy = `version: 1
tools:
  - name: trivy
    job_types: [image-scan]
routes:
  - job_type: image-scan
    primary: trivy
`

const routingGrype = `version: 1
tools:
  - name: trivy
    job_types: [image-scan]
  - name: grype
    job_types: [image-scan]
routes:
  - job_type: image-scan
    primary: grype
`

// env is one test's dispatcher on its own embedded JetStream server.
type env struct {
	d       *dispatcher.Dispatcher
	js      jetstream.JetStream
	nc      *nats.Conn
	routing string // routing file path
	subs    string // subscription file path, if any
}

// startServer runs an embedded JetStream server on a random port with its
// store in t.TempDir() and returns its client URL.
func startServer(t *testing.T) string {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
	})
	require.NoError(t, err)
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	require.True(t, ns.ReadyForConnections(10*time.Second), "nats-server not ready")
	return ns.ClientURL()
}

// setup starts a server and a dispatcher with the given routing, and a client
// connection for the test. Cleanup stops the dispatcher before the server.
func setup(t *testing.T, routing string) *env { return setupWith(t, routing, "") }

// setupWith is setup with a subscription file (none when subs is empty).
func setupWith(t *testing.T, routing, subs string) *env {
	t.Helper()
	log := testLogger(t)
	url := startServer(t)
	path := filepath.Join(t.TempDir(), "routing.yaml")
	require.NoError(t, os.WriteFile(path, []byte(routing), 0o600))
	var subsPath string
	if subs != "" {
		subsPath = filepath.Join(t.TempDir(), "subscriptions.yaml")
		require.NoError(t, os.WriteFile(subsPath, []byte(subs), 0o600))
	}
	d, err := dispatcher.New(dispatcher.Config{
		NATSURL:           url,
		RoutingFile:       path,
		SubscriptionsFile: subsPath,
		AdminAddr:         "-",
		ReloadInterval:    time.Hour, // reloads are triggered explicitly
		Concurrency:       2,
		Logger:            log,
	})
	require.NoError(t, err)
	require.NoError(t, d.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := contextWithTimeout(10 * time.Second)
		defer cancel()
		require.NoError(t, d.Stop(ctx))
	})
	nc, js := connectJS(t, url)
	return &env{d: d, js: js, nc: nc, routing: path, subs: subsPath}
}

// newJobID returns a random UUID in canonical form.
func newJobID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func newJob(tenant string) schemas.Job {
	now := time.Now().UTC()
	return schemas.Job{
		ID: newJobID(), Tenant: tenant, Type: schemas.JobTypeImageScan,
		Target: schemas.Target{Image: "registry.example.com/team/app:1.0"},
		Params: map[string]string{"severity": "HIGH"},
		Lane:   schemas.LaneInteractive, Cache: true, Status: schemas.StatusQueued,
		RequestedBy: "spiffe://ciss/test", CreatedAt: now, UpdatedAt: now,
	}
}

// publishJob publishes a job request as the gateway does and returns its
// stream sequence.
func (e *env) publishJob(t *testing.T, job schemas.Job, msgID string) uint64 {
	t.Helper()
	b, err := schemas.Marshal(schemas.TypeJobRequested, "/ciss/test", job.ID, job)
	require.NoError(t, err)
	return e.publish(t, schemas.SubjectJobRequested(job.Lane), b, msgID)
}

func (e *env) publish(t *testing.T, subject string, b []byte, msgID string) uint64 {
	t.Helper()
	ack, err := e.js.Publish(t.Context(), subject, b, jetstream.WithMsgID(msgID))
	require.NoError(t, err)
	require.False(t, ack.Duplicate, "test message %s deduplicated", msgID)
	return ack.Sequence
}

// waitSettled waits until durable on stream has acknowledged (or terminated)
// every message up to seq and has nothing pending or awaiting ack.
func (e *env) waitSettled(t *testing.T, stream, durable string, seq uint64) *jetstream.ConsumerInfo {
	t.Helper()
	var info *jetstream.ConsumerInfo
	eventually(t, 10*time.Second, func() error {
		c, err := e.js.Consumer(t.Context(), stream, durable)
		if err != nil {
			return err
		}
		info, err = c.Info(t.Context())
		if err != nil {
			return err
		}
		if info.AckFloor.Stream < seq || info.NumAckPending > 0 || info.NumPending > 0 {
			return fmt.Errorf("%s: ack floor %d < %d or %d awaiting ack, %d pending",
				durable, info.AckFloor.Stream, seq, info.NumAckPending, info.NumPending)
		}
		return nil
	})
	return info
}

// count is the number of messages stored on subject (wildcards allowed).
func (e *env) count(t *testing.T, stream, subject string) uint64 {
	t.Helper()
	s, err := e.js.Stream(t.Context(), stream)
	require.NoError(t, err)
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	require.NoError(t, err)
	var n uint64
	for _, c := range info.State.Subjects { // subject may be a wildcard
		n += c
	}
	return n
}

// job reads a job's state from the bucket.
func (e *env) job(t *testing.T, tenant, id string) (schemas.Job, error) {
	t.Helper()
	kv, err := e.js.KeyValue(t.Context(), schemas.BucketJobs)
	require.NoError(t, err)
	entry, err := kv.Get(t.Context(), schemas.JobKey(tenant, id))
	if err != nil {
		return schemas.Job{}, err
	}
	var j schemas.Job
	require.NoError(t, json.Unmarshal(entry.Value(), &j))
	return j, nil
}

// waitJob polls the job state until ok accepts it.
func (e *env) waitJob(t *testing.T, tenant, id string, ok func(schemas.Job) error) schemas.Job {
	t.Helper()
	var j schemas.Job
	eventually(t, 10*time.Second, func() error {
		var err error
		if j, err = e.job(t, tenant, id); err != nil {
			return err
		}
		return ok(j)
	})
	return j
}

func statusIs(s schemas.Status) func(schemas.Job) error {
	return func(j schemas.Job) error {
		if j.Status != s {
			return fmt.Errorf("status %s, want %s", j.Status, s)
		}
		return nil
	}
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			require.NoError(t, err, "condition not met within %s", timeout)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-tick.C:
		}
	}
}

// msgs returns the stored messages on subject, oldest first.
func (e *env) msgs(t *testing.T, stream, subject string) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := e.js.Stream(t.Context(), stream)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	var seq uint64 = 1
	for {
		m, err := s.GetMsg(t.Context(), seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		require.NoError(t, err)
		out = append(out, m)
		seq = m.Sequence + 1
	}
}

// publishEvent publishes data as a CloudEvent of type typ and returns its
// stream sequence.
func (e *env) publishEvent(t *testing.T, subject, typ, msgID string, data any) uint64 {
	t.Helper()
	b, err := schemas.Marshal(typ, "/ciss/test", msgID, data)
	require.NoError(t, err)
	return e.publish(t, subject, b, msgID)
}

// contextWithTimeout is for cleanups, which run after t.Context() has ended.
func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func connectJS(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

// hex64 is a 64-character hex string of c.
func hex64(c byte) string { return strings.Repeat(string(c), 64) }

// testLogger logs to the test's output until the test and its cleanups are
// done; NATS callbacks that fire later (disconnect on drain) are dropped
// instead of panicking.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{out: t.Output()}
	t.Cleanup(w.close) // registered first, so it runs last
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	out  io.Writer
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	return w.out.Write(p)
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}
