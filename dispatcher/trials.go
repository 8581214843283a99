package dispatcher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/dispatcher/internal/route"
	"ciss.dev/dispatcher/internal/trial"
	"ciss.dev/schemas"
)

// MaxFindingsDocument bounds a findings document the dispatcher reads. A
// candidate's output is untrusted: a bigger one is a comparison error.
const MaxFindingsDocument = 16 << 20

// Keys in BucketTrials.
func trialResultKey(jobID, tool string) string   { return "res." + jobID + "." + tool }
func trialCompareKey(trial, jobID string) string { return "cmp." + trial + "." + jobID }

// TrialReportKey is the key of a trial's aggregate in schemas.BucketTrials.
func TrialReportKey(trial string) string { return "report." + trial }

// afterResult does the bookkeeping that follows a task result: trial
// comparisons for jobs with shadows, variance tracking for the
// authoritative result. It runs after the job's state is written, so
// nothing here can delay, fail or change the job's result; an error only
// retries the bookkeeping (every step is idempotent).
func (d *Dispatcher) afterResult(ctx context.Context, job schemas.Job, r schemas.TaskResult) error {
	var errs []error
	if hasShadows(job) {
		errs = append(errs, d.recordTrialResult(ctx, job, r))
	}
	if r.Role == schemas.RolePrimary && r.Outcome == schemas.OutcomeSucceeded && r.Result != nil && r.Result.Findings != nil &&
		primaryTaskID(job) == r.TaskID && job.Status == schemas.StatusSucceeded {
		errs = append(errs, d.trackVariance(ctx, job, r))
	}
	return errors.Join(errs...)
}

func hasShadows(j schemas.Job) bool {
	for _, t := range j.Tasks {
		if t.Role == schemas.RoleShadow {
			return true
		}
	}
	return false
}

// recordTrialResult keeps a task result of a job with shadows and compares
// each shadow whose primary counterpart is in (whichever arrives second
// triggers the comparison; a comparison key created once makes it happen
// once).
func (d *Dispatcher) recordTrialResult(ctx context.Context, job schemas.Job, r schemas.TaskResult) error {
	b, err := json.Marshal(r)
	if err != nil {
		return permanent(err)
	}
	if _, err := d.trials.Put(ctx, trialResultKey(job.ID, r.Tool), b); err != nil {
		return fmt.Errorf("keep trial result %s: %w", r.TaskID, err)
	}
	var primary schemas.TaskRef
	for _, t := range job.Tasks {
		if t.Role == schemas.RolePrimary {
			primary = t
		}
	}
	if primary.Tool == "" {
		return nil
	}
	for _, sh := range job.Tasks {
		if sh.Role != schemas.RoleShadow || sh.Trial == "" || (r.Tool != primary.Tool && r.Tool != sh.Tool) {
			continue
		}
		pr, ok, err := d.trialResult(ctx, job.ID, primary.Tool)
		if err != nil || !ok {
			return err
		}
		cr, ok, err := d.trialResult(ctx, job.ID, sh.Tool)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := d.compare(ctx, job, sh.Trial, pr, cr); err != nil {
			return err
		}
	}
	return nil
}

func (d *Dispatcher) trialResult(ctx context.Context, jobID, tool string) (schemas.TaskResult, bool, error) {
	e, err := d.trials.Get(ctx, trialResultKey(jobID, tool))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return schemas.TaskResult{}, false, nil
	} else if err != nil {
		return schemas.TaskResult{}, false, fmt.Errorf("trial result %s.%s: %w", jobID, tool, err)
	}
	var r schemas.TaskResult
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return schemas.TaskResult{}, false, permanent(fmt.Errorf("trial result %s.%s: %w", jobID, tool, err))
	}
	return r, true, nil
}

