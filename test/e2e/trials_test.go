package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/test/fixture"
	"ciss.dev/test/stack"
)

// trialCatalog copies the shipped catalog and adds candidate tools:
//   - trivy-severe: the shipped Task with --severity HIGH,CRITICAL (known
//     differences: it misses every MEDIUM and LOW finding);
//   - trivy-replica: the shipped Task under a second name (an A/A trial);
//   - crashy, garbage, hangs: candidates that exit 3, write a report that is
//     not Trivy JSON, or never finish.
func trialCatalog(t *testing.T) string {
	t.Helper()
	root, err := stack.RepoRoot()
	require.NoError(t, err)
	catalog := t.TempDir()
	shipped, err := filepath.Glob(filepath.Join(root, "deploy", "tekton", "*.yaml"))
	require.NoError(t, err)
	for _, f := range shipped {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		writeFile(t, catalog, filepath.Base(f), b)
	}
	scanTask, err := os.ReadFile(filepath.Join(root, "deploy", "tekton", "trivy-image-scan.yaml"))
	require.NoError(t, err)
	severe := strings.Replace(string(scanTask), "name: ciss-trivy-image-scan", "name: ciss-trivy-severe-scan", 1)
	severe = strings.Replace(severe, "        - --scanners=vuln\n", "        - --scanners=vuln\n        - --severity=HIGH,CRITICAL\n", 1)
	require.Contains(t, severe, "--severity=HIGH,CRITICAL")
	writeFile(t, catalog, "trivy-severe-scan.yaml", []byte(severe))
	manifest := func(name, task string) []byte {
		return []byte(`apiVersion: ciss.dev/v1
kind: Tool
name: ` + name + `
task: ` + task + `
versionTask: ciss-trivy-version
jobTypes: [image-scan]
params:
  image: $(target.image)
workspaces:
  reports: {output: true}
  trivy-db: {from: trivy-db}
reports:
  - {format: native, mediaType: application/json, path: report.json, summary: trivy-json}
`)
	}
	writeFile(t, catalog, "trivy-severe.tool.yaml", manifest("trivy-severe", "ciss-trivy-severe-scan"))
	writeFile(t, catalog, "trivy-replica.tool.yaml", manifest("trivy-replica", "ciss-trivy-image-scan"))
	for name, script := range map[string]string{
		"crashy":  "echo candidate crashed >&2\nexit 3",
		"garbage": "echo 'this is not a trivy report' > $(workspaces.reports.path)/report.json",
		"hangs":   "sleep 3600",
	} {
		task := `apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: ciss-` + name + `
spec:
  params:
    - {name: image, type: string}
  workspaces:
    - {name: trivy-db, readOnly: true}
    - {name: reports}
  steps:
    - name: run
      image: aquasec/trivy:0.69.0
      script: |
        #!/bin/sh
` + indent(script, "        ") + "\n"
		writeFile(t, catalog, "ciss-"+name+".yaml", []byte(task))
		writeFile(t, catalog, name+".tool.yaml", manifest(name, "ciss-"+name))
	}
	return catalog
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

const trialTools = `version: 2
tools:
  - {name: trivy, job_types: [image-scan]}
  - {name: trivy-severe, job_types: [image-scan]}
  - {name: trivy-replica, job_types: [image-scan]}
  - {name: crashy, job_types: [image-scan]}
  - {name: garbage, job_types: [image-scan]}
  - {name: hangs, job_types: [image-scan]}
`

// trialReport fetches a trial's report until cond holds.
func (c *client) trialReport(name string, within time.Duration, cond func(schemas.TrialReport) bool) schemas.TrialReport {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for {
		resp, b := c.do(http.MethodGet, "/v1/trials/"+name, nil, nil)
		if resp.StatusCode == http.StatusOK {
			var r schemas.TrialReport
			require.NoError(c.t, json.Unmarshal(b, &r))
			if cond(r) {
				return r
			}
		}
		last = fmt.Sprintf("HTTP %d %s", resp.StatusCode, b)
		if time.Now().After(deadline) {
			c.t.Fatalf("trial %s: condition not met within %s; last answer %s", name, within, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestShadowTrialKnownDifferences runs a few dozen jobs of fixture images
// with the shipped Trivy as primary and two shadows: Trivy limited to HIGH
// and CRITICAL (whose differences are known exactly: it misses each
// vulnerable image's two MEDIUM findings) and the primary's own Task under a
// second name (the A/A noise baseline). The trial reports must equal the
// known differences; the primary's results are untouched and the shadows'
// never come back from /v1/jobs/{id}/result.
func TestShadowTrialKnownDifferences(t *testing.T) {
	routing := writeFile(t, t.TempDir(), "routing.yaml", []byte(trialTools+`routes:
  - job_type: image-scan
    primary: trivy
    shadows:
      - {tool: trivy-severe, trial: severe}
      - {tool: trivy-replica, trial: trivy-aa}
trials:
  - {name: trivy-aa, baseline: true}
  - {name: severe, noise_trial: trivy-aa}
`))
	e := newEnvConfig(t, stack.Config{TasksDir: trialCatalog(t), RoutingFile: routing})

	// Follow the trial live, as a team would.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var mu sync.Mutex
	events := map[string]schemas.TrialComparison{}
	sub, err := e.nc.Subscribe(schemas.SubjectTrialCompared("severe"), func(m *nats.Msg) {
		var tc schemas.TrialComparison
		if _, err := schemas.Unmarshal(m.Data, schemas.TypeTrialCompared, &tc); err == nil {
			mu.Lock()
			events[tc.JobID] = tc
			mu.Unlock()
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()

	const vulnerable, clean = 16, 8
	var medium, severe int
	for _, f := range fixture.VulnerableFindings() {
		if f.Severity == "HIGH" || f.Severity == "CRITICAL" {
			severe++
		} else {
			medium++
		}
	}
	var ids []string
	for i := range vulnerable + clean {
		img := e.s.Images.Vulnerable
		if i%3 == 2 {
			img = e.s.Images.Clean
		}
		ids = append(ids, e.admin.submit(noCache(scan(img)), nil).ID)
	}
	want := schemas.Summary{Critical: 1, High: 1, Medium: 2}
	for i, id := range ids {
		j := e.admin.waitDone(id)
		require.Equal(t, schemas.StatusSucceeded, j.Status, "%+v", j.Error)
		require.Equal(t, "trivy", j.Tool, "the job's result is the primary's")
		if i%3 == 2 {
			require.Equal(t, schemas.Summary{}, j.Result.Summary)
		} else {
			require.Equal(t, want, j.Result.Summary)
		}
		require.NotNil(t, j.Result.Findings, "the primary's findings document")
		var shadows []string
		for _, tr := range j.Tasks {
			if tr.Role == schemas.RoleShadow {
				shadows = append(shadows, tr.Tool+"/"+tr.Trial)
			}
		}
		require.ElementsMatch(t, []string{"trivy-severe/severe", "trivy-replica/trivy-aa"}, shadows)
		// The result endpoint answers the primary's Trivy JSON, never a shadow's.
		resp, b := e.admin.result(id, schemas.MediaTypeJSON)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		obj, err := e.js.ObjectStore(ctx, schemas.ObjectReports)
		require.NoError(t, err)
		primary, err := obj.GetBytes(ctx, j.Result.Reports[0].Object)
		require.NoError(t, err)
		require.Equal(t, string(primary), string(b))
	}

	n := vulnerable + clean
	aa := e.admin.trialReport("trivy-aa", 3*time.Minute, func(r schemas.TrialReport) bool { return r.JobsCompared == n })
	require.True(t, aa.Baseline)
	require.Equal(t, vulnerable*len(fixture.VulnerableFindings()), aa.Both)
	require.Zero(t, aa.OnlyPrimary+aa.OnlyCandidate+aa.SeverityDisagreements+aa.Errors)
	require.Equal(t, 1.0, aa.AgreementRate)

	rep := e.admin.trialReport("severe", 3*time.Minute, func(r schemas.TrialReport) bool { return r.JobsCompared == n })
	require.Equal(t, "trivy", rep.Primary)
	require.Equal(t, "trivy-severe", rep.Candidate)
	require.Equal(t, schemas.JobTypeImageScan, rep.JobType)
	require.Zero(t, rep.Errors)
	require.Zero(t, rep.PrimaryErrors)
	require.Equal(t, vulnerable*severe, rep.Both)
	require.Equal(t, vulnerable*medium, rep.OnlyPrimary)
	require.Zero(t, rep.OnlyCandidate)
	require.Zero(t, rep.SeverityDisagreements)
	require.Zero(t, rep.Ignored)
	wantAgree := float64(severe) / float64(severe+medium)
	require.InDelta(t, wantAgree, rep.AgreementRate, 1e-9)
	require.Equal(t, 1.0, rep.Precision)
	require.InDelta(t, wantAgree, rep.Recall, 1e-9)
	require.Equal(t, "trivy-aa", rep.NoiseTrial)
	require.Zero(t, rep.NoiseDisagreement)
	require.InDelta(t, 1-wantAgree, rep.NetDisagreement, 1e-9)
	require.Greater(t, rep.DurationRatioP50, 0.0)
	require.GreaterOrEqual(t, rep.DurationRatioP95, rep.DurationRatioP50)
	require.Len(t, rep.TopDifferences, medium)
	for _, d := range rep.TopDifferences {
		require.Equal(t, "only_primary", d.Kind)
		require.Equal(t, vulnerable, d.Count)
		require.Equal(t, schemas.SeverityMedium, d.Finding.Severity)
		require.Len(t, d.ExampleJobs, 3)
	}

	resp, b := e.admin.do(http.MethodGet, "/v1/trials", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	var list struct{ Trials []schemas.TrialReport }
	require.NoError(t, json.Unmarshal(b, &list))
	require.Len(t, list.Trials, 2)
	require.Equal(t, "severe", list.Trials[0].Name)
	require.Equal(t, "trivy-aa", list.Trials[1].Name)
	resp, _ = e.admin.do(http.MethodGet, "/v1/trials/nope", nil, nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = e.admin.do(http.MethodGet, "/v1/trials/Bad..Name", nil, nil)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	resp, _ = e.audit.do(http.MethodGet, "/v1/trials", nil, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "trials span tenants: readers may not see them")

	// Every comparison was published on the trial's own subject.
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(events) == n }, time.Minute, 100*time.Millisecond)
	mu.Lock()
	for _, id := range ids {
		require.Contains(t, events, id)
		require.Empty(t, events[id].OnlyCandidate)
	}
	mu.Unlock()

	// The dispatcher exports the same aggregate as metrics.
	mresp, err := http.Get(e.s.AdminURL(stack.Dispatcher) + "/metrics")
	require.NoError(t, err)
	mb, err := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	require.NoError(t, err)
	metrics := string(mb)
	require.Contains(t, metrics, fmt.Sprintf(`ciss_trial{measure="only_primary",trial="severe"} %d`, vulnerable*medium))
	require.Contains(t, metrics, fmt.Sprintf(`ciss_trial{measure="jobs_compared",trial="severe"} %d`, n))
}

// TestBrokenCandidatesNeverTouchThePrimary shadows the primary with a
// candidate that crashes, one that writes garbage and one that hangs. Every
// job still completes with the primary's exact result while the hanging
// candidate has not finished, and the trials count the candidates' errors.
func TestBrokenCandidatesNeverTouchThePrimary(t *testing.T) {
	routing := writeFile(t, t.TempDir(), "routing.yaml", []byte(trialTools+`routes:
  - job_type: image-scan
    primary: trivy
    shadows:
      - {tool: crashy, trial: crashy}
      - {tool: garbage, trial: garbage}
      - {tool: hangs, trial: hangs, timeout: 4s}
`))
	e := newEnvConfig(t, stack.Config{TasksDir: trialCatalog(t), RoutingFile: routing,
		Args: map[string][]string{stack.Worker: {"-max-deliver", "2"}}})
	const n = 6
	var ids []string
	for range n {
		ids = append(ids, e.admin.submit(noCache(scan(e.s.Images.Vulnerable)), nil).ID)
	}
	for _, id := range ids {
		j := e.admin.waitDone(id)
		require.Equal(t, schemas.StatusSucceeded, j.Status, "%+v", j.Error)
		require.Equal(t, "trivy", j.Tool)
		require.Equal(t, schemas.Summary{Critical: 1, High: 1, Medium: 2}, j.Result.Summary)
		require.Nil(t, j.Error)
	}
	// The last job finished while the hanging candidate (one at a time, each
	// run 4s, two deliveries) still has jobs to go: shadows never delay it.
	last, _ := e.admin.get(ids[n-1], 0)
	for _, tr := range last.Tasks {
		if tr.Tool == "hangs" {
			require.False(t, tr.Status.Terminal(), "the hanging shadow of the last job cannot have finished yet")
		}
	}
	for _, name := range []string{"crashy", "garbage"} {
		rep := e.admin.trialReport(name, 3*time.Minute, func(r schemas.TrialReport) bool { return r.JobsCompared == n })
		require.Equal(t, n, rep.Errors, name)
		require.Equal(t, 1.0, rep.ErrorRate, name)
		require.Zero(t, rep.PrimaryErrors, name)
		require.Zero(t, rep.Both+rep.OnlyPrimary+rep.OnlyCandidate, name)
	}
	// Results are unchanged after the shadows' failures came in.
	for _, id := range ids {
		j, _ := e.admin.get(id, 0)
		require.Equal(t, schemas.StatusSucceeded, j.Status)
		require.Equal(t, schemas.Summary{Critical: 1, High: 1, Medium: 2}, j.Result.Summary)
	}
}

// TestSwapPrimaryUnderLoad rewrites the routing file while jobs stream in:
// an invalid version is rejected (and audited) with the old routing kept, a
// valid one swaps the primary. Every job completes exactly once, with the
// result of the one primary it was routed to.
func TestSwapPrimaryUnderLoad(t *testing.T) {
	dir := t.TempDir()
	routing := writeFile(t, dir, "routing.yaml", []byte(trialTools+`routes:
  - job_type: image-scan
    primary: trivy
`))
	e := newEnvConfig(t, stack.Config{TasksDir: trialCatalog(t), RoutingFile: routing})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	const n = 40
	var ids []string
	for i := range n {
		if i == n/3 {
			before := auditCount(ctx, t, e, false)
			writeFile(t, dir, "routing.yaml", []byte(trialTools+`routes:
  - job_type: image-scan
    primary: trivy
    canary: {tool: trivy-severe, percent: 150}
`))
			a := waitAudit(ctx, t, e, false, before)
			require.Contains(t, a.Error, "canary.percent: 150 is not between 0 and 100")
			before = auditCount(ctx, t, e, true)
			writeFile(t, dir, "routing.yaml", []byte(trialTools+`routes:
  - job_type: image-scan
    primary: trivy-severe
`))
			waitAudit(ctx, t, e, true, before)
		}
		ids = append(ids, e.admin.submit(scan(e.s.Images.Vulnerable), nil).ID)
	}
	tools := map[string]int{}
	for _, id := range ids {
		j := e.admin.waitDone(id)
		require.Equal(t, schemas.StatusSucceeded, j.Status, "%+v", j.Error)
		tools[j.Tool]++
		primaries := 0
		for _, tr := range j.Tasks {
			if tr.Role == schemas.RolePrimary {
				primaries++
				require.Equal(t, j.Tool, tr.Tool)
			}
		}
		require.Equal(t, 1, primaries, "one authoritative task per job")
		switch j.Tool {
		case "trivy":
			require.Equal(t, schemas.Summary{Critical: 1, High: 1, Medium: 2}, j.Result.Summary)
		case "trivy-severe":
			require.Equal(t, schemas.Summary{Critical: 1, High: 1}, j.Result.Summary)
		default:
			t.Fatalf("job %s ran on %q", id, j.Tool)
		}
	}
	require.Positive(t, tools["trivy"], "%v", tools)
	require.Positive(t, tools["trivy-severe"], "%v", tools)
	require.GreaterOrEqual(t, tools["trivy-severe"], n-n/3, "every job submitted after the swap (and queued ones dispatched after it)")

	// Exactly one completion event per job: none lost, none doubled. A job
	// is terminal in the store just before its completion is announced, so
	// the last announcements may trail the statuses read above.
	stream, err := e.js.Stream(ctx, schemas.StreamJobs)
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(schemas.SubjectJobsCompletedPrefix+".>"))
		require.NoError(t, err)
		total := 0
		for _, c := range info.State.Subjects {
			total += int(c)
		}
		if total >= n || time.Now().After(deadline) {
			require.Equal(t, n, total)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func auditCount(ctx context.Context, t *testing.T, e *env, accepted bool) uint64 {
	t.Helper()
	stream, err := e.js.Stream(ctx, schemas.StreamAudit)
	require.NoError(t, err)
	subject := schemas.SubjectAuditRouting(accepted)
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	require.NoError(t, err)
	return info.State.Subjects[subject]
}

// waitAudit waits for a new routing audit record with the verdict (more
// than before) and checks it names the file's digest and owner.
func waitAudit(ctx context.Context, t *testing.T, e *env, accepted bool, before uint64) schemas.RoutingAudit {
	t.Helper()
	subject := schemas.SubjectAuditRouting(accepted)
	deadline := time.Now().Add(time.Minute)
	for auditCount(ctx, t, e, accepted) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("no new routing audit record on %s", subject)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stream, err := e.js.Stream(ctx, schemas.StreamAudit)
	require.NoError(t, err)
	m, err := stream.GetLastMsgForSubject(ctx, subject)
	require.NoError(t, err)
	var a schemas.RoutingAudit
	_, err = schemas.Unmarshal(m.Data, schemas.TypeRoutingAudited, &a)
	require.NoError(t, err)
	require.Equal(t, accepted, a.Accepted)
	require.Contains(t, a.Owner, "uid ")
	require.True(t, strings.HasPrefix(a.Digest, "sha256:"), a.Digest)
	return a
}

// TestVarianceAlertsOnNewFindings scans the same image name three times: a
// clean build, then a vulnerable one, then a clean one again. The second
// scan reports the vulnerable image's findings as new and raises an alert
// (HIGH and CRITICAL ones are among them); the third reports them fixed and
// raises none.
func TestVarianceAlertsOnNewFindings(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	clean, err := fixture.CleanImage()
	require.NoError(t, err)
	vuln, err := fixture.VulnerableImage()
	require.NoError(t, err)
	var ids []string
	for i, img := range []v1.Image{clean, vuln, clean} {
		tag := fmt.Sprintf("demo/app:%d", i+1)
		_, err := e.s.Registry.Push(ctx, tag, img)
		require.NoError(t, err)
		j := e.admin.waitDone(e.admin.submit(scan(e.s.Registry.Addr()+"/"+tag), nil).ID)
		require.Equal(t, schemas.StatusSucceeded, j.Status, "%+v", j.Error)
		ids = append(ids, j.ID)
	}
	stream, err := e.js.Stream(ctx, schemas.StreamTrials)
	require.NoError(t, err)
	read := func(subject string, n int) []schemas.VarianceReport {
		t.Helper()
		var out []schemas.VarianceReport
		require.Eventually(t, func() bool {
			info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
			return err == nil && int(info.State.Subjects[subject]) >= n
		}, time.Minute, 100*time.Millisecond, "%d reports on %s", n, subject)
		c, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
		require.NoError(t, err)
		for range n {
			m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
			require.NoError(t, err)
			var r schemas.VarianceReport
			_, err = schemas.Unmarshal(m.Data(), schemas.TypeVarianceChanged, &r)
			require.NoError(t, err)
			out = append(out, r)
		}
		return out
	}
	reports := read(schemas.SubjectVariance("dev"), 2)
	target := e.s.Registry.Addr() + "/demo/app"
	first, second := reports[0], reports[1]
	require.Equal(t, target, first.Target)
	require.Equal(t, ids[1], first.JobID)
	require.Equal(t, ids[0], first.PreviousJobID)
	require.Len(t, first.New, len(fixture.VulnerableFindings()))
	require.Empty(t, first.Fixed)
	require.True(t, first.Alert)
	require.Equal(t, schemas.SeverityHigh, first.AlertSeverity)
	require.Equal(t, ids[2], second.JobID)
	require.Equal(t, ids[1], second.PreviousJobID)
	require.Empty(t, second.New)
	require.Len(t, second.Fixed, len(fixture.VulnerableFindings()))
	require.False(t, second.Alert)
	alerts := read(schemas.SubjectVarianceAlert("dev"), 1)
	require.Equal(t, ids[1], alerts[0].JobID)
}
