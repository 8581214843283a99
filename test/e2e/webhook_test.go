package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/test/stack"
)

// hook posts a webhook to the stack's receivers as a git host would.
func (e *env) hook(path string, body []byte, hdr map[string]string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.s.WebhookURL+path, bytes.NewReader(body))
	require.NoError(e.t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.s.WebhookClient().Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return resp.StatusCode, b
}

func (e *env) githubPush(delivery string, body []byte, secret string) (int, []byte) {
	return e.hook("/v1/webhooks/github", body, map[string]string{
		"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": stack.SignGitHub(secret, body),
		"User-Agent": "GitHub-Hookshot/5fa4a5f",
	})
}

// jobsFor lists the tenant's jobs created by a delivery.
func (c *client) jobsFor(delivery string) []schemas.Job {
	c.t.Helper()
	resp, b := c.do(http.MethodGet, "/v1/jobs?limit=200", nil, nil)
	require.Equal(c.t, http.StatusOK, resp.StatusCode, "%s", b)
	var list struct {
		Jobs []schemas.Job `json:"jobs"`
	}
	require.NoError(c.t, json.Unmarshal(b, &list))
	var out []schemas.Job
	for _, j := range list.Jobs {
		if j.Provenance != nil && j.Provenance.DeliveryID == delivery {
			out = append(out, j)
		}
	}
	return out
}

// waitJobsFor polls the job list until a delivery's jobs appear.
func (c *client) waitJobsFor(delivery string) []schemas.Job {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if jobs := c.jobsFor(delivery); len(jobs) > 0 {
			return jobs
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no job for delivery %s within a minute", delivery)
		}
		time.Sleep(100 * time.Millisecond) // poll interval, not a wait for an outcome
	}
}

// TestWebhookPushCreatesJob is the webhook quick start: a signed GitHub push
// to the running stack creates the dev subscription's job, which runs to the
// end and shows the push's provenance; a redelivery creates nothing more.
func TestWebhookPushCreatesJob(t *testing.T) {
	e := newEnv(t, nil)
	const commit = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
	body := stack.GitHubPush("acme/payments-api", "refs/heads/main", commit)
	delivery := fmt.Sprintf("e2e-%d", time.Now().UnixNano())

	code, b := e.githubPush(delivery, body, e.s.WebhookSecret)
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	require.JSONEq(t, `{"status":"accepted","delivery_id":"`+delivery+`"}`, string(b))

	jobs := e.admin.waitJobsFor(delivery)
	require.Len(t, jobs, 1, "the dev subscription has one job")
	done := e.admin.waitDone(jobs[0].ID)
	require.Equal(t, schemas.StatusSucceeded, done.Status, "error: %+v", done.Error)
	require.Equal(t, "dev", done.Tenant)
	require.Equal(t, e.s.Images.Vulnerable, done.Target.Image)
	require.Equal(t, schemas.LaneInteractive, done.Lane)
	require.Equal(t, &schemas.Provenance{
		Provider: schemas.ProviderGitHub, Host: "github.com", Repo: "acme/payments-api", Ref: "refs/heads/main", Commit: commit,
		Event: schemas.GitEventPush, DeliveryID: delivery, Sender: "octocat",
		URL: "https://github.com/acme/payments-api/compare/000000000001...0d1a26e67d8f", Subscription: "dev-any-repo",
	}, done.Provenance, "GET /v1/jobs/{id} shows where the job came from")
	e.waitCount(1, schemas.StreamJobs, schemas.SubjectJobCompleted("dev"), delivery,
		"the job completed event carries the provenance")

	t.Run("a redelivered delivery creates no second job", func(t *testing.T) {
		code, b := e.githubPush(delivery, body, e.s.WebhookSecret)
		require.Equal(t, http.StatusAccepted, code, "%s", b)
		require.Contains(t, string(b), `"status":"duplicate"`)
		// A later delivery's job appearing means the pipeline has caught up.
		later := delivery + "-later"
		code, b = e.hook("/v1/webhooks/gitlab", stack.GitLabPush("acme/checkout", "refs/heads/main", commit), map[string]string{
			"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": later, "X-Gitlab-Token": e.s.WebhookSecret,
		})
		require.Equal(t, http.StatusAccepted, code, "%s", b)
		lj := e.admin.waitJobsFor(later)
		require.Equal(t, schemas.ProviderGitLab, lj[0].Provenance.Provider)
		require.Equal(t, "gitlab.example.com", lj[0].Provenance.Host)
		require.Len(t, e.admin.jobsFor(delivery), 1)
		require.Equal(t, 1, e.countMsgs(schemas.StreamWebhooks, schemas.SubjectWebhook(schemas.ProviderGitHub), delivery),
			"the redelivery was not stored")
	})
	t.Run("a forged push is refused and audited", func(t *testing.T) {
		code, b := e.githubPush("forged-"+delivery, body, "not-the-dev-secret-0123456789")
		require.Equal(t, http.StatusUnauthorized, code, "%s", b)
		require.Contains(t, string(b), "webhook-unauthenticated")
		require.Empty(t, e.admin.jobsFor("forged-"+delivery))
		resp, ab := e.admin.do(http.MethodGet, "/v1/audit/webhooks?verdict=rejected", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", ab)
		require.Contains(t, string(ab), "forged-"+delivery)
		require.Contains(t, string(ab), "signature mismatch")
		require.NotContains(t, string(ab), e.s.WebhookSecret)
		resp, _ = e.acme.do(http.MethodGet, "/v1/audit/webhooks", nil, nil)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "the audit log needs the admin role")
	})
	t.Run("tenants see only their own webhook jobs", func(t *testing.T) {
		require.Empty(t, e.acme.jobsFor(delivery))
		_, code := e.acme.get(jobs[0].ID, 0)
		require.Equal(t, http.StatusNotFound, code)
	})
}
