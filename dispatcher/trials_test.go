package dispatcher_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/dispatcher"
	"ciss.dev/schemas"
)

const routingShadow = `version: 2
tools:
  - {name: trivy, job_types: [image-scan]}
  - {name: cand, job_types: [image-scan]}
routes:
  - job_type: image-scan
    primary: trivy
    shadows: [{tool: cand, trial: cand-trial, timeout: 7s}]
trials:
  - name: cand-trial
    aliases: {GHSA-aaaa: CVE-1}
    ignore: [{id: CVE-IGN}]
`

// storeDoc puts b into the report store and returns its reference.
func (e *env) storeDoc(t *testing.T, b []byte) schemas.Report {
	t.Helper()
	obj, err := e.js.ObjectStore(t.Context(), schemas.ObjectReports)
	require.NoError(t, err)
	sum := sha256.Sum256(b)
	name := "sha256/" + hex.EncodeToString(sum[:])
	_, err = obj.PutBytes(t.Context(), name, b)
	require.NoError(t, err)
	return schemas.Report{Format: schemas.FormatFindings, MediaType: schemas.MediaTypeFindings, Object: name, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b))}
}

func findingsDoc(t *testing.T, tool string, fs ...schemas.Finding) []byte {
	t.Helper()
	b, err := json.Marshal(schemas.FindingSet{Tool: tool, Source: "trivy-json", Findings: fs})
	require.NoError(t, err)
	return b
}

func (e *env) sendResult(t *testing.T, job schemas.Job, tool string, role schemas.TaskRole, took time.Duration, findings *schemas.Report, outcome schemas.TaskOutcome) {
	t.Helper()
	at := time.Now().UTC()
	r := schemas.TaskResult{TaskID: schemas.TaskID(job.ID, tool), JobID: job.ID, Tenant: job.Tenant, Tool: tool, Role: role,
		Outcome: outcome, Worker: "w", Attempt: 1, StartedAt: at, EndedAt: at.Add(took)}
	if outcome == schemas.OutcomeSucceeded {
		r.Result = &schemas.Result{Summary: schemas.Summary{High: 1}, Reports: []schemas.Report{}, Findings: findings}
	} else {
		r.Error = &schemas.Error{Code: schemas.CodeToolFailed, Message: "boom"}
	}
	seq := e.publishEvent(t, schemas.SubjectResultCompleted(tool), schemas.TypeTaskCompleted, r.TaskID+".completed", r)
	e.waitSettled(t, schemas.StreamResults, "dispatcher-results", seq)
}

func (e *env) comparison(t *testing.T, trial, jobID string) schemas.TrialComparison {
	t.Helper()
	msgs := e.msgs(t, schemas.StreamTrials, schemas.SubjectTrialCompared(trial))
	for _, m := range msgs {
		var tc schemas.TrialComparison
		_, err := schemas.Unmarshal(m.Data, schemas.TypeTrialCompared, &tc)
		require.NoError(t, err)
		if tc.JobID == jobID {
			return tc
		}
	}
	t.Fatalf("no comparison for job %s in trial %s", jobID, trial)
	return schemas.TrialComparison{}
}

