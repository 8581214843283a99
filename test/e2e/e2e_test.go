// Package e2e tests CISS end to end: the real gateway, dispatcher and worker
// binaries as processes, a real NATS JetStream server, a loopback OCI registry
// and the real Trivy CLI with the offline DB fixture.
package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/test/fixture"
)

// TestScanToSARIF is the quick start: submit a scan of the demo image, poll,
// and read the SARIF report naming the fixture's CVEs. Then the other formats,
// the clean image, and the result cache.
func TestScanToSARIF(t *testing.T) {
	e := newEnv(t, nil)
	job := e.admin.submit(scan(e.s.Images.Vulnerable), nil)
	require.Equal(t, schemas.StatusQueued, job.Status)
	require.Equal(t, "dev", job.Tenant)

	done := e.admin.waitDone(job.ID)
	require.Equal(t, schemas.StatusSucceeded, done.Status, "error: %+v", done.Error)
	require.Equal(t, "trivy", done.Tool)
	require.Equal(t, "0.69.0", done.ToolVersion)
	require.False(t, done.CacheHit)
	require.NotNil(t, done.StartedAt)
	require.NotNil(t, done.FinishedAt)
	want := fixture.VulnerableFindings()
	require.Equal(t, len(want), done.Result.Summary.Total())
	require.Equal(t, "2@2026-11-01T00:00:00Z", done.Result.DBVersion)

	resp, sarif := e.admin.result(job.ID, schemas.MediaTypeSARIF)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", sarif)
	require.Equal(t, schemas.MediaTypeSARIF, resp.Header.Get("Content-Type"))
	var doc struct {
		Version string `json:"version"`
		Runs    []struct {
			Tool struct {
				Driver struct {
					Name string `json:"name"`
				} `json:"driver"`
			} `json:"tool"`
			Results []struct {
				RuleID string `json:"ruleId"`
			} `json:"results"`
		} `json:"runs"`
	}
	require.NoError(t, json.Unmarshal(sarif, &doc))
	require.Equal(t, "2.1.0", doc.Version)
	var got []string
	for _, r := range doc.Runs[0].Results {
		got = append(got, r.RuleID)
	}
	for _, f := range want {
		require.Contains(t, got, f.ID)
	}

	resp, native := e.admin.result(job.ID, "application/json")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(native), `"SchemaVersion": 2`)
	resp, cdx := e.admin.result(job.ID, schemas.MediaTypeCycloneDX)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(cdx), `"bomFormat": "CycloneDX"`)
	resp, _ = e.admin.result(job.ID, "text/html")
	require.Equal(t, http.StatusNotAcceptable, resp.StatusCode)

	t.Run("clean image has no findings", func(t *testing.T) {
		j := e.admin.waitDone(e.admin.submit(scan(e.s.Images.Clean), nil).ID)
		require.Equal(t, schemas.StatusSucceeded, j.Status)
		require.Zero(t, j.Result.Summary.Total())
	})
	t.Run("rescan of the same digest is a cache hit, by tag too", func(t *testing.T) {
		j := e.admin.waitDone(e.admin.submit(scan(e.s.Images.VulnerableTag), nil).ID)
		require.Equal(t, schemas.StatusSucceeded, j.Status)
		require.True(t, j.CacheHit, "same digest, tool and DB version must be answered from the cache")
		require.Equal(t, done.Result.Reports, j.Result.Reports)
		resp, b := e.admin.result(j.ID, schemas.MediaTypeSARIF)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, sarif, b)
	})
	t.Run("cache can be bypassed per job", func(t *testing.T) {
		j := e.admin.waitDone(e.admin.submit(noCache(scan(e.s.Images.Vulnerable)), nil).ID)
		require.Equal(t, schemas.StatusSucceeded, j.Status)
		require.False(t, j.CacheHit)
		require.Equal(t, len(want), j.Result.Summary.Total())
	})
	t.Run("missing image fails permanently with a clear error", func(t *testing.T) {
		j := e.admin.waitDone(e.admin.submit(scan(e.s.Registry.Addr()+"/demo/nope:1.0"), nil).ID)
		require.Equal(t, schemas.StatusFailed, j.Status)
		require.Equal(t, schemas.CodeTargetNotFound, j.Error.Code)
		require.Equal(t, 1, j.Attempts, "a permanent failure is not retried")
		resp, b := e.admin.result(j.ID, schemas.MediaTypeSARIF)
		require.Equal(t, http.StatusConflict, resp.StatusCode, "%s", b)
		require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	})
	t.Run("a registry on a link-local (metadata) address is refused", func(t *testing.T) {
		j := e.admin.waitDone(e.admin.submit(scan("169.254.169.254/latest/meta-data:1"), nil).ID)
		require.Equal(t, schemas.StatusFailed, j.Status)
		require.Equal(t, schemas.CodeTargetDenied, j.Error.Code, "%+v", j.Error)
		require.Equal(t, 1, j.Attempts)
	})
	t.Run("idempotency key maps a retry to the same job", func(t *testing.T) {
		h := map[string]string{"Idempotency-Key": "e2e-retry-1"}
		a := e.admin.submit(scan(e.s.Images.Clean), h)
		b := e.admin.submit(scan(e.s.Images.Clean), h)
		require.Equal(t, a.ID, b.ID)
		require.Equal(t, 1, e.countMsgs(schemas.StreamJobs, schemas.SubjectJobRequested(schemas.LaneInteractive), a.ID))
	})
}