// compare builds, stores and announces one comparison.
func (d *Dispatcher) compare(ctx context.Context, job schemas.Job, name string, p, c schemas.TaskResult) error {
	key := trialCompareKey(name, job.ID)
	if e, err := d.trials.Get(ctx, key); err == nil {
		// Compared before; announce again in case the first announcement
		// was lost (JetStream drops the duplicate).
		var tc schemas.TrialComparison
		if json.Unmarshal(e.Value(), &tc) == nil {
			return d.announceComparison(ctx, tc)
		}
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("trial %s: %w", name, err)
	}
	cfg := d.router.Table().Trial(name)
	tc := schemas.TrialComparison{
		Trial: name, Baseline: cfg.Baseline, JobID: job.ID, Tenant: job.Tenant, JobType: job.Type,
		Primary: p.Tool, Candidate: c.Tool, PrimaryOutcome: p.Outcome, CandidateOutcome: c.Outcome,
		PrimaryDuration: schemas.Duration(p.EndedAt.Sub(p.StartedAt)), CandidateDuration: schemas.Duration(c.EndedAt.Sub(c.StartedAt)),
		OnlyPrimary: []schemas.Finding{}, OnlyCandidate: []schemas.Finding{}, SeverityDiffs: []schemas.SeverityDiff{},
		ComparedAt: time.Now().UTC(),
	}
	pf, perr := d.sideFindings(ctx, p)
	cf, cerr := d.sideFindings(ctx, c)
	if perr != nil {
		tc.PrimaryError = truncate(perr.Error(), 500)
	}
	if cerr != nil {
		tc.CandidateError = truncate(cerr.Error(), 500)
	}
	if perr == nil && cerr == nil {
		rules := trial.Rules{Aliases: cfg.Aliases, Match: cfg.Match}
		for _, ig := range cfg.Ignore {
			rules.Ignore = append(rules.Ignore, trial.Ignore{ID: ig.ID, Package: ig.Package, Path: ig.Path})
		}
		diff := trial.Compare(pf, cf, rules)
		tc.Both, tc.OnlyPrimary, tc.OnlyCandidate, tc.SeverityDiffs, tc.Ignored = diff.Both, diff.OnlyPrimary, diff.OnlyCandidate, diff.SeverityDiffs, diff.Ignored
	}
	b, err := json.Marshal(tc)
	if err != nil {
		return permanent(err)
	}
	if _, err := d.trials.Create(ctx, key, b); errors.Is(err, jetstream.ErrKeyExists) {
		return nil // compared concurrently by another handler, which announces it
	} else if err != nil {
		return fmt.Errorf("store comparison %s: %w", key, err)
	}
	d.met.comparisons.WithLabelValues(name).Inc()
	d.log.Info("trial comparison", "trial", name, "job", job.ID, "both", tc.Both, "only_primary", len(tc.OnlyPrimary),
		"only_candidate", len(tc.OnlyCandidate), "severity_diffs", len(tc.SeverityDiffs), "candidate_error", tc.CandidateError)
	return d.announceComparison(ctx, tc)
}

func (d *Dispatcher) announceComparison(ctx context.Context, tc schemas.TrialComparison) error {
	b, err := schemas.Marshal(schemas.TypeTrialCompared, d.cfg.Source, tc.JobID, tc)
	if err != nil {
		return permanent(err)
	}
	if _, err := d.js.Publish(ctx, schemas.SubjectTrialCompared(tc.Trial), b, jetstream.WithMsgID("cmp."+tc.Trial+"."+tc.JobID)); err != nil {
		return fmt.Errorf("announce comparison: %w", err)
	}
	return nil
}

