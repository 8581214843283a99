package dispatcher_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/dispatcher"
	"ciss.dev/schemas"
)

const subsAcme = `version: 1
subscriptions:
  - name: acme-main
    tenant: acme
    match:
      repos: ["acme/*"]
      events: [push]
      branches: [main]
    jobs:
      - type: image-scan
        target: {image: "registry.acme.example/{repo}:{short_commit}"}
        params: {severity: "HIGH,CRITICAL"}
      - type: image-scan
        target: {image: "registry.acme.example/{repo}:{branch}-latest"}
  - name: acme-tags
    tenant: acme
    match:
      repos: ["acme/*"]
      events: [push, tag_push]
    jobs:
      - type: image-scan
        target: {image: "registry.acme.example/{repo}:{tag}"}
`

var errNotYet = errors.New("not yet")

func pushEvent(delivery, repo, ref string) schemas.WebhookEvent {
	return schemas.WebhookEvent{
		Provider: schemas.ProviderGitHub, DeliveryID: delivery, HostEvent: "push", Event: schemas.GitEventPush,
		Host: "github.com", Repo: repo, Ref: ref, Commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", Sender: "octocat",
		URL: "https://github.com/" + repo + "/compare/a...b", ReceivedAt: time.Now().UTC(),
		PayloadDigest: "sha256:" + hex64('a'), PayloadSize: 7419,
	}
}

// publishWebhook stores an event as the gateway's receiver does; msgID lets a
// test store the same delivery twice (as after a lost delivery record).
func (e *env) publishWebhook(t *testing.T, ev schemas.WebhookEvent, msgID string) uint64 {
	t.Helper()
	return e.publishEvent(t, schemas.SubjectWebhook(ev.Provider), schemas.TypeWebhookReceived, msgID, ev)
}

// requested returns the job ids of the stored job requests.
func (e *env) requested(t *testing.T) []string {
	t.Helper()
	var ids []string
	for _, m := range e.msgs(t, schemas.StreamJobs, "ciss.jobs.requested.>") {
		var j schemas.Job
		_, err := schemas.Unmarshal(m.Data, schemas.TypeJobRequested, &j)
		require.NoError(t, err)
		ids = append(ids, j.ID)
	}
	return ids
}

func TestWebhookCreatesJobs(t *testing.T) {
	t.Parallel()
	e := setupWith(t, routingTrivy, subsAcme)
	ev := pushEvent("72d3162e-cc78-11e3-81ab-4c9367dc0958", "acme/Payments-API", "refs/heads/main")
	seq := e.publishWebhook(t, ev, "github.d1")
	e.waitSettled(t, schemas.StreamWebhooks, "dispatcher-webhooks", seq)

	id0 := dispatcher.WebhookJobID(ev.Provider, ev.Host, ev.DeliveryID, "acme-main", 0)
	id1 := dispatcher.WebhookJobID(ev.Provider, ev.Host, ev.DeliveryID, "acme-main", 1)
	require.NotEqual(t, id0, id1)
	require.True(t, schemas.ValidJobID(id0), id0)
	require.ElementsMatch(t, []string{id0, id1}, e.requested(t),
		"two jobs of acme-main; acme-tags' {tag} gives no valid image for a branch push and is skipped")

	j := e.waitJob(t, "acme", id0, func(j schemas.Job) error {
		if j.Tool == "" {
			return errNotYet
		}
		return nil
	})
	require.Equal(t, "registry.acme.example/acme/payments-api:0d1a26e67d8f", j.Target.Image)
	require.Equal(t, map[string]string{"severity": "HIGH,CRITICAL"}, j.Params)
	require.Equal(t, schemas.LaneInteractive, j.Lane)
	require.True(t, j.Cache)
	require.Equal(t, "webhook:github/acme-main", j.RequestedBy)
	require.Equal(t, &schemas.Provenance{
		Provider: schemas.ProviderGitHub, Host: "github.com", Repo: "acme/Payments-API", Ref: "refs/heads/main",
		Commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", Event: schemas.GitEventPush,
		DeliveryID: "72d3162e-cc78-11e3-81ab-4c9367dc0958", Sender: "octocat",
		URL: "https://github.com/acme/Payments-API/compare/a...b", Subscription: "acme-main",
	}, j.Provenance)
	j1, err := e.job(t, "acme", id1)
	require.NoError(t, err)
	require.Equal(t, "registry.acme.example/acme/payments-api:main-latest", j1.Target.Image)

	// The task carries the provenance to the workers.
	eventually(t, 10*time.Second, func() error {
		for _, m := range e.msgs(t, schemas.StreamTasks, "ciss.tasks.interactive.trivy") {
			var task schemas.Task
			_, err := schemas.Unmarshal(m.Data, schemas.TypeTaskRequested, &task)
			require.NoError(t, err)
			if task.JobID == id0 {
				require.Equal(t, j.Provenance, task.Provenance)
				return nil
			}
		}
		return errNotYet
	})

	t.Run("a redelivered event creates no second job", func(t *testing.T) {
		seq := e.publishWebhook(t, ev, "github.d1-again")
		e.waitSettled(t, schemas.StreamWebhooks, "dispatcher-webhooks", seq)
		require.ElementsMatch(t, []string{id0, id1}, e.requested(t), "the jobs exist and were dispatched: nothing is published again")
	})
	t.Run("a tag push", func(t *testing.T) {
		tag := pushEvent("tag-delivery", "acme/web", "refs/tags/v1.4.0")
		tag.Event = schemas.GitEventTagPush
		seq := e.publishWebhook(t, tag, "github.tag")
		e.waitSettled(t, schemas.StreamWebhooks, "dispatcher-webhooks", seq)
		id := dispatcher.WebhookJobID(tag.Provider, tag.Host, tag.DeliveryID, "acme-tags", 0)
		j := e.waitJob(t, "acme", id, func(schemas.Job) error { return nil })
		require.Equal(t, "registry.acme.example/acme/web:v1.4.0", j.Target.Image)
		require.Equal(t, schemas.GitEventTagPush, j.Provenance.Event)
	})
	t.Run("no subscription matches", func(t *testing.T) {
		before := len(e.requested(t))
		seq := e.publishWebhook(t, pushEvent("other", "globex/web", "refs/heads/main"), "github.other")
		e.waitSettled(t, schemas.StreamWebhooks, "dispatcher-webhooks", seq)
		require.Len(t, e.requested(t), before)
	})
}

