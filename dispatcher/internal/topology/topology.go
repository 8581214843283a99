// Package topology creates the JetStream streams, key-value buckets and object
// store that CISS runs on. The dispatcher owns the topology; the gateway and the
// workers only bind to it. deploy/nats/README.md explains each choice.
package topology

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/schemas"
)

// StreamAdvisories captures JetStream's max-deliveries advisories for the CISS
// streams, so a message that exhausted its deliveries is dead-lettered even when
// the dispatcher was down at the moment it happened.
const StreamAdvisories = "CISS_ADVISORIES"

// AdvisoryMaxDeliveriesPrefix is the subject prefix of max-deliveries advisories.
const AdvisoryMaxDeliveriesPrefix = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

// Config sizes the topology. The zero value suits a single-node server.
type Config struct {
	// Replicas for every stream and bucket; default 1. Use 3 on a NATS cluster.
	Replicas int
	// Retain is how long job requests, results and job state are kept; default 7 days.
	Retain time.Duration
	// RetainDeadLetters is how long dead letters are kept; default 30 days.
	RetainDeadLetters time.Duration
	// CacheTTL is how long a cached scan result may answer a rescan; default 24h.
	CacheTTL time.Duration
	// DuplicateWindow is how long JetStream remembers message ids to drop
	// duplicates; default 10 minutes, longer than any redelivery cycle.
	DuplicateWindow time.Duration
	// DeliveryTTL is how long a received webhook delivery id is remembered,
	// so a redelivery creates nothing; default 4 days (GitHub redelivers for
	// 3 days).
	DeliveryTTL time.Duration
	// RetainAudit is how long audit records are kept; default 30 days.
	RetainAudit time.Duration
	// AuditMaxBytes caps the audit stream, oldest records going first, so
	// unauthenticated requests cannot fill the disk; default 1 GiB.
	AuditMaxBytes int64
}

func (c Config) withDefaults() Config {
	c.Replicas = cmp.Or(c.Replicas, 1)
	c.Retain = cmp.Or(c.Retain, 7*24*time.Hour)
	c.RetainDeadLetters = cmp.Or(c.RetainDeadLetters, 30*24*time.Hour)
	c.CacheTTL = cmp.Or(c.CacheTTL, 24*time.Hour)
	c.DuplicateWindow = cmp.Or(c.DuplicateWindow, 10*time.Minute)
	c.DeliveryTTL = cmp.Or(c.DeliveryTTL, 4*24*time.Hour)
	c.RetainAudit = cmp.Or(c.RetainAudit, 30*24*time.Hour)
	c.AuditMaxBytes = cmp.Or(c.AuditMaxBytes, 1<<30)
	return c
}

// Streams returns the stream configurations of the topology.
func Streams(c Config) []jetstream.StreamConfig {
	c = c.withDefaults()
	base := func(name, desc string, subjects ...string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      c.Retain,
			MaxMsgSize:  schemas.MaxEventSize,
			Duplicates:  c.DuplicateWindow,
		}
	}
	jobs := base(schemas.StreamJobs, "CISS job requests per lane and job completion events", "ciss.jobs.>")
	tasks := base(schemas.StreamTasks, "CISS tool tasks per lane and tool: a work queue", schemas.SubjectTasksPrefix+".>")
	tasks.Retention = jetstream.WorkQueuePolicy
	results := base(schemas.StreamResults, "CISS task started/completed events from workers", "ciss.results.>")
	dlq := base(schemas.StreamDeadLetter, "CISS messages given up on, with the reason", schemas.SubjectDeadLetterPrefix+".>")
	dlq.MaxAge = c.RetainDeadLetters
	dlq.MaxMsgSize = 2 * schemas.MaxEventSize
	adv := base(StreamAdvisories, "JetStream max-deliveries advisories for CISS streams",
		AdvisoryMaxDeliveriesPrefix+"."+schemas.StreamJobs+".>",
		AdvisoryMaxDeliveriesPrefix+"."+schemas.StreamTasks+".>",
		AdvisoryMaxDeliveriesPrefix+"."+schemas.StreamResults+".>",
		AdvisoryMaxDeliveriesPrefix+"."+schemas.StreamWebhooks+".>")
	adv.MaxMsgSize = -1
	webhooks := base(schemas.StreamWebhooks, "CISS verified git webhook events per provider", schemas.SubjectWebhooksPrefix+".>")
	audit := base(schemas.StreamAudit, "CISS audit records: every webhook request with its verdict", "ciss.audit.>")
	audit.MaxAge = c.RetainAudit
	audit.MaxBytes = c.AuditMaxBytes
	audit.AllowDirect = true // the gateway's audit API reads by sequence
	trials := base(schemas.StreamTrials, "CISS tool trial comparisons and variance reports, to follow live or replay",
		schemas.SubjectTrialsPrefix+".>", schemas.SubjectVariancePrefix+".>", schemas.SubjectVarianceAlertPrefix+".>")
	return []jetstream.StreamConfig{jobs, tasks, results, dlq, adv, webhooks, audit, trials}
}

// Ensure creates or updates every stream, bucket and object store of the
// topology. It is idempotent and safe to run from several dispatchers at once.
func Ensure(ctx context.Context, js jetstream.JetStream, c Config) error {
	c = c.withDefaults()
	for _, sc := range Streams(c) {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
		}
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      schemas.BucketJobs,
		Description: "CISS job state, key <tenant>.<job id>",
		History:     5,
		TTL:         c.Retain,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	}); err != nil {
		return fmt.Errorf("ensure kv %s: %w", schemas.BucketJobs, err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      schemas.BucketResultCache,
		Description: "CISS scan result cache, key sha256(tool, tool version, db version, digest, params)",
		History:     1,
		TTL:         c.CacheTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	}); err != nil {
		return fmt.Errorf("ensure kv %s: %w", schemas.BucketResultCache, err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       schemas.BucketWebhookDeliveries,
		Description:  "CISS received webhook deliveries, key <provider>.sha256(delivery id)",
		History:      1,
		TTL:          c.DeliveryTTL,
		MaxValueSize: 1 << 10,
		Storage:      jetstream.FileStorage,
		Replicas:     c.Replicas,
	}); err != nil {
		return fmt.Errorf("ensure kv %s: %w", schemas.BucketWebhookDeliveries, err)
	}
	for _, kv := range []jetstream.KeyValueConfig{
		{Bucket: schemas.BucketTrials, Description: "CISS tool trials: task results (res.<job>.<tool>), comparisons (cmp.<trial>.<job>), reports (report.<trial>)"},
		{Bucket: schemas.BucketVariance, Description: "CISS last scan findings per target, key <tenant>.<sha256(target)>"},
	} {
		kv.History, kv.TTL, kv.Storage, kv.Replicas = 1, c.Retain, jetstream.FileStorage, c.Replicas
		if _, err := js.CreateOrUpdateKeyValue(ctx, kv); err != nil {
			return fmt.Errorf("ensure kv %s: %w", kv.Bucket, err)
		}
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      schemas.ObjectReports,
		Description: "CISS report documents, content-addressed",
		TTL:         c.Retain,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	}); err != nil {
		return fmt.Errorf("ensure object store %s: %w", schemas.ObjectReports, err)
	}
	return nil
}
