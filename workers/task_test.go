package workers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/workers"
)

// TestTaskSucceedsThenCacheHit runs a task, checks its events, stored report
// and cache entry, then answers an identical task from the cache.
func TestTaskSucceedsThenCacheHit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var (
		mu     sync.Mutex
		inputs []workers.Input
		dirs   []string
	)
	tool := &fakeTool{run: func(_ context.Context, in workers.Input, dir string, _ int) (workers.Output, error) {
		mu.Lock()
		inputs, dirs = append(inputs, in), append(dirs, dir)
		mu.Unlock()
		return writeReport(in, dir)
	}}
	e.startWorker(t, tool, nil)

	task := e.newTask(t, schemas.StatusQueued)
	seq := e.publishTask(t, task)
	res, resSeq := e.result(t, task.ID)
	st, stSeq := e.started(t, task.ID, 1)
	require.Less(t, stSeq, resSeq, "started is published before completed")
	require.Equal(t, schemas.TaskStarted{
		TaskID: task.ID, JobID: task.JobID, Tenant: task.Tenant, Tool: toolName, Role: schemas.RolePrimary,
		Worker: "worker-1", Attempt: 1, StartedAt: st.StartedAt,
	}, st)

	require.Equal(t, schemas.OutcomeSucceeded, res.Outcome)
	require.Nil(t, res.Error)
	require.Equal(t, task.ID, res.TaskID)
	require.Equal(t, task.JobID, res.JobID)
	require.Equal(t, task.Tenant, res.Tenant)
	require.Equal(t, schemas.RolePrimary, res.Role)
	require.Equal(t, toolVersion.Tool, res.ToolVersion)
	require.Equal(t, 1, res.Attempt)
	require.Equal(t, "worker-1", res.Worker)
	require.False(t, res.CacheHit)
	require.False(t, res.EndedAt.Before(res.StartedAt))
	require.True(t, res.StartedAt.Equal(st.StartedAt))

	// The tool ran on the pinned image, with the default timeout, in a fresh
	// directory that is gone afterwards.
	require.Len(t, inputs, 1)
	require.Equal(t, "registry.example.com/team/app@"+imageDigest, inputs[0].Image)
	require.Equal(t, imageDigest, inputs[0].ImageDigest)
	require.Equal(t, 7*time.Minute, inputs[0].Timeout)
	require.Equal(t, task.ID, inputs[0].Task.ID)
	require.NoDirExists(t, dirs[0])

	// The report is in the object store under its content address.
	want := reportFor(inputs[0])
	sum := sha256Hex(want)
	require.NotNil(t, res.Result)
	require.Equal(t, &schemas.Result{
		ImageDigest: imageDigest, Summary: schemas.Summary{High: 1, Low: 2}, DBVersion: toolVersion.Data,
		Reports: []schemas.Report{{
			Format: schemas.FormatNative, MediaType: schemas.MediaTypeJSON,
			Object: "sha256/" + sum, Digest: "sha256:" + sum, Size: int64(len(want)),
		}},
	}, res.Result)
	stored, err := e.reports.GetBytes(t.Context(), "sha256/"+sum)
	require.NoError(t, err)
	require.Equal(t, want, stored)

	// The cache entry holds the same result.
	entry, err := e.cache.Get(t.Context(), workers.CacheKey(toolName, toolVersion, imageDigest, task.Params))
	require.NoError(t, err)
	var cached schemas.Result
	require.NoError(t, json.Unmarshal(entry.Value(), &cached))
	require.Equal(t, *res.Result, cached)

	// The task left the work queue.
	e.waitSettled(t, schemas.LaneInteractive, seq)

	// An identical task of another job is answered from the cache.
	second := e.newTask(t, schemas.StatusQueued)
	e.publishTask(t, second)
	res2, _ := e.result(t, second.ID)
	require.Equal(t, schemas.OutcomeSucceeded, res2.Outcome)
	require.True(t, res2.CacheHit)
	require.Equal(t, res.Result, res2.Result)
	require.Equal(t, toolVersion.Tool, res2.ToolVersion)
	require.EqualValues(t, 1, tool.calls.Load(), "the tool ran for a cached task")

	// With the cache disabled the tool runs again.
	third := e.newTask(t, schemas.StatusQueued)
	third.Cache = false
	e.publishTask(t, third)
	res3, _ := e.result(t, third.ID)
	require.False(t, res3.CacheHit)
	require.EqualValues(t, 2, tool.calls.Load())

	// Other params miss the cache.
	fourth := e.newTask(t, schemas.StatusQueued)
	fourth.Params = map[string]string{"severity": "CRITICAL"}
	e.publishTask(t, fourth)
	res4, _ := e.result(t, fourth.ID)
	require.False(t, res4.CacheHit)
	require.EqualValues(t, 3, tool.calls.Load())
}