// sideFindings reads one side's findings; any failure (the task failed, no
// findings document, an unreadable or oversized one) is the side's error.
func (d *Dispatcher) sideFindings(ctx context.Context, r schemas.TaskResult) ([]schemas.Finding, error) {
	if r.Outcome != schemas.OutcomeSucceeded {
		msg := string(r.Outcome)
		if r.Error != nil {
			msg += ": " + r.Error.Code + ": " + r.Error.Message
		}
		return nil, errors.New(msg)
	}
	if r.Result == nil || r.Result.Findings == nil {
		return nil, errors.New("no findings document (the tool manifest names no summary report, or the result predates findings)")
	}
	fs, err := d.loadFindings(ctx, *r.Result.Findings)
	if err != nil {
		return nil, err
	}
	return fs.Findings, nil
}

// loadFindings reads and strictly decodes a stored findings document,
// checking its digest.
func (d *Dispatcher) loadFindings(ctx context.Context, rep schemas.Report) (schemas.FindingSet, error) {
	var fs schemas.FindingSet
	if rep.Size > MaxFindingsDocument {
		return fs, fmt.Errorf("findings document of %d bytes is over the %d byte limit", rep.Size, MaxFindingsDocument)
	}
	obj, err := d.reports.Get(ctx, rep.Object)
	if err != nil {
		return fs, fmt.Errorf("findings document %s: %w", rep.Object, err)
	}
	defer obj.Close()
	b, err := io.ReadAll(io.LimitReader(obj, MaxFindingsDocument+1))
	if err != nil {
		return fs, fmt.Errorf("findings document %s: %w", rep.Object, err)
	}
	if len(b) > MaxFindingsDocument {
		return fs, fmt.Errorf("findings document over the %d byte limit", MaxFindingsDocument)
	}
	sum := sha256.Sum256(b)
	if "sha256:"+hex.EncodeToString(sum[:]) != rep.Digest {
		return fs, fmt.Errorf("findings document %s: digest mismatch", rep.Object)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fs); err != nil {
		return fs, fmt.Errorf("findings document: %w", err)
	}
	for i, f := range fs.Findings {
		if f.ID == "" {
			return fs, fmt.Errorf("findings document: finding %d has no id", i)
		}
	}
	return fs, nil
}

// trialAggregator keeps every comparison (from a KV watch, so every
// dispatcher sees every comparison exactly once, whoever made it) and
// rewrites the reports of trials that changed.
type trialAggregator struct {
	mu    sync.Mutex
	cmps  map[string]map[string]schemas.TrialComparison // trial → job → comparison
	dirty map[string]bool
}

// watchTrials aggregates comparisons into reports until ctx ends.
func (d *Dispatcher) watchTrials(ctx context.Context) {
	agg := &trialAggregator{cmps: map[string]map[string]schemas.TrialComparison{}, dirty: map[string]bool{}}
	for ctx.Err() == nil {
		w, err := d.trials.Watch(ctx, "cmp.>")
		if err != nil {
			d.log.Warn("trial watch", "err", err)
			sleepCtx(ctx, time.Second)
			continue
		}
		d.consumeTrialWatch(ctx, w, agg)
		_ = w.Stop()
	}
}

func (d *Dispatcher) consumeTrialWatch(ctx context.Context, w jetstream.KeyWatcher, agg *trialAggregator) {
	flush := time.NewTicker(250 * time.Millisecond)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-flush.C:
			d.flushTrials(ctx, agg)
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var tc schemas.TrialComparison
			if err := json.Unmarshal(e.Value(), &tc); err != nil || tc.Trial == "" {
				d.log.Warn("undecodable trial comparison", "key", e.Key(), "err", err)
				continue
			}
			agg.mu.Lock()
			if agg.cmps[tc.Trial] == nil {
				agg.cmps[tc.Trial] = map[string]schemas.TrialComparison{}
			}
			agg.cmps[tc.Trial][tc.JobID] = tc
			agg.dirty[tc.Trial] = true
			agg.mu.Unlock()
		}
	}
}

