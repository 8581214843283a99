package dispatcher_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"ciss.dev/dispatcher"
	"ciss.dev/schemas"
)

func TestNewConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "routing.yaml")
	require.NoError(t, os.WriteFile(good, []byte(routingTrivy), 0o600))
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("version: 3\n"), 0o600))

	tests := []struct {
		name string
		cfg  dispatcher.Config
		want string
	}{
		{"no routing file", dispatcher.Config{}, "Config.RoutingFile"},
		{"MaxDeliver 1", dispatcher.Config{RoutingFile: good, MaxDeliver: 1}, "Config.MaxDeliver"},
		{"routing file missing", dispatcher.Config{RoutingFile: filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
		{"routing file invalid", dispatcher.Config{RoutingFile: bad}, "version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := dispatcher.New(tt.cfg)
			require.ErrorContains(t, err, tt.want)
			require.Nil(t, d)
		})
	}
	d, err := dispatcher.New(dispatcher.Config{RoutingFile: good})
	require.NoError(t, err)
	require.Empty(t, d.AdminAddr(), "admin address before Start")
}

func TestStartCreatesTopology(t *testing.T) {
	t.Parallel()
	e := setup(t, routingTrivy)
	ctx := t.Context()

	for name, retention := range map[string]jetstream.RetentionPolicy{
		schemas.StreamJobs:       jetstream.LimitsPolicy,
		schemas.StreamTasks:      jetstream.WorkQueuePolicy,
		schemas.StreamResults:    jetstream.LimitsPolicy,
		schemas.StreamDeadLetter: jetstream.LimitsPolicy,
		"CISS_ADVISORIES":        jetstream.LimitsPolicy,
	} {
		s, err := e.js.Stream(ctx, name)
		require.NoError(t, err, name)
		cfg := s.CachedInfo().Config
		require.Equal(t, retention, cfg.Retention, name)
		require.Equal(t, jetstream.FileStorage, cfg.Storage, name)
		require.Equal(t, 10*time.Minute, cfg.Duplicates, name)
	}
	tasks, err := e.js.Stream(ctx, schemas.StreamTasks)
	require.NoError(t, err)
	require.Equal(t, []string{"ciss.tasks.>"}, tasks.CachedInfo().Config.Subjects)

	jobs, err := e.js.KeyValue(ctx, schemas.BucketJobs)
	require.NoError(t, err)
	st, err := jobs.Status(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 5, st.History())
	require.Equal(t, 7*24*time.Hour, st.TTL())
	cache, err := e.js.KeyValue(ctx, schemas.BucketResultCache)
	require.NoError(t, err)
	st, err = cache.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, 24*time.Hour, st.TTL())
	_, err = e.js.ObjectStore(ctx, schemas.ObjectReports)
	require.NoError(t, err)

	for _, durable := range []string{"dispatcher-interactive", "dispatcher-bulk"} {
		_, err := e.js.Consumer(ctx, schemas.StreamJobs, durable)
		require.NoError(t, err, durable)
	}
	_, err = e.js.Consumer(ctx, schemas.StreamResults, "dispatcher-results")
	require.NoError(t, err)
	_, err = e.js.Consumer(ctx, "CISS_ADVISORIES", "dispatcher-advisories")
	require.NoError(t, err)
}

