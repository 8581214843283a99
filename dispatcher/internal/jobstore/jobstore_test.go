package jobstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

// setup starts an embedded JetStream server on a random port with its store in
// t.TempDir() and returns a Store on a fresh job bucket configured like the
// dispatcher's topology (history 5).
func setup(t *testing.T) (*Store, jetstream.KeyValue) {
	t.Helper()
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
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{
		Bucket: schemas.BucketJobs, History: 5, Storage: jetstream.FileStorage,
	})
	require.NoError(t, err)
	return New(kv), kv
}

func newJob(id string) schemas.Job {
	now := time.Date(2025, 1, 14, 9, 30, 0, 0, time.UTC)
	return schemas.Job{
		ID: id, Tenant: "payments", Type: schemas.JobTypeImageScan,
		Target: schemas.Target{Image: "registry.example.com/app:1.0"},
		Lane:   schemas.LaneInteractive, Cache: true, Status: schemas.StatusQueued,
		RequestedBy: "spiffe://ciss/test", CreatedAt: now, UpdatedAt: now,
	}
}

const jobID = "0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d"

func TestEnsure(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, kv := setup(t)

	j := newJob(jobID)
	got, err := s.Ensure(ctx, j)
	require.NoError(t, err)
	require.Equal(t, j, got)
	e, err := kv.Get(ctx, schemas.JobKey(j.Tenant, j.ID))
	require.NoError(t, err)
	rev := e.Revision()

	// A second Ensure with other content returns what is stored and writes nothing.
	other := j
	other.Status = schemas.StatusRunning
	other.RequestedBy = "someone-else"
	got, err = s.Ensure(ctx, other)
	require.NoError(t, err)
	require.Equal(t, j, got)
	e, err = kv.Get(ctx, schemas.JobKey(j.Tenant, j.ID))
	require.NoError(t, err)
	require.Equal(t, rev, e.Revision())

	// State written by another party (the gateway cancelling) wins over Ensure.
	_, err = s.Update(ctx, j.Tenant, j.ID, func(j *schemas.Job) error { j.Status = schemas.StatusCancelled; return nil })
	require.NoError(t, err)
	got, err = s.Ensure(ctx, j)
	require.NoError(t, err)
	require.Equal(t, schemas.StatusCancelled, got.Status)

	stored, _, err := s.Get(ctx, j.Tenant, j.ID)
	require.NoError(t, err)
	require.Equal(t, got, stored)
}

func TestGetAndUpdateMissing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _ := setup(t)
	_, _, err := s.Get(ctx, "payments", jobID)
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)

	called := false
	_, err = s.Update(ctx, "payments", jobID, func(*schemas.Job) error { called = true; return nil })
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	require.ErrorContains(t, err, jobID)
	require.False(t, called, "mutate called for a missing job")

	// Another tenant's key is a miss as well.
	_, err = s.Ensure(ctx, newJob(jobID))
	require.NoError(t, err)
	_, _, err = s.Get(ctx, "other-tenant", jobID)
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
}

func TestUpdate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, kv := setup(t)
	j := newJob(jobID)
	_, err := s.Ensure(ctx, j)
	require.NoError(t, err)
	key := schemas.JobKey(j.Tenant, j.ID)
	revision := func() uint64 {
		e, err := kv.Get(ctx, key)
		require.NoError(t, err)
		return e.Revision()
	}

	rev := revision()
	got, err := s.Update(ctx, j.Tenant, j.ID, func(j *schemas.Job) error {
		j.Status = schemas.StatusRunning
		j.Tool = "trivy"
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, schemas.StatusRunning, got.Status)
	require.Equal(t, "trivy", got.Tool)
	require.Greater(t, revision(), rev)
	stored, storedRev, err := s.Get(ctx, j.Tenant, j.ID)
	require.NoError(t, err)
	require.Equal(t, got, stored)
	require.Equal(t, revision(), storedRev)

	t.Run("ErrUnchanged skips the write", func(t *testing.T) {
		rev := revision()
		got, err := s.Update(ctx, j.Tenant, j.ID, func(j *schemas.Job) error {
			j.Status = schemas.StatusFailed // discarded: no write happens
			return ErrUnchanged
		})
		require.NoError(t, err)
		require.Equal(t, schemas.StatusFailed, got.Status, "Update returns the state as mutate left it")
		require.Equal(t, rev, revision())
		stored, _, err := s.Get(ctx, j.Tenant, j.ID)
		require.NoError(t, err)
		require.Equal(t, schemas.StatusRunning, stored.Status)
	})

	t.Run("ErrUnchanged wrapped", func(t *testing.T) {
		rev := revision()
		_, err := s.Update(ctx, j.Tenant, j.ID, func(*schemas.Job) error {
			return errors.Join(errors.New("nothing to do"), ErrUnchanged)
		})
		require.NoError(t, err)
		require.Equal(t, rev, revision())
	})

	t.Run("mutate error is returned, nothing written", func(t *testing.T) {
		rev := revision()
		boom := errors.New("boom")
		_, err := s.Update(ctx, j.Tenant, j.ID, func(j *schemas.Job) error { j.Tool = "x"; return boom })
		require.ErrorIs(t, err, boom)
		require.Equal(t, rev, revision())
	})
}

// TestUpdateConcurrent increments a counter from many goroutines at once; the
// compare-and-set retry loop must land every increment.
func TestUpdateConcurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _ := setup(t)
	j := newJob(jobID)
	_, err := s.Ensure(ctx, j)
	require.NoError(t, err)

	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = s.Update(ctx, j.Tenant, j.ID, func(j *schemas.Job) error {
				j.Attempts++
				return nil
			})
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	got, _, err := s.Get(ctx, j.Tenant, j.ID)
	require.NoError(t, err)
	require.Equal(t, n, got.Attempts, "lost update")
}

// TestUpdateContended runs more writers than Update retries conflicts
// (maxConflicts, with no backoff), so some may give up with an error. None may
// report success without its write landing.
func TestUpdateContended(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _ := setup(t)
	j := newJob(jobID)
	_, err := s.Ensure(ctx, j)
	require.NoError(t, err)

	const n = 32
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			_, err := s.Update(ctx, j.Tenant, j.ID, func(j *schemas.Job) error { j.Attempts++; return nil })
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
				return
			}
			if !strings.Contains(err.Error(), "conflicting writers") {
				t.Errorf("Update: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	got, _, err := s.Get(ctx, j.Tenant, j.ID)
	require.NoError(t, err)
	require.Equal(t, ok, got.Attempts, "successful updates and stored count differ")
	require.Positive(t, ok)
}

// TestUpdateCancelledContext returns the context's error, not a conflict.
func TestUpdateCancelledContext(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	_, err := s.Ensure(t.Context(), newJob(jobID))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = s.Update(ctx, "payments", jobID, func(*schemas.Job) error { return nil })
	require.ErrorIs(t, err, context.Canceled)
}
