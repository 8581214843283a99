package schemas

import "strings"

// JetStream topology: the names every component agrees on. The dispatcher
// creates the streams, buckets and object store (see deploy/nats/README.md for the
// whole design); the gateway and workers only bind to them.
const (
	// StreamJobs holds job requests per lane and job completion events.
	// Limits retention: it is the durable log of what was asked and answered.
	StreamJobs = "CISS_JOBS"
	// StreamTasks is the work queue of tool tasks, per lane and tool.
	StreamTasks = "CISS_TASKS"
	// StreamResults holds task started/completed events from workers.
	StreamResults = "CISS_RESULTS"
	// StreamDeadLetter holds messages that were given up on, with the reason.
	StreamDeadLetter = "CISS_DLQ"
	// StreamWebhooks holds verified git webhook events, per provider, until the
	// dispatcher has turned them into jobs (and for replay after that).
	StreamWebhooks = "CISS_WEBHOOKS"
	// StreamAudit holds audit records: every webhook request received, with
	// its verdict.
	StreamAudit = "CISS_AUDIT"

	// BucketJobs is the KV bucket of job state, keyed by JobKey.
	BucketJobs = "ciss_jobs"
	// BucketResultCache is the KV bucket mapping a cache key to a stored result.
	BucketResultCache = "ciss_result_cache"
	// ObjectReports is the object store bucket holding report documents.
	ObjectReports = "ciss_reports"
	// BucketWebhookDeliveries is the KV bucket recording received webhook
	// deliveries, keyed by WebhookDeliveryKey. Its TTL outlasts the hosts'
	// redelivery windows (GitHub: 3 days), far beyond JetStream's duplicate
	// window.
	BucketWebhookDeliveries = "ciss_webhook_deliveries"
)

// Subject prefixes and builders. Tokens that come from data (tenant, tool) are
// restricted by ValidToken so they can never add or remove subject levels.
const (
	SubjectJobsRequestedPrefix = "ciss.jobs.requested" // .<lane>
	SubjectJobsCompletedPrefix = "ciss.jobs.completed" // .<tenant>
	SubjectTasksPrefix         = "ciss.tasks"          // .<lane>.<tool>
	SubjectResultsStarted      = "ciss.results.started"
	SubjectResultsCompleted    = "ciss.results.completed"
	SubjectDeadLetterPrefix    = "ciss.dlq" // .<stream>
	// SubjectCancel is a core NATS subject (not stored): .<job id>.
	SubjectCancelPrefix       = "ciss.control.cancel"
	SubjectWebhooksPrefix     = "ciss.webhooks"      // .<provider>
	SubjectAuditWebhookPrefix = "ciss.audit.webhook" // .<provider>.<verdict>
)

// SubjectJobRequested is where job requests of a lane are published.
func SubjectJobRequested(l Lane) string { return SubjectJobsRequestedPrefix + "." + string(l) }

// SubjectJobCompleted is where the dispatcher announces a tenant's finished jobs.
func SubjectJobCompleted(tenant string) string { return SubjectJobsCompletedPrefix + "." + tenant }

// SubjectTask is where tasks for one tool in one lane are queued.
func SubjectTask(l Lane, tool string) string {
	return SubjectTasksPrefix + "." + string(l) + "." + tool
}

// SubjectResultStarted is where workers announce that a task of tool started.
func SubjectResultStarted(tool string) string { return SubjectResultsStarted + "." + tool }

// SubjectResultCompleted is where workers publish a task's result.
func SubjectResultCompleted(tool string) string { return SubjectResultsCompleted + "." + tool }

// SubjectDeadLetter is where messages given up on from stream are kept.
func SubjectDeadLetter(stream string) string { return SubjectDeadLetterPrefix + "." + stream }

// SubjectCancel is the core NATS subject that asks workers to stop a job.
func SubjectCancel(jobID string) string { return SubjectCancelPrefix + "." + jobID }

// SubjectWebhook is where verified webhook events of a provider are stored.
func SubjectWebhook(p GitProvider) string { return SubjectWebhooksPrefix + "." + string(p) }

// SubjectAuditWebhook is where audit records of a provider's webhook requests
// with a verdict are stored, so `nats stream view CISS_AUDIT --subject
// ciss.audit.webhook.*.rejected` lists the refusals.
func SubjectAuditWebhook(p GitProvider, v WebhookVerdict) string {
	return SubjectAuditWebhookPrefix + "." + string(p) + "." + string(v)
}

// JobKey is the key of a job in BucketJobs. The tenant comes first so a tenant's
// jobs can be listed with one key filter and a lookup by another tenant misses.
func JobKey(tenant, jobID string) string { return tenant + "." + jobID }

// TaskID is the id of the task that runs a job on a tool.
func TaskID(jobID, tool string) string { return jobID + "." + tool }

// MaxTokenLen bounds tenant and tool names.
const MaxTokenLen = 63

// ValidToken reports whether s may be used as a tenant or tool name: lower-case
// letters, digits and dashes, starting with a letter, at most MaxTokenLen long.
// Such a name is a single NATS subject token and a valid KV key part.
func ValidToken(s string) bool {
	if s == "" || len(s) > MaxTokenLen || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
	}) < 0
}

// ValidJobID reports whether s has the shape of a job id (a UUID in its canonical
// text form), so ids from URLs can go into keys and subjects safely.
func ValidJobID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
				return false
			}
		}
	}
	return true
}
