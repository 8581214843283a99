package schemas

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
)

// GitProvider names a git hosting product whose webhooks CISS receives. Each
// has its own receiver, signature scheme and payload shapes.
type GitProvider string

// Git providers.
const (
	// ProviderGitHub is GitHub.com or GitHub Enterprise Server.
	ProviderGitHub GitProvider = "github"
	// ProviderGitLab is GitLab.com or a self-managed GitLab.
	ProviderGitLab GitProvider = "gitlab"
)

// GitProviders lists every provider.
func GitProviders() []GitProvider { return []GitProvider{ProviderGitHub, ProviderGitLab} }

// Valid reports whether p is a known provider.
func (p GitProvider) Valid() bool { return p == ProviderGitHub || p == ProviderGitLab }

// GitEvent is a webhook event normalised across providers: what subscriptions
// match on and what job provenance records.
type GitEvent string

// Normalised git events.
const (
	// GitEventPush is a push to a branch (GitHub push to refs/heads/…, GitLab Push Hook).
	GitEventPush GitEvent = "push"
	// GitEventTagPush is a pushed tag (GitHub push to refs/tags/…, GitLab Tag Push Hook).
	GitEventTagPush GitEvent = "tag_push"
	// GitEventPullRequest is a pull request opened, reopened or updated with new
	// commits (GitHub pull_request opened/reopened/synchronize, GitLab Merge
	// Request Hook open/reopen/update with new commits).
	GitEventPullRequest GitEvent = "pull_request"
)

// GitEvents lists every normalised event.
func GitEvents() []GitEvent { return []GitEvent{GitEventPush, GitEventTagPush, GitEventPullRequest} }

// Valid reports whether e is a known event.
func (e GitEvent) Valid() bool {
	return e == GitEventPush || e == GitEventTagPush || e == GitEventPullRequest
}

// WebhookVerdict is what the receiver did with a webhook request.
type WebhookVerdict string

// Webhook verdicts, one per audit record.
const (
	// VerdictAccepted means the event was verified and stored durably (202).
	VerdictAccepted WebhookVerdict = "accepted"
	// VerdictDuplicate means the delivery was received before; nothing was
	// stored again (202).
	VerdictDuplicate WebhookVerdict = "duplicate"
	// VerdictIgnored means the request was verified but is not an event CISS
	// acts on, such as a ping or a closed pull request (200 or 202).
	VerdictIgnored WebhookVerdict = "ignored"
	// VerdictRejected means the request was refused: bad or missing signature,
	// too large, malformed (4xx).
	VerdictRejected WebhookVerdict = "rejected"
	// VerdictUnavailable means a verified event could not be stored (503); the
	// host may redeliver it.
	VerdictUnavailable WebhookVerdict = "unavailable"
)

// WebhookVerdicts lists every verdict.
func WebhookVerdicts() []WebhookVerdict {
	return []WebhookVerdict{VerdictAccepted, VerdictDuplicate, VerdictIgnored, VerdictRejected, VerdictUnavailable}
}

// Valid reports whether v is a known verdict.
func (v WebhookVerdict) Valid() bool {
	switch v {
	case VerdictAccepted, VerdictDuplicate, VerdictIgnored, VerdictRejected, VerdictUnavailable:
		return true
	}
	return false
}

// Provenance says which git event a job was created from. It is set on jobs
// created by webhooks and copied to their tasks, so job status, the job
// completed event and the workers all carry it.
type Provenance struct {
	// Provider is the git host product the event came from.
	Provider GitProvider `json:"provider"`
	// Host is the git host's name, e.g. "github.com" or "gitlab.example.com".
	Host string `json:"host"`
	// Repo is the repository's full path: "owner/name" on GitHub,
	// "group/subgroup/name" on GitLab.
	Repo string `json:"repo"`
	// Ref is the full git ref of the commit: "refs/heads/main",
	// "refs/tags/v1.2.0", or a pull request's head branch.
	Ref string `json:"ref"`
	// Commit is the commit SHA the job is about.
	Commit string `json:"commit"`
	// Event is the normalised event.
	Event GitEvent `json:"event"`
	// DeliveryID is the host's delivery id (X-GitHub-Delivery,
	// Idempotency-Key or X-Gitlab-Event-UUID).
	DeliveryID string `json:"delivery_id"`
	// Sender is the login of the user who caused the event.
	Sender string `json:"sender,omitempty"`
	// URL links to the commit, comparison or pull request on the host.
	URL string `json:"url,omitempty"`
	// Subscription names the subscription rule that created the job.
	Subscription string `json:"subscription,omitempty"`
}