func TestJobDispatched(t *testing.T) {
	t.Parallel()
	for _, lane := range schemas.Lanes() {
		t.Run(string(lane), func(t *testing.T) {
			t.Parallel()
			e := setup(t, routingTrivy)
			job := newJob("payments")
			job.Lane = lane
			seq := e.publishJob(t, job, job.ID)
			e.waitSettled(t, schemas.StreamJobs, "dispatcher-"+string(lane), seq)

			taskID := schemas.TaskID(job.ID, "trivy")
			got, err := e.job(t, job.Tenant, job.ID)
			require.NoError(t, err, "the dispatcher creates the state the gateway did not")
			require.Equal(t, "trivy", got.Tool)
			require.Equal(t, schemas.StatusQueued, got.Status)
			require.Equal(t, []schemas.TaskRef{{ID: taskID, Tool: "trivy", Role: schemas.RolePrimary, Status: schemas.StatusQueued}}, got.Tasks)

			subject := schemas.SubjectTask(lane, "trivy")
			msgs := e.msgs(t, schemas.StreamTasks, subject)
			require.Len(t, msgs, 1)
			require.Equal(t, taskID, msgs[0].Header.Get(jetstream.MsgIDHeader))
			var task schemas.Task
			_, err = schemas.Unmarshal(msgs[0].Data, schemas.TypeTaskRequested, &task)
			require.NoError(t, err)
			require.Equal(t, taskID, task.ID)
			require.Equal(t, job.ID, task.JobID)
			require.Equal(t, job.Tenant, task.Tenant)
			require.Equal(t, "trivy", task.Tool)
			require.Equal(t, schemas.RolePrimary, task.Role)
			require.Equal(t, job.Target, task.Target)
			require.Equal(t, job.Params, task.Params)
			require.Equal(t, lane, task.Lane)
			require.True(t, task.Cache)
			require.Equal(t, uint64(1), e.count(t, schemas.StreamTasks, "ciss.tasks.>"), "a task on another subject")
		})
	}
}

// TestJobDispatchedOnce publishes the same job request twice under different
// message ids (so stream deduplication does not drop it): the task is
// published once, because its message id is the task id.
func TestJobDispatchedOnce(t *testing.T) {
	t.Parallel()
	e := setup(t, routingTrivy)
	job := newJob("payments")
	// The gateway wrote the state first, as it normally does.
	kv, err := e.js.KeyValue(t.Context(), schemas.BucketJobs)
	require.NoError(t, err)
	b, err := json.Marshal(job)
	require.NoError(t, err)
	_, err = kv.Create(t.Context(), schemas.JobKey(job.Tenant, job.ID), b)
	require.NoError(t, err)

	e.publishJob(t, job, job.ID)
	seq := e.publishJob(t, job, job.ID+".again")
	e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", seq)
	require.Equal(t, uint64(1), e.count(t, schemas.StreamTasks, schemas.SubjectTask(job.Lane, "trivy")))
	got, err := e.job(t, job.Tenant, job.ID)
	require.NoError(t, err)
	require.Len(t, got.Tasks, 1)
	require.Equal(t, job.RequestedBy, got.RequestedBy)
}

func TestCancelledJobNotDispatched(t *testing.T) {
	t.Parallel()
	e := setup(t, routingTrivy)
	job := newJob("payments")
	cancelled := job
	cancelled.Status = schemas.StatusCancelled
	cancelled.Error = &schemas.Error{Code: schemas.CodeCancelled, Message: "cancelled by alice"}
	kv, err := e.js.KeyValue(t.Context(), schemas.BucketJobs)
	require.NoError(t, err)
	b, err := json.Marshal(cancelled)
	require.NoError(t, err)
	rev, err := kv.Create(t.Context(), schemas.JobKey(job.Tenant, job.ID), b)
	require.NoError(t, err)

	seq := e.publishJob(t, job, job.ID)
	info := e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", seq)
	require.Zero(t, info.NumRedelivered)
	require.Zero(t, e.count(t, schemas.StreamTasks, "ciss.tasks.>"))
	entry, err := kv.Get(t.Context(), schemas.JobKey(job.Tenant, job.ID))
	require.NoError(t, err)
	require.Equal(t, rev, entry.Revision(), "a cancelled job's state was rewritten")
}