// TestCachedResultWithoutReportIsNotUsed: a cache entry whose report object is
// gone (object TTL shorter than cache TTL, manual clean-up) is not answered.
func TestCachedResultWithoutReportIsNotUsed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tool := &fakeTool{}
	e.startWorker(t, tool, nil)
	first := e.newTask(t, schemas.StatusQueued)
	e.publishTask(t, first)
	res, _ := e.result(t, first.ID)
	require.NoError(t, e.reports.Delete(t.Context(), res.Result.Reports[0].Object))

	second := e.newTask(t, schemas.StatusQueued)
	e.publishTask(t, second)
	res2, _ := e.result(t, second.ID)
	require.False(t, res2.CacheHit)
	require.EqualValues(t, 2, tool.calls.Load())
	_, err := e.reports.GetInfo(t.Context(), res2.Result.Reports[0].Object)
	require.NoError(t, err, "the report was stored again")
}

// TestRetries: a transient failure is handed back and retried; the last
// allowed delivery that fails fails the task.
func TestRetries(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tool := &fakeTool{}
	var mu sync.Mutex
	failedOnce := map[string]bool{}
	tool.run = func(_ context.Context, in workers.Input, dir string, _ int) (workers.Output, error) {
		mu.Lock()
		defer mu.Unlock()
		if in.Task.Params["mode"] == "always" || !failedOnce[in.Task.ID] {
			failedOnce[in.Task.ID] = true
			return workers.Output{}, errors.New("registry hiccup")
		}
		return writeReport(in, dir)
	}
	e.startWorker(t, tool, func(c *workers.Config) { c.MaxDeliver = 2 })

	once := e.newTask(t, schemas.StatusQueued)
	always := e.newTask(t, schemas.StatusQueued)
	always.Params = map[string]string{"mode": "always"}
	e.publishTask(t, once)
	e.publishTask(t, always)

	res, _ := e.result(t, once.ID)
	require.Equal(t, schemas.OutcomeSucceeded, res.Outcome)
	require.Equal(t, 2, res.Attempt)
	e.started(t, once.ID, 1)
	e.started(t, once.ID, 2)

	res, _ = e.result(t, always.ID)
	require.Equal(t, schemas.OutcomeFailed, res.Outcome)
	require.Equal(t, 2, res.Attempt)
	require.Equal(t, schemas.CodeToolFailed, res.Error.Code)
	require.Equal(t, "after 2 attempts: registry hiccup", res.Error.Message)
	require.Nil(t, res.Result)
	require.Equal(t, 4, int(tool.calls.Load()))
}

// TestPermanentFailures fail at the first attempt, with the error's code.
func TestPermanentFailures(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tool := &fakeTool{run: func(_ context.Context, in workers.Input, _ string, _ int) (workers.Output, error) {
		switch in.Task.Params["mode"] {
		case "permanent":
			return workers.Output{}, fmt.Errorf("%w: unsupported media type", workers.ErrPermanent)
		case "not-found":
			return workers.Output{}, fmt.Errorf("%w: %w: MANIFEST_UNKNOWN", workers.ErrPermanent, workers.ErrTargetNotFound)
		case "not-allowed":
			return workers.Output{}, fmt.Errorf("%w: %w: registry not in allow-list", workers.ErrPermanent, workers.ErrTargetNotAllowed)
		case "timeout":
			return workers.Output{}, fmt.Errorf("%w: %w", workers.ErrPermanent, workers.ErrTimeout)
		}
		return workers.Output{}, errors.New("unexpected mode")
	}}
	e.startWorker(t, tool, nil)

	tests := []struct {
		mode  string
		image string
		code  string
	}{
		{"permanent", testImage, schemas.CodeToolFailed},
		{"not-found", testImage, schemas.CodeTargetNotFound},
		{"not-allowed", testImage, schemas.CodeTargetDenied},
		{"timeout", testImage, schemas.CodeTimeout},
		{"no-image", "", schemas.CodeInvalidTarget},
	}
	tasks := map[string]schemas.Task{}
	for _, tt := range tests {
		task := e.newTask(t, schemas.StatusQueued)
		task.Params = map[string]string{"mode": tt.mode}
		task.Target.Image = tt.image
		tasks[tt.mode] = task
		e.publishTask(t, task)
	}
	for _, tt := range tests {
		res, _ := e.result(t, tasks[tt.mode].ID)
		require.Equal(t, schemas.OutcomeFailed, res.Outcome, tt.mode)
		require.Equal(t, 1, res.Attempt, tt.mode)
		require.Equal(t, tt.code, res.Error.Code, tt.mode)
		require.Nil(t, res.Result, tt.mode)
		require.Equal(t, 2, e.taskEvents(t, tasks[tt.mode].ID), "%s: one started and one completed event", tt.mode)
	}
	require.EqualValues(t, 4, tool.calls.Load(), "the tool ran for a task without an image")
}