// TestMTLSAndTenants checks the refusals against the real gateway binary.
func TestMTLSAndTenants(t *testing.T) {
	e := newEnv(t, nil)
	handshake := func(kp *fixture.KeyPair) error {
		hc, err := e.s.Client(kp)
		require.NoError(t, err)
		resp, err := hc.Get(e.s.APIURL + "/v1/jobs")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	t.Run("no client certificate", func(t *testing.T) {
		require.Error(t, handshake(nil))
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		other, err := fixture.NewCA("evil", "")
		require.NoError(t, err)
		kp, err := other.IssueClient(fixture.ClientOpts{CommonName: "ciss-admin", SPIFFEID: fixture.DevAdminSPIFFEID})
		require.NoError(t, err)
		require.Error(t, handshake(kp))
	})
	t.Run("expired certificate", func(t *testing.T) {
		kp, err := e.s.PKI.CA.IssueClient(fixture.ClientOpts{CommonName: "ciss-admin", SPIFFEID: fixture.DevAdminSPIFFEID,
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
		require.NoError(t, err)
		require.Error(t, handshake(kp))
	})
	t.Run("valid certificate without a policy binding is forbidden", func(t *testing.T) {
		c := e.newClient(fixture.ClientOpts{CommonName: "stranger", SPIFFEID: "spiffe://ciss.dev/tenant/nobody/x"})
		resp, b := c.do(http.MethodGet, "/v1/jobs", nil, nil)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "%s", b)
		require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	})
	t.Run("reader cannot submit", func(t *testing.T) {
		resp, _ := e.audit.do(http.MethodPost, "/v1/jobs", scan(e.s.Images.Clean), nil)
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
	})
	t.Run("a tenant never sees another tenant's job", func(t *testing.T) {
		j := e.acme.submit(scan(e.s.Images.Clean), nil)
		_, code := e.globe.get(j.ID, 0)
		require.Equal(t, http.StatusNotFound, code)
		resp, _ := e.globe.result(j.ID, "application/json")
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
		resp, _ = e.globe.do(http.MethodDelete, "/v1/jobs/"+j.ID, nil, nil)
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
		resp, b := e.globe.do(http.MethodGet, "/v1/jobs", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.NotContains(t, string(b), j.ID)
		// The same tenant's reader does see it.
		_, code = e.audit.get(j.ID, 0)
		require.Equal(t, http.StatusOK, code)
		resp, b = e.audit.do(http.MethodGet, "/v1/jobs", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, string(b), j.ID)
	})
	t.Run("bad requests get problem+json and create nothing", func(t *testing.T) {
		resp, b := e.acme.do(http.MethodPost, "/v1/jobs", map[string]any{"type": "image-scan", "target": map[string]string{"image": "not a ref"}}, nil)
		require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode, "%s", b)
		require.Contains(t, string(b), "target.image")
		resp, _ = e.acme.do(http.MethodPost, "/v1/jobs", map[string]any{"type": "image-scan", "surprise": 1}, nil)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	})
	// TLS 1.2 is refused: the listener is TLS 1.3 only.
	t.Run("TLS 1.2 refused", func(t *testing.T) {
		tc := &tls.Config{RootCAs: e.s.PKI.CA.Pool(), MaxVersion: tls.VersionTLS12,
			Certificates: []tls.Certificate{must(e.s.PKI.Client.TLSCertificate())}}
		conn, err := tls.Dial("tcp", strings.TrimPrefix(e.s.APIURL, "https://"), tc)
		if err == nil {
			conn.Close()
		}
		require.Error(t, err)
	})
}

// TestWorkerKilledMidScan kills the worker while Trivy is pulling the image,
// starts it again, and checks the job completes exactly once.
func TestWorkerKilledMidScan(t *testing.T) {
	e := newEnv(t, map[string][]string{"worker": {"-ack-wait", "3s"}})
	release := e.s.Registry.Hold("demo/vulnerable")
	defer release()
	job := e.admin.submit(noCache(scan(e.s.Images.Vulnerable)), nil)
	e.admin.waitFor(job.ID, time.Minute, func(j schemas.Job) bool { return j.Status == schemas.StatusRunning })
	// Trivy is blocked pulling blobs; make sure it got that far.
	deadline := time.Now().Add(30 * time.Second)
	for e.s.Registry.BlobGets("demo/vulnerable") == 0 {
		require.True(t, time.Now().Before(deadline), "trivy never fetched a blob")
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, e.s.StopComponent("worker", syscall.SIGKILL))
	release()
	running, _ := e.admin.get(job.ID, 0)
	require.Equal(t, schemas.StatusRunning, running.Status, "killing the worker must not finish the job")

	require.NoError(t, e.s.StartComponent(context.Background(), "worker"))
	done := e.admin.waitDone(job.ID)
	require.Equal(t, schemas.StatusSucceeded, done.Status, "error: %+v", done.Error)
	require.Equal(t, 2, done.Attempts, "the task must have been redelivered once")
	require.Equal(t, len(fixture.VulnerableFindings()), done.Result.Summary.Total())

	// Exactly once: one completed task result and one job completion event.
	taskID := schemas.TaskID(job.ID, "trivy")
	require.Equal(t, 1, e.countMsgs(schemas.StreamResults, schemas.SubjectResultCompleted("trivy"), taskID))
	e.waitCount(1, schemas.StreamJobs, schemas.SubjectJobCompleted("dev"), job.ID)
	// And the work queue is empty.
	ctx := context.Background()
	st := must(e.js.Stream(ctx, schemas.StreamTasks))
	info := must(st.Info(ctx))
	require.Zero(t, info.State.Msgs, "acknowledged tasks leave the work queue")
}

// TestBulkBacklogDoesNotStarveInteractive fills the bulk lane, then submits an
// interactive job: it must finish while the bulk backlog is still draining.
func TestBulkBacklogDoesNotStarveInteractive(t *testing.T) {
	e := newEnv(t, map[string][]string{"worker": {"-concurrency-bulk", "1", "-concurrency-interactive", "2"}})
	const backlog = 16
	var ids []string
	for range backlog {
		ids = append(ids, e.admin.submit(bulk(noCache(scan(e.s.Images.Vulnerable))), nil).ID)
	}
	// Wait until the bulk lane is busy.
	e.admin.waitFor(ids[0], time.Minute, func(j schemas.Job) bool { return j.Status != schemas.StatusQueued })
	inter := e.admin.submit(noCache(scan(e.s.Images.Clean)), nil)
	done := e.admin.waitDone(inter.ID)
	require.Equal(t, schemas.StatusSucceeded, done.Status)
	finished := 0
	for _, id := range ids {
		if j, _ := e.admin.get(id, 0); j.Status.Terminal() {
			finished++
		}
	}
	t.Logf("bulk jobs finished when the interactive job was done: %d of %d", finished, backlog)
	require.Less(t, finished, backlog/2, "the interactive job waited behind the bulk backlog")
	for _, id := range ids {
		require.Equal(t, schemas.StatusSucceeded, e.admin.waitDone(id).Status)
	}
}

// TestNATSRestart stops the NATS server: submissions are refused with 503 and
// Retry-After (never a 202 for a job that is not stored), and after the restart
// jobs accepted before and after complete.
func TestNATSRestart(t *testing.T) {
	e := newEnv(t, nil)
	release := e.s.Registry.Hold("demo/vulnerable")
	before := e.admin.submit(noCache(scan(e.s.Images.Vulnerable)), nil)
	e.admin.waitFor(before.ID, time.Minute, func(j schemas.Job) bool { return j.Status == schemas.StatusRunning })

	e.s.StopNATS()
	resp, b := e.admin.do(http.MethodPost, "/v1/jobs", scan(e.s.Images.Clean), nil)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s", b)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	release()

	require.NoError(t, e.s.StartNATS())
	// Clients reconnect by themselves; the gateway accepts again once it has.
	deadline := time.Now().Add(time.Minute)
	var after schemas.Job
	for {
		resp, b := e.admin.do(http.MethodPost, "/v1/jobs", scan(e.s.Images.Clean), nil)
		if resp.StatusCode == http.StatusAccepted {
			require.NoError(t, json.Unmarshal(b, &after))
			break
		}
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s", b)
		require.True(t, time.Now().Before(deadline), "gateway did not recover after NATS came back")
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, schemas.StatusSucceeded, e.admin.waitDone(before.ID).Status)
	require.Equal(t, schemas.StatusSucceeded, e.admin.waitDone(after.ID).Status)
	// The refused submission left no job behind.
	resp, b = e.admin.do(http.MethodGet, "/v1/jobs?limit=200", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var list struct {
		Jobs []schemas.Job `json:"jobs"`
	}
	require.NoError(t, json.Unmarshal(b, &list))
	ids := []string{}
	for _, j := range list.Jobs {
		ids = append(ids, j.ID)
	}
	slices.Sort(ids)
	want := []string{before.ID, after.ID}
	slices.Sort(want)
	require.Equal(t, want, ids)
}

// TestCancelRunningJob cancels a scan that is running: the job ends cancelled,
// the worker's process is interrupted, and no result is served.
func TestCancelRunningJob(t *testing.T) {
	e := newEnv(t, nil)
	release := e.s.Registry.Hold("demo/vulnerable")
	defer release()
	job := e.admin.submit(noCache(scan(e.s.Images.Vulnerable)), nil)
	e.admin.waitFor(job.ID, time.Minute, func(j schemas.Job) bool { return j.Status == schemas.StatusRunning })
	resp, b := e.admin.do(http.MethodDelete, "/v1/jobs/"+job.ID, nil, nil)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", b)
	j := e.admin.waitDone(job.ID)
	require.Equal(t, schemas.StatusCancelled, j.Status)
	// The worker reports the task cancelled (its run was killed, not finished).
	taskID := schemas.TaskID(job.ID, "trivy")
	deadline := time.Now().Add(30 * time.Second)
	for e.countMsgs(schemas.StreamResults, schemas.SubjectResultCompleted("trivy"), `"outcome":"cancelled"`) == 0 {
		require.True(t, time.Now().Before(deadline), "worker did not report task %s cancelled", taskID)
		time.Sleep(100 * time.Millisecond)
	}
	release()
	resp, _ = e.admin.result(job.ID, schemas.MediaTypeSARIF)
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	resp, _ = e.admin.do(http.MethodDelete, "/v1/jobs/"+job.ID, nil, nil)
	require.Equal(t, http.StatusConflict, resp.StatusCode, "cancelling a finished job is a conflict")
}

// TestPoisonAndCrashLoopDeadLetter: an undecodable task and a task whose worker
// dies on every delivery both end in the dead-letter stream with a reason, and
// the crash-looping job fails instead of looping forever.
func TestPoisonAndCrashLoopDeadLetter(t *testing.T) {
	e := newEnv(t, map[string][]string{"worker": {"-ack-wait", "3s", "-max-deliver", "2"}})
	ctx := context.Background()

	_, err := e.js.Publish(ctx, schemas.SubjectTask(schemas.LaneInteractive, "trivy"), []byte(`{"garbage":true}`))
	require.NoError(t, err)

	release := e.s.Registry.Hold("demo/vulnerable")
	defer release()
	job := e.admin.submit(noCache(scan(e.s.Images.Vulnerable)), nil)
	for attempt := 1; attempt <= 2; attempt++ {
		e.admin.waitFor(job.ID, time.Minute, func(j schemas.Job) bool { return j.Status == schemas.StatusRunning && j.Attempts == attempt })
		require.NoError(t, e.s.StopComponent("worker", syscall.SIGKILL))
		require.NoError(t, e.s.StartComponent(ctx, "worker"))
	}
	j := e.admin.waitDone(job.ID)
	require.Equal(t, schemas.StatusFailed, j.Status)
	require.Equal(t, schemas.CodeMaxDeliveries, j.Error.Code, "%+v", j.Error)

	deadline := time.Now().Add(30 * time.Second)
	for {
		poison := e.countMsgs(schemas.StreamDeadLetter, schemas.SubjectDeadLetter(schemas.StreamTasks), "undecodable")
		crash := e.countMsgs(schemas.StreamDeadLetter, schemas.SubjectDeadLetter(schemas.StreamTasks), "without an acknowledgement")
		if poison == 1 && crash == 1 {
			break
		}
		require.True(t, time.Now().Before(deadline), "dead letters: poison %d, crash loop %d", poison, crash)
		time.Sleep(200 * time.Millisecond)
	}
	// The dead letter is written before the task is removed from the work
	// queue, so the removal may trail it a little.
	st := must(e.js.Stream(ctx, schemas.StreamTasks))
	for {
		info := must(st.Info(ctx))
		if info.State.Msgs == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "dead tasks leave the work queue: %d left", info.State.Msgs)
		time.Sleep(200 * time.Millisecond)
	}
	_, err = st.GetMsg(ctx, 1)
	require.True(t, errors.Is(err, jetstream.ErrMsgNotFound), "%v", err)
}