// TestJobLifecycle drives a job through started and completed events and
// checks that it completes exactly once.
func TestJobLifecycle(t *testing.T) {
	t.Parallel()
	e := setup(t, routingTrivy)
	job := newJob("payments")
	e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", e.publishJob(t, job, job.ID))
	taskID := schemas.TaskID(job.ID, "trivy")

	startedAt := time.Now().UTC().Truncate(time.Millisecond)
	started := schemas.TaskStarted{
		TaskID: taskID, JobID: job.ID, Tenant: job.Tenant, Tool: "trivy", Role: schemas.RolePrimary,
		Worker: "w1", Attempt: 1, StartedAt: startedAt,
	}
	e.publishEvent(t, schemas.SubjectResultStarted("trivy"), schemas.TypeTaskStarted, taskID+".started.1", started)
	running := e.waitJob(t, job.Tenant, job.ID, statusIs(schemas.StatusRunning))
	require.Equal(t, 1, running.Attempts)
	require.NotNil(t, running.StartedAt)
	require.True(t, running.StartedAt.Equal(startedAt))
	require.Equal(t, schemas.StatusRunning, running.Tasks[0].Status)
	require.Nil(t, running.FinishedAt)

	result := schemas.TaskResult{
		TaskID: taskID, JobID: job.ID, Tenant: job.Tenant, Tool: "trivy", Role: schemas.RolePrimary,
		ToolVersion: "0.69.0", Outcome: schemas.OutcomeSucceeded, Worker: "w1", Attempt: 1,
		StartedAt: startedAt, EndedAt: startedAt.Add(time.Second),
		Result: &schemas.Result{
			ImageDigest: "sha256:" + hex64('a'), Summary: schemas.Summary{High: 2, Low: 1}, DBVersion: "2@2025-01-14T00:00:00Z",
			Reports: []schemas.Report{{Format: schemas.FormatNative, MediaType: schemas.MediaTypeJSON, Object: "sha256/" + hex64('b'), Digest: "sha256:" + hex64('b'), Size: 42}},
		},
	}
	seq := e.publishEvent(t, schemas.SubjectResultCompleted("trivy"), schemas.TypeTaskCompleted, taskID+".completed", result)
	e.waitSettled(t, schemas.StreamResults, "dispatcher-results", seq)
	done, err := e.job(t, job.Tenant, job.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.StatusSucceeded, done.Status)
	require.Equal(t, "0.69.0", done.ToolVersion)
	require.Equal(t, result.Result, done.Result)
	require.Nil(t, done.Error)
	require.NotNil(t, done.FinishedAt)
	require.Equal(t, schemas.StatusSucceeded, done.Tasks[0].Status)

	completedSubject := schemas.SubjectJobCompleted(job.Tenant)
	announced := e.msgs(t, schemas.StreamJobs, completedSubject)
	require.Len(t, announced, 1)
	require.Equal(t, job.ID+".completed", announced[0].Header.Get(jetstream.MsgIDHeader))
	var final schemas.Job
	_, err = schemas.Unmarshal(announced[0].Data, schemas.TypeJobCompleted, &final)
	require.NoError(t, err)
	require.Equal(t, schemas.StatusSucceeded, final.Status)
	require.Equal(t, result.Result, final.Result)

	// A second result for the same task (a re-run that published under another
	// message id) and a late started event change nothing.
	second := result
	second.Outcome, second.Result = schemas.OutcomeFailed, nil
	second.Error = &schemas.Error{Code: schemas.CodeToolFailed, Message: "late failure"}
	second.Attempt = 2
	e.publishEvent(t, schemas.SubjectResultCompleted("trivy"), schemas.TypeTaskCompleted, taskID+".completed.rerun", second)
	late := started
	late.Attempt = 3
	seq = e.publishEvent(t, schemas.SubjectResultStarted("trivy"), schemas.TypeTaskStarted, taskID+".started.3", late)
	info := e.waitSettled(t, schemas.StreamResults, "dispatcher-results", seq)
	require.Zero(t, info.NumRedelivered)

	after, err := e.job(t, job.Tenant, job.ID)
	require.NoError(t, err)
	require.Equal(t, done, after)
	require.Len(t, e.msgs(t, schemas.StreamJobs, completedSubject), 1, "job announced as completed twice")
}