// TestResolverNotFound: a missing image fails before the tool runs.
func TestResolverNotFound(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tool := &fakeTool{}
	e.startWorker(t, tool, func(c *workers.Config) {
		c.Resolver = fakeResolver{err: fmt.Errorf("%w: %w: registry.example.com/team/app:1.0: 404", workers.ErrPermanent, workers.ErrTargetNotFound)}
	})
	task := e.newTask(t, schemas.StatusQueued)
	e.publishTask(t, task)
	res, _ := e.result(t, task.ID)
	require.Equal(t, schemas.OutcomeFailed, res.Outcome)
	require.Equal(t, schemas.CodeTargetNotFound, res.Error.Code)
	require.Zero(t, tool.calls.Load())
}

// TestFinishedJobSkipped: a task whose job is already terminal is acknowledged
// without running and without events.
func TestFinishedJobSkipped(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tool := &fakeTool{}
	e.startWorker(t, tool, nil)
	var tasks []schemas.Task
	var last uint64
	for _, st := range []schemas.Status{schemas.StatusCancelled, schemas.StatusFailed, schemas.StatusSucceeded} {
		task := e.newTask(t, st)
		tasks = append(tasks, task)
		last = e.publishTask(t, task)
	}
	info := e.waitSettled(t, schemas.LaneInteractive, last)
	require.Zero(t, info.NumRedelivered)
	require.Zero(t, tool.calls.Load())
	for _, task := range tasks {
		require.Zero(t, e.taskEvents(t, task.ID), "events for a skipped task")
	}
}

// TestCancelWhileRunning cancels a job whose task is running.
func TestCancelWhileRunning(t *testing.T) {
	t.Parallel()
	e := setup(t)
	running := make(chan struct{})
	causes := make(chan error, 1)
	tool := &fakeTool{run: func(ctx context.Context, _ workers.Input, _ string, _ int) (workers.Output, error) {
		close(running)
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return workers.Output{}, ctx.Err()
	}}
	e.startWorker(t, tool, nil)
	task := e.newTask(t, schemas.StatusQueued)
	seq := e.publishTask(t, task)
	select {
	case <-running:
	case <-time.After(15 * time.Second):
		t.Fatal("the task did not start")
	}

	cancel := func(jobID string) {
		b, err := schemas.Marshal(schemas.TypeCancelRequest, "/ciss/test", jobID, schemas.CancelRequest{JobID: jobID, Tenant: task.Tenant, By: "alice"})
		require.NoError(t, err)
		require.NoError(t, e.nc.Publish(schemas.SubjectCancel(jobID), b))
	}
	cancel(newJobID()) // another job: ignored
	require.NoError(t, e.nc.Publish(schemas.SubjectCancel(task.JobID), []byte("not an event")))
	cancel(task.JobID)
	require.NoError(t, e.nc.Flush())

	res, _ := e.result(t, task.ID)
	require.Equal(t, schemas.OutcomeCancelled, res.Outcome)
	require.Equal(t, schemas.CodeCancelled, res.Error.Code)
	require.Equal(t, 1, res.Attempt)
	require.ErrorIs(t, <-causes, workers.ErrCancelled)
	e.waitSettled(t, schemas.LaneInteractive, seq)
	require.EqualValues(t, 1, tool.calls.Load())
}

