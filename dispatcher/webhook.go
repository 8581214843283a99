package dispatcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/dispatcher/internal/subscription"
	"ciss.dev/schemas"
)

// webhookJobNS derives webhook job ids. Never change it: a redelivered event
// must map to the jobs it created before, across upgrades.
var webhookJobNS = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://ciss.dev/ns/webhook-job"))

// WebhookJobID is the id of the job-th job of subscription sub for a
// delivery: deterministic, so handling an event twice creates nothing new.
func WebhookJobID(p schemas.GitProvider, host, deliveryID, sub string, job int) string {
	return uuid.NewSHA1(webhookJobNS, fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s\x00%d", p, host, deliveryID, sub, job)).String()
}

// handleWebhook turns a stored webhook event into the jobs its matching
// subscriptions ask for. Each job gets a deterministic id and its state is
// created before its request is published, so a redelivery (of the message or
// of the webhook) finds the jobs and publishes nothing twice; the published
// request then flows like any other (handleJobRequested).
func (d *Dispatcher) handleWebhook(ctx context.Context, msg jetstream.Msg) error {
	var ev schemas.WebhookEvent
	if _, err := schemas.Unmarshal(msg.Data(), schemas.TypeWebhookReceived, &ev); err != nil {
		return permanent(err)
	}
	if !ev.Provider.Valid() || !ev.Event.Valid() || ev.DeliveryID == "" || ev.Repo == "" || ev.Commit == "" {
		return permanent(fmt.Errorf("webhook event with invalid provider %q, event %q, delivery %q, repo %q or commit %q",
			ev.Provider, ev.Event, ev.DeliveryID, ev.Repo, ev.Commit))
	}
	d.met.webhookEvents.Add(1)
	planned := d.subscriptions.Load().Plan(&ev)
	if len(planned) == 0 {
		d.log.Info("webhook matched no subscription", "provider", ev.Provider, "delivery", ev.DeliveryID, "repo", ev.Repo, "event", ev.Event, "ref", ev.Ref)
		return nil
	}
	var ids []string
	for _, p := range planned {
		if p.Err != nil {
			// The configuration is valid, but gives no valid job for this
			// event (a branch name that is no image tag): retrying cannot help.
			d.log.Warn("webhook job skipped: invalid for this event", "subscription", p.Subscription, "job", p.Index,
				"delivery", ev.DeliveryID, "repo", ev.Repo, "ref", ev.Ref, "err", p.Err)
			continue
		}
		id, err := d.createWebhookJob(ctx, &ev, p)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	d.log.Info("webhook created jobs", "provider", ev.Provider, "delivery", ev.DeliveryID, "repo", ev.Repo, "event", ev.Event,
		"ref", ev.Ref, "commit", ev.Commit, "jobs", ids)
	return nil
}

// createWebhookJob creates one planned job's state and publishes its request,
// unless an earlier delivery of the same event got that far.
func (d *Dispatcher) createWebhookJob(ctx context.Context, ev *schemas.WebhookEvent, p subscription.Planned) (string, error) {
	req := p.Request
	b, _ := json.Marshal(req) // A validated JobRequest always encodes.
	sum := sha256.Sum256(b)
	now := time.Now().UTC()
	job := schemas.Job{
		ID:            WebhookJobID(ev.Provider, ev.Host, ev.DeliveryID, p.Subscription, p.Index),
		Tenant:        p.Tenant,
		Type:          req.Type,
		Target:        req.Target,
		Params:        req.Params,
		Lane:          req.Lane,
		Cache:         req.CacheEnabled(),
		Status:        schemas.StatusQueued,
		RequestedBy:   "webhook:" + string(ev.Provider) + "/" + p.Subscription,
		RequestDigest: "sha256:" + hex.EncodeToString(sum[:]),
		Provenance: &schemas.Provenance{
			Provider: ev.Provider, Host: ev.Host, Repo: ev.Repo, Ref: ev.Ref, Commit: ev.Commit, Event: ev.Event,
			DeliveryID: ev.DeliveryID, Sender: ev.Sender, URL: ev.URL, Subscription: p.Subscription,
		},
		CreatedAt: now,
		UpdatedAt: now,
	}
	stored, err := d.jobs.Ensure(ctx, job)
	if err != nil {
		return "", err
	}
	if stored.Status.Terminal() || primaryTool(stored) != "" {
		return job.ID, nil // dispatched (or finished) on an earlier delivery
	}
	data, err := schemas.Marshal(schemas.TypeJobRequested, d.cfg.Source, stored.ID, stored)
	if err != nil {
		return "", permanent(err)
	}
	if _, err := d.js.Publish(ctx, schemas.SubjectJobRequested(stored.Lane), data, jetstream.WithMsgID(stored.ID)); err != nil {
		return "", fmt.Errorf("publish job %s: %w", stored.ID, err)
	}
	d.met.webhookJobs.Add(1)
	return job.ID, nil
}