func TestFailedResult(t *testing.T) {
	t.Parallel()
	e := setup(t, routingTrivy)
	job := newJob("payments")
	e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", e.publishJob(t, job, job.ID))
	taskID := schemas.TaskID(job.ID, "trivy")
	// A result without a started event first (the started event was lost).
	now := time.Now().UTC()
	res := schemas.TaskResult{
		TaskID: taskID, JobID: job.ID, Tenant: job.Tenant, Tool: "trivy", Role: schemas.RolePrimary,
		Outcome: schemas.OutcomeFailed, Error: &schemas.Error{Code: schemas.CodeTargetNotFound, Message: "no such image"},
		Worker: "w1", Attempt: 1, StartedAt: now, EndedAt: now,
	}
	e.publishEvent(t, schemas.SubjectResultCompleted("trivy"), schemas.TypeTaskCompleted, taskID+".completed", res)
	got := e.waitJob(t, job.Tenant, job.ID, statusIs(schemas.StatusFailed))
	require.Equal(t, res.Error, got.Error)
	require.NotNil(t, got.StartedAt)
	require.Equal(t, schemas.StatusFailed, got.Tasks[0].Status)
	eventually(t, 10*time.Second, func() error {
		if n := e.count(t, schemas.StreamJobs, schemas.SubjectJobCompleted(job.Tenant)); n != 1 {
			return fmt.Errorf("%d completion announcements", n)
		}
		return nil
	})
}

func TestNoRouteFailsJob(t *testing.T) {
	t.Parallel()
	e := setup(t, "version: 1\ntools:\n  - name: trivy\n    job_types: [image-scan]\n")
	job := newJob("payments")
	e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", e.publishJob(t, job, job.ID))
	got, err := e.job(t, job.Tenant, job.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.StatusFailed, got.Status)
	require.NotNil(t, got.Error)
	require.Equal(t, schemas.CodeNoRoute, got.Error.Code)
	require.Zero(t, e.count(t, schemas.StreamTasks, "ciss.tasks.>"))
	require.Equal(t, uint64(1), e.count(t, schemas.StreamJobs, schemas.SubjectJobCompleted(job.Tenant)))
}