// TestStopHandsTaskBack stops a worker while its task runs, with a deadline
// shorter than the task: the task is interrupted and handed back, and another
// worker runs it at once (not after AckWait).
func TestStopHandsTaskBack(t *testing.T) {
	t.Parallel()
	e := setup(t)
	running := make(chan struct{})
	causes := make(chan error, 1)
	blocking := &fakeTool{run: func(ctx context.Context, _ workers.Input, _ string, _ int) (workers.Output, error) {
		close(running)
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return workers.Output{}, ctx.Err()
	}}
	a := e.startWorker(t, blocking, func(c *workers.Config) { c.Name = "worker-a"; c.AckWait = time.Minute })
	task := e.newTask(t, schemas.StatusQueued)
	e.publishTask(t, task)
	select {
	case <-running:
	case <-time.After(15 * time.Second):
		t.Fatal("the task did not start")
	}
	healthy := &fakeTool{}
	e.startWorker(t, healthy, func(c *workers.Config) { c.Name = "worker-b"; c.AckWait = time.Minute })

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	stopped := time.Now()
	err := a.Stop(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "interrupted")
	require.ErrorIs(t, <-causes, workers.ErrStopped)

	res, _ := e.result(t, task.ID)
	require.Less(t, time.Since(stopped), 30*time.Second, "the task waited for AckWait instead of being handed back")
	require.Equal(t, schemas.OutcomeSucceeded, res.Outcome)
	require.Equal(t, "worker-b", res.Worker)
	require.Equal(t, 2, res.Attempt)
	require.EqualValues(t, 1, healthy.calls.Load())
	st, _ := e.started(t, task.ID, 1)
	require.Equal(t, "worker-a", st.Worker)
}

// TestStopWaitsForRunningTask: with enough time, Stop lets the running task
// finish and publish its result.
func TestStopWaitsForRunningTask(t *testing.T) {
	t.Parallel()
	e := setup(t)
	running := make(chan struct{})
	release := make(chan struct{})
	tool := &fakeTool{run: func(_ context.Context, in workers.Input, dir string, _ int) (workers.Output, error) {
		close(running)
		<-release
		return writeReport(in, dir)
	}}
	w := e.startWorker(t, tool, nil)
	task := e.newTask(t, schemas.StatusQueued)
	e.publishTask(t, task)
	select {
	case <-running:
	case <-time.After(15 * time.Second):
		t.Fatal("the task did not start")
	}
	stopErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopErr <- w.Stop(ctx)
	}()
	close(release)
	require.NoError(t, <-stopErr)
	res, _ := e.result(t, task.ID)
	require.Equal(t, schemas.OutcomeSucceeded, res.Outcome)
}

// TestHeartbeatKeepsLongTask runs a task longer than AckWait: heartbeats keep
// JetStream from redelivering it.
func TestHeartbeatKeepsLongTask(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const ackWait = 3 * time.Second
	tool := &fakeTool{run: func(ctx context.Context, in workers.Input, dir string, _ int) (workers.Output, error) {
		select { // the "scan" takes longer than AckWait
		case <-time.After(ackWait + time.Second):
		case <-ctx.Done():
			return workers.Output{}, ctx.Err()
		}
		return writeReport(in, dir)
	}}
	e.startWorker(t, tool, func(c *workers.Config) { c.AckWait = ackWait })
	task := e.newTask(t, schemas.StatusQueued)
	seq := e.publishTask(t, task)
	res, _ := e.result(t, task.ID)
	require.Equal(t, schemas.OutcomeSucceeded, res.Outcome)
	require.Equal(t, 1, res.Attempt)
	info := e.waitSettled(t, schemas.LaneInteractive, seq)
	require.Zero(t, info.NumRedelivered)
	require.EqualValues(t, 1, tool.calls.Load())
	require.Equal(t, 2, e.taskEvents(t, task.ID), "a second started event: the task was redelivered")
}

