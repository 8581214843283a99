package workers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/schemas"
)

// handle runs one task message to its end and settles it:
//   - success, permanent failure, last delivery, cancellation → result published, ack;
//   - transient failure → nak with backoff (JetStream redelivers);
//   - worker stopping → nak at once (another worker takes it);
//   - undecodable → dead-lettered and terminated.
func (w *Worker) handle(ctx context.Context, tool Tool, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error("task without metadata", "err", err)
		_ = msg.Term()
		return
	}
	attempt := int(meta.NumDelivered)
	var task schemas.Task
	if _, err := schemas.Unmarshal(msg.Data(), schemas.TypeTaskRequested, &task); err != nil || task.Tool != tool.Name() ||
		!schemas.ValidJobID(task.JobID) || !schemas.ValidToken(task.Tenant) {
		if err == nil {
			err = fmt.Errorf("task %q for tool %q, tenant %q, job %q is not valid here", task.ID, task.Tool, task.Tenant, task.JobID)
		}
		w.deadLetter(ctx, msg, meta, err)
		return
	}
	log := w.log.With("task", task.ID, "tenant", task.Tenant, "attempt", attempt)

	// A shadow runs after its job finished (the primary is usually faster);
	// only a cancelled job stops it.
	if st, err := w.jobStatus(ctx, task); err == nil && st.Terminal() && (task.Role != schemas.RoleShadow || st == schemas.StatusCancelled) {
		log.Info("job already finished; task skipped", "status", st)
		_ = msg.Ack()
		return
	}

	taskCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w.running.Store(task.ID, runningTask{jobID: task.JobID, cancel: cancel})
	defer w.running.Delete(task.ID)
	stopBeat := w.heartbeat(taskCtx, msg)
	defer stopBeat()

	started := time.Now().UTC()
	w.publish(ctx, log, schemas.SubjectResultStarted(tool.Name()), schemas.TypeTaskStarted,
		fmt.Sprintf("%s.started.%d", task.ID, attempt), schemas.TaskStarted{
			TaskID: task.ID, JobID: task.JobID, Tenant: task.Tenant, Tool: task.Tool, Role: task.Role,
			Worker: w.cfg.Name, Attempt: attempt, StartedAt: started,
		})
	w.met.started.Add(1)

	res, runErr := w.run(taskCtx, tool, task)
	res.TaskID, res.JobID, res.Tenant, res.Tool, res.Role = task.ID, task.JobID, task.Tenant, task.Tool, task.Role
	res.Worker, res.Attempt, res.StartedAt, res.EndedAt = w.cfg.Name, attempt, started, time.Now().UTC()
	if runErr == nil {
		runErr = w.signResult(taskCtx, &res)
	}
	cause := context.Cause(taskCtx)
	switch {
	case runErr == nil:
		res.Outcome = schemas.OutcomeSucceeded
	case errors.Is(cause, ErrStopped):
		log.Info("task interrupted by shutdown; handed back")
		_ = msg.Nak()
		return
	case errors.Is(cause, ErrCancelled):
		res.Outcome = schemas.OutcomeCancelled
		res.Error = &schemas.Error{Code: schemas.CodeCancelled, Message: "cancelled while running"}
	case errors.Is(runErr, ErrPermanent) || attempt >= w.cfg.MaxDeliver:
		res.Outcome = schemas.OutcomeFailed
		res.Error = errorFor(runErr)
		if attempt >= w.cfg.MaxDeliver && !errors.Is(runErr, ErrPermanent) {
			res.Error.Message = fmt.Sprintf("after %d attempts: %s", attempt, res.Error.Message)
		}
	default:
		delay := min(time.Duration(attempt*attempt)*time.Second, time.Minute)
		log.Warn("task failed, will retry", "err", runErr, "in", delay)
		w.met.retried.Add(1)
		_ = msg.NakWithDelay(delay)
		return
	}
	// The result's message id is the task id: a re-run after a crash between
	// publish and ack publishes a duplicate that JetStream drops.
	if err := w.publish(ctx, log, schemas.SubjectResultCompleted(tool.Name()), schemas.TypeTaskCompleted, task.ID+".completed", res); err != nil {
		_ = msg.NakWithDelay(time.Second) // nothing lost: the task runs again (cheaply, from the cache)
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn("ack not confirmed; a redelivery will be deduplicated", "err", err)
	}
	w.met.completed.WithLabelValues(string(res.Outcome)).Inc()
	log.Info("task done", "outcome", res.Outcome, "cache_hit", res.CacheHit, "took", res.EndedAt.Sub(started).Round(time.Millisecond))
}