// TestPoisonMessagesDeadLettered publishes messages that can never be handled:
// each is copied to the dead-letter stream with the reason and terminated at
// its first delivery.
func TestPoisonMessagesDeadLettered(t *testing.T) {
	t.Parallel()
	e := setup(t, routingTrivy)
	badTenant := newJob("Payments.Prod")
	badID := newJob("payments")
	badID.ID = "not-a-uuid"
	cancelEvent, err := schemas.Marshal(schemas.TypeCancelRequest, "/ciss/test", "x", schemas.CancelRequest{JobID: newJobID(), Tenant: "payments"})
	require.NoError(t, err)
	mustEvent := func(j schemas.Job) []byte {
		b, err := schemas.Marshal(schemas.TypeJobRequested, "/ciss/test", j.ID, j)
		require.NoError(t, err)
		return b
	}
	tests := []struct {
		name string
		body []byte
		want string
	}{
		{"not json", []byte("not an event"), "not a CloudEvents"},
		{"empty", []byte{}, "not a CloudEvents"},
		{"wrong event type", cancelEvent, "unexpected event type"},
		{"invalid tenant", mustEvent(badTenant), "invalid tenant"},
		{"invalid job id", mustEvent(badID), "invalid tenant"},
	}
	subject := schemas.SubjectJobRequested(schemas.LaneInteractive)
	var last uint64
	for i, tt := range tests {
		seq := e.publish(t, subject, tt.body, fmt.Sprintf("poison-%d", i))
		last = seq
		dlqSubject := schemas.SubjectDeadLetter(schemas.StreamJobs)
		var dl schemas.DeadLetter
		eventually(t, 10*time.Second, func() error {
			for _, m := range e.msgs(t, schemas.StreamDeadLetter, dlqSubject) {
				var d schemas.DeadLetter
				if _, err := schemas.Unmarshal(m.Data, schemas.TypeDeadLettered, &d); err != nil {
					return err
				}
				if d.Sequence == seq {
					require.Equal(t, fmt.Sprintf("dlq.%s.%d", schemas.StreamJobs, seq), m.Header.Get(jetstream.MsgIDHeader))
					dl = d
					return nil
				}
			}
			return fmt.Errorf("%s: no dead letter for sequence %d", tt.name, seq)
		})
		require.Equal(t, schemas.StreamJobs, dl.Stream, tt.name)
		require.Equal(t, subject, dl.Subject, tt.name)
		require.Equal(t, "dispatcher-interactive", dl.Consumer, tt.name)
		require.Equal(t, 1, dl.Deliveries, tt.name)
		require.Equal(t, tt.body, dl.Data, tt.name)
		require.Contains(t, dl.Reason, "permanent", tt.name)
		require.Contains(t, dl.Reason, tt.want, tt.name)
	}

	// A good job afterwards is handled; no poison message was delivered again.
	job := newJob("payments")
	seq := e.publishJob(t, job, job.ID)
	info := e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", seq)
	require.Greater(t, seq, last)
	require.Zero(t, info.NumRedelivered)
	require.Equal(t, uint64(len(tests)+1), info.Delivered.Consumer, "a poison message was redelivered")
	require.Equal(t, uint64(len(tests)), e.count(t, schemas.StreamDeadLetter, schemas.SubjectDeadLetter(schemas.StreamJobs)))
	require.Equal(t, uint64(1), e.count(t, schemas.StreamTasks, "ciss.tasks.>"))
}

// TestResultForUnknownJobDeadLettered: a result whose job state does not exist
// can never apply, so it is dead-lettered instead of retried.
func TestResultForUnknownJobDeadLettered(t *testing.T) {
	t.Parallel()
	e := setup(t, routingTrivy)
	id := newJobID()
	now := time.Now().UTC()
	seq := e.publishEvent(t, schemas.SubjectResultStarted("trivy"), schemas.TypeTaskStarted, "orphan.started.1", schemas.TaskStarted{
		TaskID: schemas.TaskID(id, "trivy"), JobID: id, Tenant: "payments", Tool: "trivy", Role: schemas.RolePrimary,
		Worker: "w1", Attempt: 1, StartedAt: now,
	})
	info := e.waitSettled(t, schemas.StreamResults, "dispatcher-results", seq)
	require.Zero(t, info.NumRedelivered)
	dl := e.msgs(t, schemas.StreamDeadLetter, schemas.SubjectDeadLetter(schemas.StreamResults))
	require.Len(t, dl, 1)
	var d schemas.DeadLetter
	_, err := schemas.Unmarshal(dl[0].Data, schemas.TypeDeadLettered, &d)
	require.NoError(t, err)
	require.Equal(t, seq, d.Sequence)
	require.Contains(t, d.Reason, "key not found")
}

