package workers_test

// Integration tests of the Worker on a real embedded JetStream server, with a
// fake Tool and a fake Resolver. The fake tool is the unit-test seam for the
// queueing, caching, storage and settlement logic; the real Trivy path
// (registry, DB, CLI) is covered by the e2e tests in test/e2e.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/workers"
)

const (
	toolName    = "fake"
	testImage   = "registry.example.com/team/app:1.0"
	imageDigest = "sha256:9a3b0f7f6f4a6a0c8f3f4b6c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e"
)

var toolVersion = workers.ToolVersion{Tool: "1.0.0", Data: "db-2025-01-14"}

// fakeTool is a workers.Tool whose Run is a test function. It writes a report
// into the task directory unless run says otherwise.
type fakeTool struct {
	name  string // default toolName
	calls atomic.Int32
	run   func(ctx context.Context, in workers.Input, dir string, call int) (workers.Output, error)
}

var _ workers.Tool = (*fakeTool)(nil)

func (f *fakeTool) Name() string {
	if f.name != "" {
		return f.name
	}
	return toolName
}

func (*fakeTool) Version(context.Context) (workers.ToolVersion, error) { return toolVersion, nil }

func (f *fakeTool) Run(ctx context.Context, in workers.Input, dir string) (workers.Output, error) {
	n := int(f.calls.Add(1))
	if f.run != nil {
		return f.run(ctx, in, dir, n)
	}
	return writeReport(in, dir)
}

// reportFor is the native report the fake tool writes for an input.
func reportFor(in workers.Input) []byte {
	return []byte(`{"SchemaVersion":2,"ArtifactName":"` + in.Image + `","Results":[]}`)
}

func writeReport(in workers.Input, dir string) (workers.Output, error) {
	p := filepath.Join(dir, "report.json")
	if err := os.WriteFile(p, reportFor(in), 0o600); err != nil {
		return workers.Output{}, err
	}
	return workers.Output{
		Summary: schemas.Summary{High: 1, Low: 2},
		Reports: []workers.OutputFile{{Format: schemas.FormatNative, MediaType: schemas.MediaTypeJSON, Path: p}},
	}, nil
}

// fakeResolver pins every reference to imageDigest, or fails with err.
type fakeResolver struct{ err error }

func (r fakeResolver) Resolve(context.Context, string) (string, error) {
	if r.err != nil {
		return "", r.err
	}
	return imageDigest, nil
}

// env is one test's JetStream server with the CISS topology.
type env struct {
	url     string
	nc      *nats.Conn
	js      jetstream.JetStream
	jobs    jetstream.KeyValue
	cache   jetstream.KeyValue
	reports jetstream.ObjectStore
	log     *slog.Logger
}

// setup starts an embedded JetStream server on a random port with its store in
// t.TempDir() and creates the topology the way dispatcher/internal/topology
// does (an internal package of another module, so the minimal configuration is
// repeated here).
func setup(t *testing.T) *env {
	t.Helper()
	log := testLogger(t)
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
	})
	require.NoError(t, err)
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	require.True(t, ns.ReadyForConnections(10*time.Second), "nats-server not ready")

	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := t.Context()
	stream := func(name string, retention jetstream.RetentionPolicy, subjects ...string) {
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: name, Subjects: subjects, Storage: jetstream.FileStorage, Retention: retention,
			MaxMsgSize: schemas.MaxEventSize, Duplicates: 10 * time.Minute,
		})
		require.NoError(t, err, name)
	}
	stream(schemas.StreamTasks, jetstream.WorkQueuePolicy, schemas.SubjectTasksPrefix+".>")
	stream(schemas.StreamResults, jetstream.LimitsPolicy, "ciss.results.>")
	stream(schemas.StreamDeadLetter, jetstream.LimitsPolicy, schemas.SubjectDeadLetterPrefix+".>")
	e := &env{url: ns.ClientURL(), nc: nc, js: js, log: log}
	e.jobs, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketJobs, History: 5, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	e.cache, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketResultCache, History: 1, TTL: 24 * time.Hour, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	e.reports, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: schemas.ObjectReports, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	return e
}

// startWorker starts a worker for tool; Stop runs at cleanup (before the
// server stops).
func (e *env) startWorker(t *testing.T, tool workers.Tool, edit func(*workers.Config)) *workers.Worker {
	t.Helper()
	cfg := workers.Config{
		NATSURL:     e.url,
		Tools:       []workers.Tool{tool},
		Concurrency: map[schemas.Lane]int{schemas.LaneInteractive: 2, schemas.LaneBulk: 1},
		AckWait:     3 * time.Second,
		TaskTimeout: 7 * time.Minute,
		WorkDir:     t.TempDir(),
		Resolver:    fakeResolver{},
		AdminAddr:   "-",
		Name:        "worker-1",
		Logger:      e.log,
	}
	if edit != nil {
		edit(&cfg)
	}
	w, err := workers.New(cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx) // a second Stop (after the test stopped it) is harmless
	})
	return w
}

