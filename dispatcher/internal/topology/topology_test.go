package topology

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

func TestStreamsDefaults(t *testing.T) {
	t.Parallel()
	byName := map[string]jetstream.StreamConfig{}
	for _, sc := range Streams(Config{}) {
		byName[sc.Name] = sc
		require.Equal(t, 1, sc.Replicas, sc.Name)
		require.Equal(t, jetstream.FileStorage, sc.Storage, sc.Name)
		require.Equal(t, 10*time.Minute, sc.Duplicates, sc.Name)
	}
	require.Len(t, byName, 8)
	require.Equal(t, jetstream.WorkQueuePolicy, byName[schemas.StreamTasks].Retention)
	require.Equal(t, 30*24*time.Hour, byName[schemas.StreamDeadLetter].MaxAge)
	require.Equal(t, 7*24*time.Hour, byName[schemas.StreamJobs].MaxAge)
	require.EqualValues(t, schemas.MaxEventSize, byName[schemas.StreamJobs].MaxMsgSize)
	require.EqualValues(t, 2*schemas.MaxEventSize, byName[schemas.StreamDeadLetter].MaxMsgSize, "a dead letter embeds a whole event")
	require.Len(t, byName[StreamAdvisories].Subjects, 4)
	require.Equal(t, []string{"ciss.webhooks.>"}, byName[schemas.StreamWebhooks].Subjects)
	require.Equal(t, 30*24*time.Hour, byName[schemas.StreamAudit].MaxAge)
	require.EqualValues(t, 1<<30, byName[schemas.StreamAudit].MaxBytes, "the audit stream is capped")

	custom := Streams(Config{Replicas: 3, Retain: time.Hour, DuplicateWindow: time.Minute})
	for _, sc := range custom {
		require.Equal(t, 3, sc.Replicas, sc.Name)
		require.Equal(t, time.Minute, sc.Duplicates, sc.Name)
	}
}

// TestEnsureIdempotent runs Ensure twice on a real server: the second run
// changes nothing and fails nothing.
func TestEnsureIdempotent(t *testing.T) {
	t.Parallel()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
	})
	require.NoError(t, err)
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	require.True(t, ns.ReadyForConnections(10*time.Second))
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := t.Context()

	require.NoError(t, Ensure(ctx, js, Config{}))
	_, err = js.Publish(ctx, schemas.SubjectTask(schemas.LaneBulk, "trivy"), []byte("{}"))
	require.NoError(t, err)
	require.NoError(t, Ensure(ctx, js, Config{}))

	tasks, err := js.Stream(ctx, schemas.StreamTasks)
	require.NoError(t, err)
	info, err := tasks.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, info.State.Msgs, "Ensure lost stored messages")
	for _, b := range []string{schemas.BucketJobs, schemas.BucketResultCache, schemas.BucketWebhookDeliveries} {
		_, err := js.KeyValue(ctx, b)
		require.NoError(t, err, b)
	}
	kv, err := js.KeyValue(ctx, schemas.BucketWebhookDeliveries)
	require.NoError(t, err)
	st, err := kv.Status(ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, st.TTL(), 72*time.Hour+12*time.Hour, "deliveries outlive GitHub's 3-day redelivery window with a margin")
	_, err = js.ObjectStore(ctx, schemas.ObjectReports)
	require.NoError(t, err)
}