func TestReloadRouting(t *testing.T) {
	t.Parallel()
	e := setup(t, routingTrivy)
	dispatchTo := func(tool string) {
		t.Helper()
		job := newJob("payments")
		e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", e.publishJob(t, job, job.ID))
		got, err := e.job(t, job.Tenant, job.ID)
		require.NoError(t, err)
		require.Equal(t, tool, got.Tool)
		require.Len(t, e.msgs(t, schemas.StreamTasks, schemas.SubjectTask(job.Lane, tool)), 1)
		task := e.msgs(t, schemas.StreamTasks, schemas.SubjectTask(job.Lane, tool))[0]
		require.Equal(t, schemas.TaskID(job.ID, tool), task.Header.Get(jetstream.MsgIDHeader))
		// Drop it so the next check counts only the next job's task.
		s, err := e.js.Stream(t.Context(), schemas.StreamTasks)
		require.NoError(t, err)
		require.NoError(t, s.DeleteMsg(t.Context(), task.Sequence))
	}
	dispatchTo("trivy")

	require.NoError(t, os.WriteFile(e.routing, []byte(routingGrype), 0o600))
	require.True(t, e.d.ReloadRouting())
	dispatchTo("grype")

	for name, content := range map[string]string{
		"invalid": "version: 1\nroutes:\n  - job_type: image-scan\n    primary: ghost\n",
		"garbage": "{{{",
	} {
		require.NoError(t, os.WriteFile(e.routing, []byte(content), 0o600), name)
		require.False(t, e.d.ReloadRouting(), name)
		dispatchTo("grype")
	}
	require.NoError(t, os.Remove(e.routing))
	require.False(t, e.d.ReloadRouting(), "missing file")
	dispatchTo("grype")
}

// TestReloadRoutingWatch changes the file and waits for the watcher to pick
// the change up. The file is rewritten on every poll: the watcher takes its
// first stamp asynchronously (see TestRoutingChangeBeforeStartIsMissed).
func TestReloadRoutingWatch(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	path := filepath.Join(t.TempDir(), "routing.yaml")
	require.NoError(t, os.WriteFile(path, []byte(routingTrivy), 0o600))
	d, err := dispatcher.New(dispatcher.Config{NATSURL: url, RoutingFile: path, AdminAddr: "127.0.0.1:0", ReloadInterval: 20 * time.Millisecond, Concurrency: 1})
	require.NoError(t, err)
	require.NoError(t, d.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := contextWithTimeout(10 * time.Second)
		defer cancel()
		require.NoError(t, d.Stop(ctx))
	})
	e := &env{d: d}
	e.nc, e.js = connectJS(t, url)
	n := 0
	eventually(t, 10*time.Second, func() error {
		n++
		require.NoError(t, os.WriteFile(path, []byte(routingGrype+strings.Repeat("#\n", n)), 0o600))
		job := newJob("payments")
		e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", e.publishJob(t, job, job.ID))
		got, err := e.job(t, job.Tenant, job.ID)
		require.NoError(t, err)
		if got.Tool != "grype" {
			return fmt.Errorf("routed to %s", got.Tool)
		}
		return nil
	})
}

// TestRoutingChangeBeforeStartIsLoaded: a routing file changed between New
// (which loads it) and Start (which starts the watcher), e.g. while Start waits
// for NATS, is loaded once the watcher runs.
func TestRoutingChangeBeforeStartIsLoaded(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	path := filepath.Join(t.TempDir(), "routing.yaml")
	require.NoError(t, os.WriteFile(path, []byte(routingTrivy), 0o600))
	d, err := dispatcher.New(dispatcher.Config{NATSURL: url, RoutingFile: path, AdminAddr: "-", ReloadInterval: 20 * time.Millisecond, Concurrency: 1})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte(routingGrype), 0o600)) // changed before Start
	require.NoError(t, d.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := contextWithTimeout(10 * time.Second)
		defer cancel()
		require.NoError(t, d.Stop(ctx))
	})
	e := &env{d: d}
	e.nc, e.js = connectJS(t, url)
	eventually(t, 5*time.Second, func() error {
		job := newJob("payments")
		e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", e.publishJob(t, job, job.ID))
		got, err := e.job(t, job.Tenant, job.ID)
		require.NoError(t, err)
		if got.Tool != "grype" {
			return fmt.Errorf("routed to %s: the change made before Start was not loaded", got.Tool)
		}
		return nil
	})
}