// TestShadowDispatchedAndCompared: a routed job fans out its primary task on
// the lane subject and its shadow on the shadow subject; the shadow's result
// never changes the job; the comparison (aliases and ignore rules applied)
// is stored, announced once, and aggregated.
func TestShadowDispatchedAndCompared(t *testing.T) {
	t.Parallel()
	e := setup(t, routingShadow)
	job := newJob("payments")
	e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", e.publishJob(t, job, job.ID))
	got, err := e.job(t, job.Tenant, job.ID)
	require.NoError(t, err)
	require.Equal(t, []schemas.TaskRef{
		{ID: schemas.TaskID(job.ID, "trivy"), Tool: "trivy", Role: schemas.RolePrimary, Status: schemas.StatusQueued},
		{ID: schemas.TaskID(job.ID, "cand"), Tool: "cand", Role: schemas.RoleShadow, Status: schemas.StatusQueued, Trial: "cand-trial"},
	}, got.Tasks)
	shadows := e.msgs(t, schemas.StreamTasks, schemas.SubjectShadowTask("cand"))
	require.Len(t, shadows, 1)
	var task schemas.Task
	_, err = schemas.Unmarshal(shadows[0].Data, schemas.TypeTaskRequested, &task)
	require.NoError(t, err)
	require.Equal(t, schemas.RoleShadow, task.Role)
	require.Equal(t, schemas.Duration(7*time.Second), task.Timeout)
	require.Equal(t, job.Target, task.Target)
	require.Len(t, e.msgs(t, schemas.StreamTasks, schemas.SubjectTask(job.Lane, "trivy")), 1)

	sev := func(id, pkg string, s schemas.Severity) schemas.Finding {
		return schemas.Finding{ID: id, Package: pkg, Version: "1", Severity: s}
	}
	primary := e.storeDoc(t, findingsDoc(t, "trivy", sev("CVE-1", "a", "HIGH"), sev("CVE-2", "b", "LOW"), sev("CVE-3", "c", "HIGH"), sev("CVE-IGN", "d", "LOW")))
	cand := e.storeDoc(t, findingsDoc(t, "cand", sev("GHSA-aaaa", "a", "HIGH"), sev("CVE-3", "c", "CRITICAL"), sev("CVE-9", "z", "MEDIUM")))
	// The shadow finishes first: nothing to compare yet, and the job stays queued.
	e.sendResult(t, job, "cand", schemas.RoleShadow, 2*time.Second, &cand, schemas.OutcomeSucceeded)
	got, err = e.job(t, job.Tenant, job.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.StatusQueued, got.Status, "a shadow result never moves the job")
	require.Nil(t, got.Result)
	require.Equal(t, schemas.StatusSucceeded, got.Tasks[1].Status)
	e.sendResult(t, job, "trivy", schemas.RolePrimary, time.Second, &primary, schemas.OutcomeSucceeded)
	done := e.waitJob(t, job.Tenant, job.ID, statusIs(schemas.StatusSucceeded))
	require.Equal(t, "trivy", done.Tool)
	require.Equal(t, &primary, done.Result.Findings)

	var tc schemas.TrialComparison
	eventually(t, 10*time.Second, func() error {
		if len(e.msgs(t, schemas.StreamTrials, schemas.SubjectTrialCompared("cand-trial"))) == 0 {
			return fmt.Errorf("no comparison yet")
		}
		return nil
	})
	tc = e.comparison(t, "cand-trial", job.ID)
	require.Equal(t, 2, tc.Both, "CVE-1 through its alias, and CVE-3")
	require.Equal(t, []schemas.Finding{sev("CVE-2", "b", "LOW")}, tc.OnlyPrimary)
	require.Equal(t, []schemas.Finding{sev("CVE-9", "z", "MEDIUM")}, tc.OnlyCandidate)
	require.Equal(t, []schemas.SeverityDiff{{Finding: sev("CVE-3", "c", "HIGH"), CandidateSeverity: "CRITICAL"}}, tc.SeverityDiffs)
	require.Equal(t, 1, tc.Ignored)
	require.Equal(t, schemas.Duration(time.Second), tc.PrimaryDuration)
	require.Equal(t, schemas.Duration(2*time.Second), tc.CandidateDuration)

	kv, err := e.js.KeyValue(t.Context(), schemas.BucketTrials)
	require.NoError(t, err)
	var rep schemas.TrialReport
	eventually(t, 10*time.Second, func() error {
		en, err := kv.Get(t.Context(), dispatcher.TrialReportKey("cand-trial"))
		if err != nil {
			return err
		}
		return json.Unmarshal(en.Value(), &rep)
	})
	require.Equal(t, 1, rep.JobsCompared)
	require.Equal(t, 2, rep.Both)
	require.InDelta(t, 1.0/4, rep.AgreementRate, 1e-12)
	require.InDelta(t, 2.0/3, rep.Precision, 1e-12)
	require.InDelta(t, 2.0/3, rep.Recall, 1e-12)
	require.Equal(t, 2.0, rep.DurationRatioP50)
	require.Len(t, e.msgs(t, schemas.StreamTrials, schemas.SubjectTrialCompared("cand-trial")), 1, "announced once")
}

