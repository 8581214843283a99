package e2e

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

// TestDispatcherAndGatewayRestart: jobs accepted while the dispatcher is down
// wait in JetStream and complete once it is back (after a crash, not a clean
// stop); a gateway restart loses nothing either.
func TestDispatcherAndGatewayRestart(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	require.NoError(t, e.s.StopComponent("dispatcher", syscall.SIGKILL))
	var ids []string
	for range 3 {
		ids = append(ids, e.admin.submit(noCache(scan(e.s.Images.Clean)), nil).ID)
	}
	for _, id := range ids {
		j, _ := e.admin.get(id, 0)
		require.Equal(t, schemas.StatusQueued, j.Status, "no dispatcher: the job must wait, not fail")
	}
	require.NoError(t, e.s.StopComponent("gateway", syscall.SIGKILL))
	require.NoError(t, e.s.StartComponent(ctx, "gateway"))
	require.NoError(t, e.s.StartComponent(ctx, "dispatcher"))
	for _, id := range ids {
		j := e.admin.waitDone(id)
		require.Equal(t, schemas.StatusSucceeded, j.Status, "job %s: %+v", id, j.Error)
		require.Equal(t, 1, j.Attempts)
	}
}

// TestLongScanIsNotRedelivered: a scan that takes several AckWaits keeps its
// delivery alive with in-progress heartbeats and runs exactly once.
func TestLongScanIsNotRedelivered(t *testing.T) {
	e := newEnv(t, map[string][]string{"worker": {"-ack-wait", "3s"}})
	release := e.s.Registry.Hold("demo/vulnerable")
	defer release()
	job := e.admin.submit(noCache(scan(e.s.Images.Vulnerable)), nil)
	e.admin.waitFor(job.ID, time.Minute, func(j schemas.Job) bool { return j.Status == schemas.StatusRunning })
	// Hold the pull for three AckWaits; without heartbeats JetStream would
	// redeliver and a second run would start (Attempts 2).
	deadline := time.Now().Add(9 * time.Second)
	for time.Now().Before(deadline) {
		j, _ := e.admin.get(job.ID, time.Second)
		require.Equal(t, 1, j.Attempts, "the task was redelivered while it was still running")
	}
	release()
	j := e.admin.waitDone(job.ID)
	require.Equal(t, schemas.StatusSucceeded, j.Status, "%+v", j.Error)
	require.Equal(t, 1, j.Attempts)
}
