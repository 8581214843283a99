package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/dispatcher/internal/jobstore"
	"ciss.dev/dispatcher/internal/route"
	"ciss.dev/schemas"
)

// handleJobRequested routes a requested job and publishes its task. The routing
// decision is written to the job state before the task is published, so a
// redelivered request republishes the same task (dropped by JetStream as a
// duplicate) even if the routing changed in between.
func (d *Dispatcher) handleJobRequested(ctx context.Context, msg jetstream.Msg) error {
	var req schemas.Job
	if _, err := schemas.Unmarshal(msg.Data(), schemas.TypeJobRequested, &req); err != nil {
		return permanent(err)
	}
	if !schemas.ValidToken(req.Tenant) || !schemas.ValidJobID(req.ID) || !req.Lane.Valid() {
		return permanent(fmt.Errorf("job request with invalid tenant %q, id %q or lane %q", req.Tenant, req.ID, req.Lane))
	}
	job, err := d.jobs.Ensure(ctx, req)
	if err != nil {
		return err
	}
	if job.Status.Terminal() {
		d.log.Info("job finished before dispatch", "job", job.ID, "status", job.Status)
		return nil
	}
	tool := primaryTool(job)
	if tool == "" {
		dec, err := d.router.RouteJob(job)
		if errors.Is(err, route.ErrNoRoute) {
			return d.finish(ctx, job.Tenant, job.ID, "", func(j *schemas.Job) {
				j.Status = schemas.StatusFailed
				j.Error = &schemas.Error{Code: schemas.CodeNoRoute, Message: err.Error()}
			})
		} else if err != nil {
			return err
		}
		job, err = d.jobs.Update(ctx, job.Tenant, job.ID, func(j *schemas.Job) error {
			if j.Status.Terminal() || primaryTool(*j) != "" {
				return jobstore.ErrUnchanged
			}
			j.Tool = dec.Primary
			j.Tasks = append(j.Tasks, schemas.TaskRef{ID: schemas.TaskID(j.ID, dec.Primary), Tool: dec.Primary, Role: schemas.RolePrimary, Status: schemas.StatusQueued, Trial: dec.Canary})
			for _, sh := range dec.Shadows {
				j.Tasks = append(j.Tasks, schemas.TaskRef{ID: schemas.TaskID(j.ID, sh.Tool), Tool: sh.Tool, Role: schemas.RoleShadow, Status: schemas.StatusQueued, Trial: sh.Trial})
			}
			j.UpdatedAt = time.Now().UTC()
			return nil
		})
		if err != nil {
			return err
		}
		if job.Status.Terminal() {
			return nil
		}
		tool = primaryTool(job)
		if dec.Canary != "" {
			d.met.canaryJobs.WithLabelValues(dec.Canary).Inc()
		}
	}
	task := schemas.Task{
		ID: schemas.TaskID(job.ID, tool), JobID: job.ID, Tenant: job.Tenant,
		Type: job.Type, Tool: tool, Role: schemas.RolePrimary,
		Target: job.Target, Params: job.Params, Lane: job.Lane, Cache: job.Cache,
		CreatedAt: time.Now().UTC(), Provenance: job.Provenance,
		RequestedBy: job.RequestedBy,
	}
	b, err := schemas.Marshal(schemas.TypeTaskRequested, d.cfg.Source, task.ID, task)
	if err != nil {
		return permanent(err)
	}
	if _, err := d.js.Publish(ctx, schemas.SubjectTask(job.Lane, tool), b, jetstream.WithMsgID(task.ID)); err != nil {
		return fmt.Errorf("publish task %s: %w", task.ID, err)
	}
	d.met.dispatched.Add(1)
	// Shadows go out right after the primary, on their own subjects and
	// worker pools: in parallel with it, never ahead of it. A redelivered
	// request republishes them too (JetStream drops the duplicates).
	for _, ref := range job.Tasks {
		if ref.Role != schemas.RoleShadow {
			continue
		}
		sh := task
		sh.ID, sh.Tool, sh.Role = ref.ID, ref.Tool, schemas.RoleShadow
		sh.Timeout = schemas.Duration(d.shadowTimeout(job, ref.Tool))
		sb, err := schemas.Marshal(schemas.TypeTaskRequested, d.cfg.Source, sh.ID, sh)
		if err != nil {
			return permanent(err)
		}
		if _, err := d.js.Publish(ctx, schemas.SubjectShadowTask(ref.Tool), sb, jetstream.WithMsgID(sh.ID)); err != nil {
			return fmt.Errorf("publish shadow task %s: %w", sh.ID, err)
		}
		d.met.shadowsPublished.WithLabelValues(ref.Trial).Inc()
	}
	d.log.Info("job dispatched", "job", job.ID, "tenant", job.Tenant, "type", job.Type, "tool", tool, "lane", job.Lane)
	return nil
}

// shadowTimeout is the timeout the current routing gives a job's shadow tool
// (zero: the worker's default).
func (d *Dispatcher) shadowTimeout(job schemas.Job, tool string) time.Duration {
	dec, err := d.router.RouteJob(job)
	if err != nil {
		return 0
	}
	for _, sh := range dec.Shadows {
		if sh.Tool == tool {
			return sh.Timeout
		}
	}
	return 0
}