func errorFor(err error) *schemas.Error {
	code := schemas.CodeToolFailed
	switch {
	case errors.Is(err, ErrTargetNotFound):
		code = schemas.CodeTargetNotFound
	case errors.Is(err, ErrInvalidTarget):
		code = schemas.CodeInvalidTarget
	case errors.Is(err, ErrTargetNotAllowed):
		code = schemas.CodeTargetDenied
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrTimeout):
		code = schemas.CodeTimeout
	}
	return &schemas.Error{Code: code, Message: err.Error()}
}

// run resolves the target, answers from the cache when allowed, else runs the
// tool, stores its reports and fills the cache.
func (w *Worker) run(ctx context.Context, tool Tool, task schemas.Task) (schemas.TaskResult, error) {
	if schemas.IsVaultAction(task.Type) {
		return w.runAction(ctx, tool, task)
	}
	started := time.Now()
	if task.Type == schemas.JobTypeSAST {
		res, _, err := w.runSourceTool(ctx, tool, task)
		if err != nil || res.Result == nil {
			return res, err
		}
		res.Result.Policy, res.Result.ImageSignature, res.Result.GitTag, res.Result.Signature = nil, nil, nil, nil // never trust what a cache held
		return res, w.tagSource(ctx, task, res.Result)
	}
	res, pinned, ver, err := w.runTool(ctx, tool, task)
	if err != nil || res.Result == nil {
		return res, err
	}
	return res, w.vouch(ctx, task, pinned, ver, res.Result, started)
}

// runTool resolves the target, answers from the cache when allowed, else runs
// the tool, stores its reports and fills the cache. It returns the pinned
// image reference and the tool version too.
func (w *Worker) runTool(ctx context.Context, tool Tool, task schemas.Task) (res schemas.TaskResult, pinned string, ver ToolVersion, err error) {
	if task.Target.Image == "" {
		return res, "", ver, fmt.Errorf("%w: %w: task has no image", ErrPermanent, ErrInvalidTarget)
	}
	digest, err := w.cfg.Resolver.Resolve(ctx, task.Target.Image)
	if err != nil {
		return res, pinned, ver, err
	}
	pinned = PinDigest(task.Target.Image, digest)
	ver, err = tool.Version(ctx)
	if err != nil {
		return res, pinned, ver, fmt.Errorf("tool version: %w", err)
	}
	res.ToolVersion = ver.Tool
	key := CacheKey(tool.Name(), ver, digest, task.Params)
	if task.Cache {
		if r, ok := w.cached(ctx, key); ok {
			res.Result, res.CacheHit = r, true
			w.met.cacheHits.Add(1)
			return res, pinned, ver, nil
		}
	}
	dir, err := os.MkdirTemp(w.cfg.WorkDir, "ciss-task-")
	if err != nil {
		return res, pinned, ver, fmt.Errorf("work dir: %w", err)
	}
	defer os.RemoveAll(dir)
	timeout := time.Duration(task.Timeout)
	if timeout <= 0 {
		timeout = w.cfg.TaskTimeout
	}
	out, err := tool.Run(ctx, Input{Task: task, Image: pinned, ImageDigest: digest, Timeout: timeout}, dir)
	if err != nil {
		return res, pinned, ver, err
	}
	result := &schemas.Result{ImageDigest: digest, Summary: out.Summary, DBVersion: ver.Data}
	for _, f := range out.Reports {
		rep, err := w.storeReport(ctx, f)
		if err != nil {
			return res, pinned, ver, err
		}
		result.Reports = append(result.Reports, rep)
	}
	if out.FindingsSource != "" {
		rep, err := w.storeFindings(ctx, tool.Name(), out)
		if err != nil {
			return res, pinned, ver, err
		}
		result.Findings = &rep
	}
	res.Result = result
	if b, err := json.Marshal(result); err == nil {
		if _, err := w.cache.Put(ctx, key, b); err != nil {
			w.log.Warn("result cache write failed", "err", err)
		}
	}
	return res, pinned, ver, nil
}

// storeReport puts a report into the object store under its content digest, so
// identical reports are stored once and cached results stay valid.
func (w *Worker) storeReport(ctx context.Context, f OutputFile) (schemas.Report, error) {
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return schemas.Report{}, fmt.Errorf("read %s report: %w", f.Format, err)
	}
	sum := sha256.Sum256(b)
	hexsum := hex.EncodeToString(sum[:])
	name := "sha256/" + hexsum
	if _, err := w.reports.PutBytes(ctx, name, b); err != nil {
		return schemas.Report{}, fmt.Errorf("store %s report: %w", f.Format, err)
	}
	return schemas.Report{Format: f.Format, MediaType: f.MediaType, Object: name, Digest: "sha256:" + hexsum, Size: int64(len(b))}, nil
}