// flushTrials rewrites the reports of changed trials, and of trials whose
// noise (A/A) trial changed.
func (d *Dispatcher) flushTrials(ctx context.Context, agg *trialAggregator) {
	agg.mu.Lock()
	defer agg.mu.Unlock()
	if len(agg.dirty) == 0 {
		return
	}
	tab := d.router.Table()
	for name := range agg.cmps {
		if n := tab.Trial(name).NoiseTrial; n != "" && agg.dirty[n] {
			agg.dirty[name] = true
		}
	}
	reports := map[string]schemas.TrialReport{}
	var build func(name string) schemas.TrialReport
	build = func(name string) schemas.TrialReport {
		if r, ok := reports[name]; ok {
			return r
		}
		var noise *schemas.TrialReport
		if n := tab.Trial(name).NoiseTrial; n != "" && n != name && len(agg.cmps[n]) > 0 {
			nr := build(n)
			noise = &nr
		}
		cs := make([]schemas.TrialComparison, 0, len(agg.cmps[name]))
		for _, c := range agg.cmps[name] {
			cs = append(cs, c)
		}
		r := trial.Aggregate(name, cs, noise, time.Now())
		reports[name] = r
		return r
	}
	for name := range agg.dirty {
		rep := build(name)
		b, err := json.Marshal(rep)
		if err != nil {
			continue
		}
		if _, err := d.trials.Put(ctx, TrialReportKey(name), b); err != nil {
			d.log.Warn("trial report write failed; retrying", "trial", name, "err", err)
			continue
		}
		delete(agg.dirty, name)
		for measure, v := range map[string]float64{
			"jobs_compared": float64(rep.JobsCompared), "errors": float64(rep.Errors), "both": float64(rep.Both),
			"only_primary": float64(rep.OnlyPrimary), "only_candidate": float64(rep.OnlyCandidate),
			"severity_disagreements": float64(rep.SeverityDisagreements), "ignored": float64(rep.Ignored),
			"agreement_rate": rep.AgreementRate, "precision": rep.Precision, "recall": rep.Recall, "error_rate": rep.ErrorRate,
			"duration_ratio_p50": rep.DurationRatioP50, "duration_ratio_p95": rep.DurationRatioP95, "net_disagreement": rep.NetDisagreement,
		} {
			d.met.trial.WithLabelValues(name, measure).Set(v)
		}
	}
}

// varianceRecord is a target's last scan, kept in BucketVariance.
type varianceRecord struct {
	JobID     string          `json:"job_id"`
	Tool      string          `json:"tool"`
	CreatedAt time.Time       `json:"created_at"`
	Findings  schemas.Report  `json:"findings"`
	Previous  *varianceRecord `json:"previous,omitempty"`
}

// VarianceTarget is what repeated scans are grouped by: the git repository
// and branch a job came from, else its image name without tag or digest.
func VarianceTarget(j schemas.Job) string {
	if p := j.Provenance; p != nil && p.Repo != "" {
		return route.Repository(j) + "@" + strings.TrimPrefix(p.Ref, "refs/heads/")
	}
	return route.ImageName(j.Target.Image)
}