func primaryTool(j schemas.Job) string {
	for _, t := range j.Tasks {
		if t.Role == schemas.RolePrimary {
			return t.Tool
		}
	}
	return ""
}

// handleResult applies a worker's task started or completed event to the job.
func (d *Dispatcher) handleResult(ctx context.Context, msg jetstream.Msg) error {
	ev, err := schemas.ParseEvent(msg.Data())
	if err != nil {
		return permanent(err)
	}
	switch ev.Type {
	case schemas.TypeTaskStarted:
		var s schemas.TaskStarted
		if err := ev.Decode(ev.Type, &s); err != nil {
			return permanent(err)
		}
		return d.applyStarted(ctx, s)
	case schemas.TypeTaskCompleted:
		var r schemas.TaskResult
		if err := ev.Decode(ev.Type, &r); err != nil {
			return permanent(err)
		}
		return d.applyResult(ctx, r)
	default:
		return permanent(fmt.Errorf("%w %q on %s", schemas.ErrUnexpectedType, ev.Type, msg.Subject()))
	}
}

func (d *Dispatcher) applyStarted(ctx context.Context, s schemas.TaskStarted) error {
	if !schemas.ValidToken(s.Tenant) || !schemas.ValidJobID(s.JobID) {
		return permanent(fmt.Errorf("task started event with invalid tenant %q or job %q", s.Tenant, s.JobID))
	}
	_, err := d.jobs.Update(ctx, s.Tenant, s.JobID, func(j *schemas.Job) error {
		if j.Status.Terminal() {
			return jobstore.ErrUnchanged
		}
		changed := false
		for i := range j.Tasks {
			t := &j.Tasks[i]
			if t.ID == s.TaskID && t.Status == schemas.StatusQueued {
				t.Status, changed = schemas.StatusRunning, true
			}
		}
		if s.Role == schemas.RolePrimary {
			if j.Status == schemas.StatusQueued {
				j.Status, changed = schemas.StatusRunning, true
			}
			if j.StartedAt == nil {
				at := s.StartedAt
				j.StartedAt, changed = &at, true
			}
			if s.Attempt > j.Attempts {
				j.Attempts, changed = s.Attempt, true
			}
		}
		if !changed {
			return jobstore.ErrUnchanged
		}
		j.UpdatedAt = time.Now().UTC()
		return nil
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return permanent(err)
	}
	return err
}

// applyResult records a task's result. The first result of the primary task
// finishes the job; any later one (a re-run after a crash) is ignored, which is
// what makes a job complete exactly once.
func (d *Dispatcher) applyResult(ctx context.Context, r schemas.TaskResult) error {
	if !schemas.ValidToken(r.Tenant) || !schemas.ValidJobID(r.JobID) {
		return permanent(fmt.Errorf("task result with invalid tenant %q or job %q", r.Tenant, r.JobID))
	}
	status := map[schemas.TaskOutcome]schemas.Status{
		schemas.OutcomeSucceeded: schemas.StatusSucceeded,
		schemas.OutcomeFailed:    schemas.StatusFailed,
		schemas.OutcomeCancelled: schemas.StatusCancelled,
	}[r.Outcome]
	if status == "" {
		return permanent(fmt.Errorf("task %s: unknown outcome %q", r.TaskID, r.Outcome))
	}
	if r.Role != schemas.RolePrimary {
		job, err := d.jobs.Update(ctx, r.Tenant, r.JobID, func(j *schemas.Job) error {
			return setTaskStatus(j, r.TaskID, status)
		})
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return permanent(err)
		} else if err != nil {
			return err
		}
		return d.afterResult(ctx, job, r)
	}
	err := d.finish(ctx, r.Tenant, r.JobID, r.TaskID, func(j *schemas.Job) {
		j.Status = status
		j.Tool = r.Tool
		j.ToolVersion = r.ToolVersion
		j.CacheHit = r.CacheHit
		j.Result = r.Result
		j.Error = r.Error
		j.Attempts = max(j.Attempts, r.Attempt)
		if j.StartedAt == nil {
			at := r.StartedAt
			j.StartedAt = &at
		}
		_ = setTaskStatus(j, r.TaskID, status)
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return permanent(err)
	} else if err != nil {
		return err
	}
	job, _, err := d.jobs.Get(ctx, r.Tenant, r.JobID)
	if err != nil {
		return err
	}
	return d.afterResult(ctx, job, r)
}

func setTaskStatus(j *schemas.Job, taskID string, s schemas.Status) error {
	for i := range j.Tasks {
		if j.Tasks[i].ID == taskID {
			if j.Tasks[i].Status == s {
				return jobstore.ErrUnchanged
			}
			j.Tasks[i].Status = s
			j.UpdatedAt = time.Now().UTC()
			return nil
		}
	}
	return jobstore.ErrUnchanged
}

// finish moves a job to a terminal state with set, unless it is terminal
// already, and announces the finished job. The announcement is repeated on
// redelivery (JetStream drops the duplicate by message id), so a crash between
// the state write and the publish loses nothing.
func (d *Dispatcher) finish(ctx context.Context, tenant, id, taskID string, set func(*schemas.Job)) error {
	finishedNow := false
	job, err := d.jobs.Update(ctx, tenant, id, func(j *schemas.Job) error {
		if j.Status.Terminal() {
			return jobstore.ErrUnchanged
		}
		set(j)
		now := time.Now().UTC()
		j.UpdatedAt, j.FinishedAt = now, &now
		finishedNow = true
		return nil
	})
	if err != nil {
		return err
	}
	if !finishedNow {
		// Terminal already. Re-announce only if this result is what finished it.
		if taskID == "" || job.FinishedAt == nil || job.Status == schemas.StatusCancelled || primaryTaskID(job) != taskID {
			d.log.Info("result for a finished job ignored", "job", id, "task", taskID, "status", job.Status)
			return nil
		}
	} else {
		d.met.finished.Add(1)
		d.log.Info("job finished", "job", id, "tenant", tenant, "status", job.Status, "cache_hit", job.CacheHit)
	}
	b, err := schemas.Marshal(schemas.TypeJobCompleted, d.cfg.Source, job.ID, job)
	if err != nil {
		return permanent(err)
	}
	if _, err := d.js.Publish(ctx, schemas.SubjectJobCompleted(job.Tenant), b, jetstream.WithMsgID(job.ID+".completed")); err != nil {
		return fmt.Errorf("announce job %s: %w", job.ID, err)
	}
	return nil
}

func primaryTaskID(j schemas.Job) string {
	for _, t := range j.Tasks {
		if t.Role == schemas.RolePrimary {
			return t.ID
		}
	}
	return ""
}

// maxDeliveriesAdvisory is JetStream's io.nats.jetstream.advisory.v1.max_deliver.
type maxDeliveriesAdvisory struct {
	Type       string `json:"type"`
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// handleMaxDeliveries dead-letters a message that a consumer delivered the
// maximum number of times without an acknowledgement (a worker that crashes or
// hangs on it every time), fails its job, and removes it from a work queue.
func (d *Dispatcher) handleMaxDeliveries(ctx context.Context, msg jetstream.Msg) error {
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(msg.Data(), &adv); err != nil {
		return permanent(fmt.Errorf("advisory: %w", err))
	}
	stream, err := d.js.Stream(ctx, adv.Stream)
	if err != nil {
		return fmt.Errorf("advisory for %s: %w", adv.Stream, err)
	}
	orig, err := stream.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // settled meanwhile (acknowledged, terminated or already dead-lettered)
	} else if err != nil {
		return fmt.Errorf("advisory: get %s/%d: %w", adv.Stream, adv.StreamSeq, err)
	}
	reason := fmt.Sprintf("%s delivered it %d times without an acknowledgement (the consumer crashed or hung every time)", adv.Consumer, adv.Deliveries)
	if err := d.deadLetter(ctx, schemas.DeadLetter{
		Stream: adv.Stream, Sequence: adv.StreamSeq, Subject: orig.Subject, Consumer: adv.Consumer,
		Deliveries: adv.Deliveries, Reason: reason, Data: orig.Data, At: time.Now().UTC(),
	}); err != nil {
		return fmt.Errorf("dead-letter %s/%d: %w", adv.Stream, adv.StreamSeq, err)
	}
	if err := d.failFromMessage(ctx, adv.Stream, orig.Data, reason); err != nil {
		return err
	}
	if adv.Stream == schemas.StreamTasks {
		if err := stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("remove dead task %d: %w", adv.StreamSeq, err)
		}
	}
	d.log.Error("message dead-lettered", "stream", adv.Stream, "seq", adv.StreamSeq, "consumer", adv.Consumer, "deliveries", adv.Deliveries)
	return nil
}

// failFromMessage fails the job a dead message belonged to.
func (d *Dispatcher) failFromMessage(ctx context.Context, stream string, data []byte, reason string) error {
	var tenant, id, taskID string
	switch stream {
	case schemas.StreamTasks:
		var t schemas.Task
		if _, err := schemas.Unmarshal(data, schemas.TypeTaskRequested, &t); err != nil || t.Role != schemas.RolePrimary {
			return nil
		}
		tenant, id, taskID = t.Tenant, t.JobID, t.ID
	case schemas.StreamJobs:
		var j schemas.Job
		if _, err := schemas.Unmarshal(data, schemas.TypeJobRequested, &j); err != nil {
			return nil
		}
		tenant, id = j.Tenant, j.ID
	default:
		return nil
	}
	if !schemas.ValidToken(tenant) || !schemas.ValidJobID(id) {
		return nil
	}
	err := d.finish(ctx, tenant, id, taskID, func(j *schemas.Job) {
		j.Status = schemas.StatusFailed
		j.Error = &schemas.Error{Code: schemas.CodeMaxDeliveries, Message: reason}
		if taskID != "" {
			_ = setTaskStatus(j, taskID, schemas.StatusFailed)
		}
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}