func newJobID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// newTask returns a task of a fresh job, whose state is stored with status.
func (e *env) newTask(t *testing.T, status schemas.Status) schemas.Task {
	t.Helper()
	id := newJobID()
	task := schemas.Task{
		ID: schemas.TaskID(id, toolName), JobID: id, Tenant: "payments", Type: schemas.JobTypeImageScan,
		Tool: toolName, Role: schemas.RolePrimary, Target: schemas.Target{Image: testImage},
		Params: map[string]string{"severity": "HIGH"}, Lane: schemas.LaneInteractive, Cache: true,
		CreatedAt: time.Now().UTC(),
	}
	now := time.Now().UTC()
	b, err := json.Marshal(schemas.Job{
		ID: id, Tenant: task.Tenant, Type: task.Type, Target: task.Target, Params: task.Params, Lane: task.Lane,
		Cache: true, Status: status, Tool: toolName, Tasks: []schemas.TaskRef{{ID: task.ID, Tool: toolName, Role: schemas.RolePrimary, Status: schemas.StatusQueued}},
		CreatedAt: now, UpdatedAt: now,
	})
	require.NoError(t, err)
	_, err = e.jobs.Create(t.Context(), schemas.JobKey(task.Tenant, id), b)
	require.NoError(t, err)
	return task
}

// publishTask publishes a task as the dispatcher does and returns its sequence.
func (e *env) publishTask(t *testing.T, task schemas.Task) uint64 {
	t.Helper()
	b, err := schemas.Marshal(schemas.TypeTaskRequested, "/ciss/test", task.ID, task)
	require.NoError(t, err)
	ack, err := e.js.Publish(t.Context(), schemas.SubjectTask(task.Lane, task.Tool), b, jetstream.WithMsgID(task.ID))
	require.NoError(t, err)
	require.False(t, ack.Duplicate)
	return ack.Sequence
}

// waitEvent waits for the results-stream message with the given message id and
// returns it.
func (e *env) waitEvent(t *testing.T, msgID string) *jetstream.RawStreamMsg {
	t.Helper()
	var found *jetstream.RawStreamMsg
	eventually(t, 15*time.Second, func() error {
		for _, m := range e.msgs(t, schemas.StreamResults) {
			if m.Header.Get(jetstream.MsgIDHeader) == msgID {
				found = m
				return nil
			}
		}
		return fmt.Errorf("no result event %s", msgID)
	})
	return found
}

// result waits for a task's completed event.
func (e *env) result(t *testing.T, taskID string) (schemas.TaskResult, uint64) {
	t.Helper()
	m := e.waitEvent(t, taskID+".completed")
	var r schemas.TaskResult
	_, err := schemas.Unmarshal(m.Data, schemas.TypeTaskCompleted, &r)
	require.NoError(t, err)
	require.Equal(t, schemas.SubjectResultCompleted(r.Tool), m.Subject)
	return r, m.Sequence
}

// started waits for a task's started event of an attempt.
func (e *env) started(t *testing.T, taskID string, attempt int) (schemas.TaskStarted, uint64) {
	t.Helper()
	m := e.waitEvent(t, fmt.Sprintf("%s.started.%d", taskID, attempt))
	require.Equal(t, schemas.SubjectResultStarted(toolName), m.Subject)
	var s schemas.TaskStarted
	_, err := schemas.Unmarshal(m.Data, schemas.TypeTaskStarted, &s)
	require.NoError(t, err)
	return s, m.Sequence
}

// taskEvents counts the result events about a task.
func (e *env) taskEvents(t *testing.T, taskID string) int {
	t.Helper()
	n := 0
	for _, m := range e.msgs(t, schemas.StreamResults) {
		var ev struct {
			Data struct {
				TaskID string `json:"task_id"`
			} `json:"data"`
		}
		require.NoError(t, json.Unmarshal(m.Data, &ev))
		if ev.Data.TaskID == taskID {
			n++
		}
	}
	return n
}

// msgs returns every message stored in stream, oldest first.
func (e *env) msgs(t *testing.T, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := e.js.Stream(t.Context(), stream)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	var seq uint64 = 1
	for {
		m, err := s.GetMsg(t.Context(), seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		require.NoError(t, err)
		out = append(out, m)
		seq = m.Sequence + 1
	}
}

// waitSettled waits until the lane's task consumer has settled every message
// up to seq (acknowledged or terminated) and has none in flight.
func (e *env) waitSettled(t *testing.T, lane schemas.Lane, seq uint64) *jetstream.ConsumerInfo {
	t.Helper()
	var info *jetstream.ConsumerInfo
	eventually(t, 15*time.Second, func() error {
		c, err := e.js.Consumer(t.Context(), schemas.StreamTasks, workers.ConsumerName(toolName, lane))
		if err != nil {
			return err
		}
		if info, err = c.Info(t.Context()); err != nil {
			return err
		}
		if info.AckFloor.Stream < seq || info.NumAckPending > 0 || info.NumPending > 0 {
			return fmt.Errorf("ack floor %d < %d, %d awaiting ack, %d pending", info.AckFloor.Stream, seq, info.NumAckPending, info.NumPending)
		}
		return nil
	})
	return info
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

// testLogger logs to the test's output until the test and its cleanups are
// done; NATS callbacks that fire later are dropped instead of panicking.
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

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