// TestWebhookRedeliveryAfterCrash replays an event whose jobs' state exists
// but whose requests were never published (a crash in between): the requests
// are published then, once.
func TestWebhookRedeliveryAfterCrash(t *testing.T) {
	t.Parallel()
	e := setupWith(t, routingTrivy, subsAcme)
	ev := pushEvent("crash-delivery", "acme/web", "refs/heads/main")
	id := dispatcher.WebhookJobID(ev.Provider, ev.Host, ev.DeliveryID, "acme-main", 0)
	// The state as a crashed dispatcher would have left it: created, queued, not dispatched.
	orphan := newJob("acme")
	orphan.ID = id
	kv, err := e.js.KeyValue(t.Context(), schemas.BucketJobs)
	require.NoError(t, err)
	b, err := json.Marshal(orphan)
	require.NoError(t, err)
	_, err = kv.Create(t.Context(), schemas.JobKey("acme", id), b)
	require.NoError(t, err)

	seq := e.publishWebhook(t, ev, "github.crash")
	e.waitSettled(t, schemas.StreamWebhooks, "dispatcher-webhooks", seq)
	seq = e.publishWebhook(t, ev, "github.crash-again")
	e.waitSettled(t, schemas.StreamWebhooks, "dispatcher-webhooks", seq)
	n := 0
	for _, r := range e.requested(t) {
		if r == id {
			n++
		}
	}
	require.Equal(t, 1, n, "published once: the second delivery finds the job dispatched")
}

func TestWebhookPoisonDeadLettered(t *testing.T) {
	t.Parallel()
	e := setupWith(t, routingTrivy, subsAcme)
	seq := e.publish(t, "ciss.webhooks.github", []byte(`{"not":"an event"}`), "poison-1")
	bad := pushEvent("", "acme/web", "refs/heads/main") // no delivery id
	seq2 := e.publishWebhook(t, bad, "poison-2")
	e.waitSettled(t, schemas.StreamWebhooks, "dispatcher-webhooks", max(seq, seq2))
	require.Len(t, e.msgs(t, schemas.StreamDeadLetter, "ciss.dlq."+schemas.StreamWebhooks), 2)
	require.Empty(t, e.requested(t))
}

func TestWebhookWithoutSubscriptions(t *testing.T) {
	t.Parallel()
	e := setup(t, routingTrivy)
	_, err := e.js.Consumer(t.Context(), schemas.StreamWebhooks, "dispatcher-webhooks")
	require.NoError(t, err, "events are consumed even without subscriptions, so none pile up")
	seq := e.publishWebhook(t, pushEvent("d", "acme/web", "refs/heads/main"), "github.d")
	e.waitSettled(t, schemas.StreamWebhooks, "dispatcher-webhooks", seq)
	require.Empty(t, e.requested(t))
	require.False(t, e.d.ReloadSubscriptions(), "no file to reload")
	for _, name := range []string{schemas.StreamWebhooks, schemas.StreamAudit} {
		_, err := e.js.Stream(t.Context(), name)
		require.NoError(t, err, name)
	}
	_, err = e.js.KeyValue(t.Context(), schemas.BucketWebhookDeliveries)
	require.NoError(t, err)
}

func TestReloadSubscriptions(t *testing.T) {
	t.Parallel()
	e := setupWith(t, routingTrivy, subsAcme)
	require.NoError(t, os.WriteFile(e.subs, []byte(strings.Replace(subsAcme, "type: image-scan", "type: sast", 1)), 0o600))
	require.False(t, e.d.ReloadSubscriptions(), "sast takes repo and commit, not image")
	seq := e.publishWebhook(t, pushEvent("before", "acme/web", "refs/heads/main"), "github.before")
	e.waitSettled(t, schemas.StreamWebhooks, "dispatcher-webhooks", seq)
	require.Len(t, e.requested(t), 2, "the previous subscriptions stay in force")

	require.NoError(t, os.WriteFile(e.subs, []byte(strings.Replace(subsAcme, `branches: [main]`, `branches: [develop]`, 1)), 0o600))
	require.True(t, e.d.ReloadSubscriptions())
	seq = e.publishWebhook(t, pushEvent("after", "acme/web", "refs/heads/main"), "github.after")
	e.waitSettled(t, schemas.StreamWebhooks, "dispatcher-webhooks", seq)
	require.Len(t, e.requested(t), 2, "main no longer matches")
}