// trackVariance compares a target's new findings with its previous scan's,
// publishes what changed (and an alert when new findings reach the
// configured severity), then records the new scan as the target's last.
// The report is published before the record moves on, with a message id of
// the job, so a crash in between repeats it harmlessly.
func (d *Dispatcher) trackVariance(ctx context.Context, job schemas.Job, r schemas.TaskResult) error {
	vc := d.router.Table().Variance()
	if vc.Disabled {
		return nil
	}
	target := VarianceTarget(job)
	if target == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(target))
	key := job.Tenant + "." + hex.EncodeToString(sum[:])
	cur := varianceRecord{JobID: job.ID, Tool: r.Tool, CreatedAt: job.CreatedAt, Findings: *r.Result.Findings}
	for {
		var prev *varianceRecord
		var rev uint64
		e, err := d.variance.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("variance %s: %w", target, err)
		default:
			var rec varianceRecord
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				d.log.Warn("undecodable variance record replaced", "target", target, "err", err)
			} else {
				prev = &rec
			}
			rev = e.Revision()
		}
		if prev != nil && prev.JobID == job.ID {
			prev = prev.Previous // recorded already; repeat the report
		} else if prev != nil && prev.CreatedAt.After(job.CreatedAt) {
			return nil // a newer scan is recorded; this one is history
		}
		if prev != nil {
			if err := d.publishVariance(ctx, job, target, r.Tool, cur.Findings, *prev, vc.AlertSeverity); err != nil {
				return err
			}
		}
		if prev != nil {
			p := *prev
			p.Previous = nil
			cur.Previous = &p
		}
		b, err := json.Marshal(cur)
		if err != nil {
			return permanent(err)
		}
		if rev != 0 {
			_, err = d.variance.Update(ctx, key, b, rev)
		} else {
			_, err = d.variance.Create(ctx, key, b)
		}
		if conflict(err) {
			continue // written meanwhile: compare again with the newer record
		} else if err != nil {
			return fmt.Errorf("variance %s: %w", target, err)
		}
		return nil
	}
}

// conflict reports whether a KV create or compare-and-set lost a race.
func conflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

func (d *Dispatcher) publishVariance(ctx context.Context, job schemas.Job, target, tool string, findings schemas.Report, prev varianceRecord, alertAt string) error {
	curFS, err := d.loadFindings(ctx, findings)
	if err != nil {
		d.log.Warn("variance: findings unreadable; not compared", "job", job.ID, "err", err)
		return nil
	}
	prevFS, err := d.loadFindings(ctx, prev.Findings)
	if err != nil {
		d.log.Warn("variance: previous findings unreadable; not compared", "job", job.ID, "previous", prev.JobID, "err", err)
		return nil
	}
	added, fixed := trial.Variance(prevFS.Findings, curFS.Findings)
	rep := schemas.VarianceReport{Tenant: job.Tenant, Target: target, JobID: job.ID, PreviousJobID: prev.JobID, Tool: tool,
		New: added, Fixed: fixed, At: time.Now().UTC()}
	if alertAt != "NONE" {
		rep.AlertSeverity = schemas.Severity(alertAt)
		for _, f := range added {
			if f.Severity.Rank() >= rep.AlertSeverity.Rank() {
				rep.Alert = true
			}
		}
	}
	b, err := schemas.Marshal(schemas.TypeVarianceChanged, d.cfg.Source, job.ID, rep)
	if err != nil {
		return permanent(err)
	}
	if _, err := d.js.Publish(ctx, schemas.SubjectVariance(job.Tenant), b, jetstream.WithMsgID("variance."+job.ID)); err != nil {
		return fmt.Errorf("publish variance: %w", err)
	}
	d.met.variance.Inc()
	if rep.Alert {
		if _, err := d.js.Publish(ctx, schemas.SubjectVarianceAlert(job.Tenant), b, jetstream.WithMsgID("variance-alert."+job.ID)); err != nil {
			return fmt.Errorf("publish variance alert: %w", err)
		}
		d.met.varianceAlerts.Inc()
		d.log.Warn("variance alert: new findings", "tenant", job.Tenant, "target", target, "job", job.ID, "new", len(added))
	}
	return nil
}

func (d *Dispatcher) bindTrials(ctx context.Context) (err error) {
	if d.trials, err = d.js.KeyValue(ctx, schemas.BucketTrials); err != nil {
		return fmt.Errorf("dispatcher: bind %s: %w", schemas.BucketTrials, err)
	}
	if d.variance, err = d.js.KeyValue(ctx, schemas.BucketVariance); err != nil {
		return fmt.Errorf("dispatcher: bind %s: %w", schemas.BucketVariance, err)
	}
	if d.reports, err = d.js.ObjectStore(ctx, schemas.ObjectReports); err != nil {
		return fmt.Errorf("dispatcher: bind %s: %w", schemas.ObjectReports, err)
	}
	return nil
}