// TestHostileCandidateOutput: a candidate whose findings document is
// missing, tampered with, not JSON, has unknown fields or findings without
// ids is counted as a candidate error; the job keeps the primary's result.
func TestHostileCandidateOutput(t *testing.T) {
	t.Parallel()
	e := setup(t, routingShadow)
	good := e.storeDoc(t, findingsDoc(t, "trivy", schemas.Finding{ID: "CVE-1", Severity: "HIGH"}))
	tampered := good
	tampered.Digest = "sha256:" + hex64('0')
	missing := good
	missing.Object = "sha256/" + hex64('1')
	huge := good
	huge.Size = dispatcher.MaxFindingsDocument + 1
	for name, doc := range map[string]*schemas.Report{
		"no document": nil,
		"missing":     &missing,
		"tampered":    &tampered,
		"huge":        &huge,
		"not json":    ptr(e.storeDoc(t, []byte("{not json"))),
		"unknown":     ptr(e.storeDoc(t, []byte(`{"tool":"x","source":"sarif","findings":[],"extra":1}`))),
		"no id":       ptr(e.storeDoc(t, []byte(`{"tool":"x","source":"sarif","findings":[{"id":"","severity":"HIGH"}]}`))),
	} {
		t.Run(name, func(t *testing.T) {
			job := newJob("payments")
			e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", e.publishJob(t, job, job.ID))
			e.sendResult(t, job, "trivy", schemas.RolePrimary, time.Second, &good, schemas.OutcomeSucceeded)
			e.sendResult(t, job, "cand", schemas.RoleShadow, time.Second, doc, schemas.OutcomeSucceeded)
			var tc schemas.TrialComparison
			eventually(t, 10*time.Second, func() error {
				for _, m := range e.msgs(t, schemas.StreamTrials, schemas.SubjectTrialCompared("cand-trial")) {
					var c schemas.TrialComparison
					if _, err := schemas.Unmarshal(m.Data, schemas.TypeTrialCompared, &c); err == nil && c.JobID == job.ID {
						tc = c
						return nil
					}
				}
				return fmt.Errorf("not compared")
			})
			require.NotEmpty(t, tc.CandidateError)
			require.Empty(t, tc.PrimaryError)
			j, err := e.job(t, job.Tenant, job.ID)
			require.NoError(t, err)
			require.Equal(t, schemas.StatusSucceeded, j.Status)
			require.Equal(t, &good, j.Result.Findings)
		})
	}
	// A failed candidate is an error too.
	job := newJob("payments")
	e.waitSettled(t, schemas.StreamJobs, "dispatcher-interactive", e.publishJob(t, job, job.ID))
	e.sendResult(t, job, "cand", schemas.RoleShadow, time.Second, nil, schemas.OutcomeFailed)
	e.sendResult(t, job, "trivy", schemas.RolePrimary, time.Second, &good, schemas.OutcomeSucceeded)
	eventually(t, 10*time.Second, func() error {
		kv, err := e.js.KeyValue(t.Context(), schemas.BucketTrials)
		if err != nil {
			return err
		}
		en, err := kv.Get(t.Context(), dispatcher.TrialReportKey("cand-trial"))
		if err != nil {
			return err
		}
		var rep schemas.TrialReport
		if err := json.Unmarshal(en.Value(), &rep); err != nil {
			return err
		}
		if rep.JobsCompared != 8 || rep.Errors != 8 {
			return fmt.Errorf("report %d compared, %d errors", rep.JobsCompared, rep.Errors)
		}
		return nil
	})
}

func ptr[T any](v T) *T { return &v }