// TestUndecodableTaskDeadLettered: a task message that cannot be decoded, or
// is not valid for this worker, is dead-lettered and terminated.
func TestUndecodableTaskDeadLettered(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tool := &fakeTool{}
	e.startWorker(t, tool, nil)
	badTenant := e.newTask(t, schemas.StatusQueued)
	badTenant.Tenant = "Payments"
	badTenant.ID += ".bad"
	b, err := schemas.Marshal(schemas.TypeTaskRequested, "/ciss/test", badTenant.ID, badTenant)
	require.NoError(t, err)
	bodies := map[uint64][]byte{} // by stream sequence
	var last uint64
	for i, body := range [][]byte{[]byte("garbage"), b} {
		ack, err := e.js.Publish(t.Context(), schemas.SubjectTask(schemas.LaneInteractive, toolName), body, jetstream.WithMsgID(fmt.Sprint("bad-", i)))
		require.NoError(t, err)
		bodies[ack.Sequence] = body
		last = ack.Sequence
	}
	info := e.waitSettled(t, schemas.LaneInteractive, last)
	require.Zero(t, info.NumRedelivered)
	require.Zero(t, tool.calls.Load())
	var letters []schemas.DeadLetter
	eventually(t, 10*time.Second, func() error {
		letters = nil
		for _, m := range e.msgs(t, schemas.StreamDeadLetter) {
			var dl schemas.DeadLetter
			_, err := schemas.Unmarshal(m.Data, schemas.TypeDeadLettered, &dl)
			require.NoError(t, err)
			letters = append(letters, dl)
		}
		if len(letters) != len(bodies) {
			return fmt.Errorf("%d dead letters", len(letters))
		}
		return nil
	})
	for _, dl := range letters { // in any order: two slots handle them
		require.Equal(t, schemas.StreamTasks, dl.Stream)
		require.Equal(t, workers.ConsumerName(toolName, schemas.LaneInteractive), dl.Consumer)
		require.Equal(t, bodies[dl.Sequence], dl.Data)
		require.Equal(t, schemas.SubjectTask(schemas.LaneInteractive, toolName), dl.Subject)
		require.Equal(t, 1, dl.Deliveries)
		require.True(t, strings.HasPrefix(dl.Reason, "undecodable task: "), dl.Reason)
	}
}

// TestBulkLane runs a bulk task in the bulk pool.
func TestBulkLane(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tool := &fakeTool{}
	e.startWorker(t, tool, nil)
	task := e.newTask(t, schemas.StatusQueued)
	task.Lane = schemas.LaneBulk
	seq := e.publishTask(t, task)
	res, _ := e.result(t, task.ID)
	require.Equal(t, schemas.OutcomeSucceeded, res.Outcome)
	e.waitSettled(t, schemas.LaneBulk, seq)
}

// TestCancelReachesEveryTaskOfTheJob: a job may fan out to several tasks (a
// primary and shadows, one per tool); a worker that runs two of them must stop
// both when the job is cancelled.
func TestCancelReachesEveryTaskOfTheJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var started sync.WaitGroup
	started.Add(2)
	block := func(ctx context.Context, _ workers.Input, _ string, _ int) (workers.Output, error) {
		started.Done()
		<-ctx.Done()
		return workers.Output{}, ctx.Err()
	}
	primary := &fakeTool{run: block}
	shadow := &fakeTool{name: "shadow", run: block}
	w, err := workers.New(workers.Config{
		NATSURL: e.url, Tools: []workers.Tool{primary, shadow}, AckWait: 3 * time.Second,
		WorkDir: t.TempDir(), Resolver: fakeResolver{}, AdminAddr: "-", Logger: e.log,
	})
	require.NoError(t, err)
	require.NoError(t, w.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})

	task := e.newTask(t, schemas.StatusQueued)
	e.publishTask(t, task)
	shadowTask := task
	shadowTask.ID, shadowTask.Tool, shadowTask.Role = schemas.TaskID(task.JobID, "shadow"), "shadow", schemas.RoleShadow
	e.publishTask(t, shadowTask)
	started.Wait()

	b, err := schemas.Marshal(schemas.TypeCancelRequest, "/ciss/test", task.JobID, schemas.CancelRequest{JobID: task.JobID, Tenant: task.Tenant, By: "alice"})
	require.NoError(t, err)
	require.NoError(t, e.nc.Publish(schemas.SubjectCancel(task.JobID), b))
	for _, id := range []string{task.ID, shadowTask.ID} {
		res, _ := e.result(t, id)
		require.Equal(t, schemas.OutcomeCancelled, res.Outcome, id)
	}
}