// TestAdmin checks the admin endpoints of a started dispatcher.
func TestAdmin(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	path := filepath.Join(t.TempDir(), "routing.yaml")
	require.NoError(t, os.WriteFile(path, []byte(routingTrivy), 0o600))
	d, err := dispatcher.New(dispatcher.Config{NATSURL: url, RoutingFile: path, AdminAddr: "127.0.0.1:0", Concurrency: 1})
	require.NoError(t, err)
	require.NoError(t, d.Start(t.Context()))
	addr := d.AdminAddr()
	require.NotEmpty(t, addr)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, _ := get("/healthz")
	require.Equal(t, http.StatusOK, code)
	code, _ = get("/readyz")
	require.Equal(t, http.StatusOK, code)
	code, body := get("/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "ciss_dispatcher_tasks_published_total")

	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	require.NoError(t, d.Stop(ctx))
	_, err = http.Get("http://" + addr + "/healthz")
	require.Error(t, err, "admin server still serving after Stop")
}

// TestMaxDeliveriesAdvisory plays a worker that receives a task and never
// acknowledges it: after MaxDeliver deliveries JetStream's advisory makes the
// dispatcher dead-letter the task, fail the job and remove the task.
func TestMaxDeliveriesAdvisory(t *testing.T) {
	t.Parallel()
	e := setup(t, routingTrivy)
	ctx := t.Context()
	job := newJob("payments")
	e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", e.publishJob(t, job, job.ID))
	subject := schemas.SubjectTask(job.Lane, "trivy")
	require.Equal(t, uint64(1), e.count(t, schemas.StreamTasks, subject))

	cons, err := e.js.CreateOrUpdateConsumer(ctx, schemas.StreamTasks, jetstream.ConsumerConfig{
		Durable: "worker-trivy-interactive", FilterSubject: subject,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 200 * time.Millisecond, MaxDeliver: 2,
	})
	require.NoError(t, err)
	for delivery := 1; delivery <= 2; delivery++ {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		n := 0
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			require.NoError(t, err)
			require.EqualValues(t, delivery, meta.NumDelivered)
			n++ // and never acknowledged: the worker "crashed"
		}
		require.NoError(t, batch.Error())
		require.Equal(t, 1, n, "delivery %d", delivery)
	}
	// JetStream emits the advisory when it would deliver the message again, so
	// the "worker" keeps pulling, as a restarted worker does; nothing comes.
	eventually(t, 10*time.Second, func() error {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
		require.NoError(t, err)
		for range batch.Messages() {
			t.Fatal("a task was delivered beyond MaxDeliver")
		}
		j, err := e.job(t, job.Tenant, job.ID)
		require.NoError(t, err)
		return statusIs(schemas.StatusFailed)(j)
	})

	failed := e.waitJob(t, job.Tenant, job.ID, statusIs(schemas.StatusFailed))
	require.Equal(t, schemas.CodeMaxDeliveries, failed.Error.Code)
	require.Contains(t, failed.Error.Message, "worker-trivy-interactive")
	require.Equal(t, schemas.StatusFailed, failed.Tasks[0].Status)
	eventually(t, 10*time.Second, func() error {
		if n := e.count(t, schemas.StreamTasks, subject); n != 0 {
			return fmt.Errorf("%d tasks left in the work queue", n)
		}
		return nil
	})
	dl := e.msgs(t, schemas.StreamDeadLetter, schemas.SubjectDeadLetter(schemas.StreamTasks))
	require.Len(t, dl, 1)
	var d schemas.DeadLetter
	_, err = schemas.Unmarshal(dl[0].Data, schemas.TypeDeadLettered, &d)
	require.NoError(t, err)
	require.Equal(t, subject, d.Subject)
	require.Equal(t, "worker-trivy-interactive", d.Consumer)
	require.Equal(t, 2, d.Deliveries)
	var task schemas.Task
	_, err = schemas.Unmarshal(d.Data, schemas.TypeTaskRequested, &task)
	require.NoError(t, err)
	require.Equal(t, schemas.TaskID(job.ID, "trivy"), task.ID)
	require.Equal(t, uint64(1), e.count(t, schemas.StreamJobs, schemas.SubjectJobCompleted(job.Tenant)))
}