// WebhookEvent is a verified webhook event as stored in StreamWebhooks (the data
// of dev.ciss.webhook.received.v1): the fields CISS acts on, normalised across
// providers, plus the payload as received when it fits in an event.
type WebhookEvent struct {
	// Provider is the receiver the event arrived on.
	Provider GitProvider `json:"provider"`
	// DeliveryID identifies the delivery; redeliveries repeat it.
	DeliveryID string `json:"delivery_id"`
	// HostEvent is the host's own event name: X-GitHub-Event ("push",
	// "pull_request") or X-Gitlab-Event ("Push Hook", "Merge Request Hook").
	HostEvent string `json:"host_event"`
	// Event is the normalised event.
	Event GitEvent `json:"event"`
	// Action is the pull request action as the host names it ("opened",
	// "synchronize", "reopened"; GitLab "open", "reopen", "update").
	Action string `json:"action,omitempty"`
	// Host is the git host's name, from the repository's URL.
	Host string `json:"host"`
	// Repo is the repository's full path ("acme/app", "acme/platform/app").
	Repo string `json:"repo"`
	// Ref is the full ref pushed, or a pull request's head branch as a ref.
	Ref string `json:"ref"`
	// Commit is the commit pushed (the new head) or the pull request's head commit.
	Commit string `json:"commit"`
	// BaseRef is a pull request's target branch as a ref ("refs/heads/main").
	BaseRef string `json:"base_ref,omitempty"`
	// Number is a pull request's number (GitLab: the merge request's iid).
	Number int `json:"number,omitempty"`
	// Sender is the login of the user who caused the event.
	Sender string `json:"sender,omitempty"`
	// URL links to the comparison, commit or pull request on the host.
	URL string `json:"url,omitempty"`
	// ReceivedAt is when the receiver got the request.
	ReceivedAt time.Time `json:"received_at"`
	// PayloadDigest is "sha256:" and the hex digest of the body as received,
	// which is what the host signed.
	PayloadDigest string `json:"payload_digest"`
	// PayloadSize is the body's length in bytes.
	PayloadSize int `json:"payload_size"`
	// Payload is the host's JSON payload, absent when the event would exceed
	// MaxEventSize with it (large pushes): everything CISS acts on is in the
	// fields above.
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Owner is the repository's owner: everything before the last "/" of Repo
// (a GitHub user or organisation, a GitLab group path).
func (e *WebhookEvent) Owner() string {
	owner, _ := SplitRepo(e.Repo)
	return owner
}

// Branch is the branch the event is about, without "refs/heads/": the pushed
// branch, or a pull request's target branch. Empty for tags.
func (e *WebhookEvent) Branch() string {
	ref := e.Ref
	if e.Event == GitEventPullRequest {
		ref = e.BaseRef
	}
	b, ok := strings.CutPrefix(ref, "refs/heads/")
	if !ok {
		return ""
	}
	return b
}

// Tag is the pushed tag without "refs/tags/"; empty unless Event is tag_push.
func (e *WebhookEvent) Tag() string {
	if e.Event != GitEventTagPush {
		return ""
	}
	t, _ := strings.CutPrefix(e.Ref, "refs/tags/")
	return t
}

// SplitRepo splits a repository path at its last "/" into owner (or group
// path) and name. A path without "/" is all name.
func SplitRepo(repo string) (owner, name string) {
	i := strings.LastIndexByte(repo, '/')
	if i < 0 {
		return "", repo
	}
	return repo[:i], repo[i+1:]
}

// WebhookAudit is the audit record of one webhook request, whatever its
// verdict (the data of dev.ciss.webhook.audited.v1 in StreamAudit). It never
// holds a secret, a signature or the body; Repo and Sender come from the body
// and are only trustworthy when Verified is true.
type WebhookAudit struct {
	// Provider is the receiver the request arrived on.
	Provider GitProvider `json:"provider"`
	// Verdict is what the receiver did.
	Verdict WebhookVerdict `json:"verdict"`
	// Status is the HTTP status answered.
	Status int `json:"status"`
	// Reason explains a verdict other than accepted.
	Reason string `json:"reason,omitempty"`
	// Verified is true when the request's signature or token was verified.
	Verified bool `json:"verified"`
	// HostEvent is the event header as sent (X-GitHub-Event, X-Gitlab-Event).
	HostEvent string `json:"host_event,omitempty"`
	// Event is the normalised event, once the payload was parsed.
	Event GitEvent `json:"event,omitempty"`
	// DeliveryID is the delivery id header as sent.
	DeliveryID string `json:"delivery_id,omitempty"`
	// Repo is the repository the body names (claimed, unless Verified).
	Repo string `json:"repo,omitempty"`
	// Sender is the user the body names (claimed, unless Verified).
	Sender string `json:"sender,omitempty"`
	// RemoteAddr is the client's address as the receiver saw it.
	RemoteAddr string `json:"remote_addr"`
	// Headers are an allow-listed subset of the request headers, values cut
	// to MaxAuditValue; never the signature or token headers.
	Headers map[string]string `json:"headers,omitempty"`
	// BodySize is the number of body bytes read (at most the limit).
	BodySize int64 `json:"body_size"`
	// PayloadDigest is "sha256:" and the hex digest of the body, when it was
	// read whole.
	PayloadDigest string `json:"payload_digest,omitempty"`
	// ReceivedAt is when the request arrived.
	ReceivedAt time.Time `json:"received_at"`
}

// MaxAuditValue bounds every string a receiver copies from a request into a
// WebhookAudit, so unauthenticated input cannot bloat the audit stream.
const MaxAuditValue = 256

// WebhookDeliveryKey is the deduplication key of a delivery: the KV key in
// BucketWebhookDeliveries and the Nats-Msg-Id in StreamWebhooks. The delivery
// id is hashed because it is arbitrary header text, and a key must be a few
// safe characters.
func WebhookDeliveryKey(p GitProvider, deliveryID string) string {
	sum := sha256.Sum256([]byte(deliveryID))
	return string(p) + "." + hex.EncodeToString(sum[:])
}