// cached returns a cached result whose reports are all still stored.
func (w *Worker) cached(ctx context.Context, key string) (*schemas.Result, bool) {
	e, err := w.cache.Get(ctx, key)
	if err != nil {
		return nil, false
	}
	var r schemas.Result
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, false
	}
	for _, rep := range r.Reports {
		if _, err := w.reports.GetInfo(ctx, rep.Object); err != nil {
			return nil, false
		}
	}
	return &r, true
}

// CacheKey is the result cache key: the same tool build, the same data (DB)
// version, the same image digest and the same params give the same result.
func CacheKey(tool string, v ToolVersion, digest string, params map[string]string) string {
	h := sha256.New()
	for _, s := range []string{tool, v.Tool, v.Data, digest} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\x00", k, params[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// PinDigest returns ref with its tag replaced by, or its digest set to, digest.
func PinDigest(ref, digest string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	// Drop a tag: a colon after the last slash.
	if slash := strings.LastIndex(ref, "/"); strings.LastIndex(ref, ":") > slash {
		ref = ref[:strings.LastIndex(ref, ":")]
	}
	return ref + "@" + digest
}

func (w *Worker) jobStatus(ctx context.Context, t schemas.Task) (schemas.Status, error) {
	e, err := w.jobs.Get(ctx, schemas.JobKey(t.Tenant, t.JobID))
	if err != nil {
		return "", err
	}
	var j struct {
		Status schemas.Status `json:"status"`
	}
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return "", err
	}
	return j.Status, nil
}

// heartbeat tells JetStream the task is still being worked on every AckWait/3,
// so a long scan is not redelivered, while a crashed worker's task is.
func (w *Worker) heartbeat(ctx context.Context, msg jetstream.Msg) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(w.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					w.log.Warn("heartbeat failed", "err", err)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

func (w *Worker) publish(ctx context.Context, log interface{ Warn(string, ...any) }, subject, typ, msgID string, data any) error {
	b, err := schemas.Marshal(typ, w.cfg.Source, msgID, data)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := w.js.Publish(pctx, subject, b, jetstream.WithMsgID(msgID)); err != nil {
		log.Warn("publish failed", "subject", subject, "err", err)
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// runningTask is an entry of Worker.running, keyed by task id: one job may
// have several tasks (tools) running on the same worker.
type runningTask struct {
	jobID  string
	cancel context.CancelCauseFunc
}

// onCancel interrupts every task of a cancelled job running here.
func (w *Worker) onCancel(m *nats.Msg) {
	var req schemas.CancelRequest
	if _, err := schemas.Unmarshal(m.Data, schemas.TypeCancelRequest, &req); err != nil {
		w.log.Warn("bad cancel request", "err", err)
		return
	}
	w.running.Range(func(id, v any) bool {
		if rt := v.(runningTask); rt.jobID == req.JobID {
			w.log.Info("cancelling running task", "task", id, "by", req.By)
			rt.cancel(ErrCancelled)
		}
		return true
	})
}

// deadLetter moves an undecodable task to the dead-letter stream and terminates it.
func (w *Worker) deadLetter(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, cause error) {
	dl := schemas.DeadLetter{
		Stream: meta.Stream, Sequence: meta.Sequence.Stream, Subject: msg.Subject(), Consumer: meta.Consumer,
		Deliveries: int(meta.NumDelivered), Reason: "undecodable task: " + cause.Error(), Data: bytes.Clone(msg.Data()), At: time.Now().UTC(),
	}.Bounded()
	err := w.publish(ctx, w.log, schemas.SubjectDeadLetter(dl.Stream), schemas.TypeDeadLettered,
		fmt.Sprintf("dlq.%s.%d", dl.Stream, dl.Sequence), dl)
	if err != nil {
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	w.log.Error("task dead-lettered", "seq", dl.Sequence, "reason", dl.Reason)
	_ = msg.TermWithReason("undecodable")
}

// storeFindings stores a tool's findings as a FindingSet document, content
// addressed like the reports.
func (w *Worker) storeFindings(ctx context.Context, tool string, out Output) (schemas.Report, error) {
	fs := out.Findings
	if fs == nil {
		fs = []schemas.Finding{}
	}
	b, err := json.Marshal(schemas.FindingSet{Tool: tool, Source: out.FindingsSource, Findings: fs})
	if err != nil {
		return schemas.Report{}, fmt.Errorf("encode findings: %w", err)
	}
	sum := sha256.Sum256(b)
	hexsum := hex.EncodeToString(sum[:])
	name := "sha256/" + hexsum
	if _, err := w.reports.PutBytes(ctx, name, b); err != nil {
		return schemas.Report{}, fmt.Errorf("store findings: %w", err)
	}
	return schemas.Report{Format: schemas.FormatFindings, MediaType: schemas.MediaTypeFindings, Object: name, Digest: "sha256:" + hexsum, Size: int64(len(b))}, nil
}
