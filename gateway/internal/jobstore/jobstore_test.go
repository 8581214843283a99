package jobstore_test

import (
	"context"
	"io"
	"testing"
	"time"

	"ciss.dev/gateway/internal/jobstore"
	"ciss.dev/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// startNATS runs an embedded JetStream server for one test.
func startNATS(t *testing.T) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

func createTopology(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: schemas.StreamJobs, Subjects: []string{"ciss.jobs.>"}})
	require.NoError(t, err)
	_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketJobs, History: 5})
	require.NoError(t, err)
	_, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: schemas.ObjectReports})
	require.NoError(t, err)
	return js
}

func waitReady(t *testing.T, s *jobstore.Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Ready() != nil {
		require.True(t, time.Now().Before(deadline), "not ready: %v", s.Ready())
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

func TestStore(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	s, err := jobstore.Open(jobstore.Config{URL: ns.ClientURL(), RetryInterval: 20 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	require.ErrorIs(t, s.Ready(), jobstore.ErrNotBound)
	require.ErrorIs(t, s.Ready(), jobstore.ErrUnavailable)
	_, err = s.Get(context.Background(), "acme.x")
	require.ErrorIs(t, err, jobstore.ErrUnavailable)

	js := createTopology(t, ns.ClientURL())
	waitReady(t, s)
	ctx := context.Background()
	const id = "0190a5c4-0000-7000-8000-000000000001"
	key := schemas.JobKey("acme", id)

	_, err = s.Get(ctx, key)
	require.ErrorIs(t, err, jobstore.ErrNotFound)

	job := &schemas.Job{ID: id, Tenant: "acme", Status: schemas.StatusQueued}
	rev, err := s.Create(ctx, key, job)
	require.NoError(t, err)
	_, err = s.Create(ctx, key, job)
	require.ErrorIs(t, err, jobstore.ErrExists)

	wctx, cancel := context.WithCancel(ctx)
	updates, err := s.Watch(wctx, key)
	require.NoError(t, err)
	first := <-updates
	require.Equal(t, rev, first.Revision)
	require.Equal(t, schemas.StatusQueued, first.Job.Status)

	job.Status = schemas.StatusRunning
	rev2, err := s.Update(ctx, key, job, rev)
	require.NoError(t, err)
	_, err = s.Update(ctx, key, job, rev)
	require.ErrorIs(t, err, jobstore.ErrConflict)
	second := <-updates
	require.Equal(t, rev2, second.Revision)
	require.Equal(t, schemas.StatusRunning, second.Job.Status)
	cancel()
	for range updates { // closed once the context is done
	}

	other := &schemas.Job{ID: "0190a5c4-0000-7000-8000-000000000002", Tenant: "globex"}
	_, err = s.Create(ctx, schemas.JobKey("globex", other.ID), other)
	require.NoError(t, err)
	list, err := s.List(ctx, "acme.*")
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, id, list[0].Job.ID)
	list, err = s.List(ctx, "nobody.*")
	require.NoError(t, err)
	require.Empty(t, list)

	require.NoError(t, s.Publish(ctx, schemas.SubjectJobRequested(schemas.LaneInteractive), id, []byte("{}")))
	require.NoError(t, s.Publish(ctx, schemas.SubjectJobRequested(schemas.LaneInteractive), id, []byte("{}")), "a duplicate is acknowledged")
	st, err := js.Stream(ctx, schemas.StreamJobs)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, info.State.Msgs, "and stored once")
	require.ErrorIs(t, s.Publish(ctx, "not.in.stream", "x", nil), jobstore.ErrUnavailable)

	_, err = s.OpenReport(ctx, "missing")
	require.ErrorIs(t, err, jobstore.ErrNotFound)
	obs, err := js.ObjectStore(ctx, schemas.ObjectReports)
	require.NoError(t, err)
	_, err = obs.PutBytes(ctx, "acme/r", []byte("report"))
	require.NoError(t, err)
	obj, err := s.OpenReport(ctx, "acme/r")
	require.NoError(t, err)
	b, err := io.ReadAll(obj)
	require.NoError(t, err)
	require.NoError(t, obj.Close())
	require.Equal(t, "report", string(b))
	require.EqualValues(t, 6, obj.Size)

	// Disconnected: operations fail at once rather than queueing.
	ns.Shutdown()
	ns.WaitForShutdown()
	deadline := time.Now().Add(10 * time.Second)
	for s.Ready() == nil {
		require.True(t, time.Now().Before(deadline))
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	require.ErrorIs(t, s.Ready(), jobstore.ErrNotConnected)
	require.ErrorIs(t, s.Publish(ctx, schemas.SubjectJobRequested(schemas.LaneBulk), "y", nil), jobstore.ErrUnavailable)
	require.ErrorIs(t, s.Notify(schemas.SubjectCancel(id), nil), jobstore.ErrUnavailable)
}

func TestOpenRejectsHalfClientCert(t *testing.T) {
	t.Parallel()
	_, err := jobstore.Open(jobstore.Config{URL: "nats://127.0.0.1:1", CertFile: "c.pem"})
	require.Error(t, err)
}
