// Package dispatcher consumes job requests from JetStream, routes each job to the
// tool that should run it, publishes the tool task, and moves the job's state
// along as workers report progress and results. It also owns the JetStream
// topology and turns exhausted messages into dead letters.
package dispatcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/dispatcher/internal/jobstore"
	"ciss.dev/dispatcher/internal/route"
	"ciss.dev/dispatcher/internal/subscription"
	"ciss.dev/dispatcher/internal/topology"
	"ciss.dev/schemas"
)

// Config configures a Dispatcher. The zero value of every field but RoutingFile
// means its default.
type Config struct {
	// NATSURL is the NATS server (or cluster seed list, comma-separated).
	// Default nats://127.0.0.1:4222.
	NATSURL string
	// NATSCredsFile, NATSCAFile, NATSCertFile and NATSKeyFile configure NATS
	// authentication and TLS; all optional.
	NATSCredsFile, NATSCAFile, NATSCertFile, NATSKeyFile string
	// RoutingFile is the routing YAML. Required.
	RoutingFile string
	// CatalogDir is the tool catalog (deploy/tekton). Optional: when set,
	// routing that names a tool without a manifest there is rejected.
	CatalogDir string
	// SubscriptionsFile maps git webhook events to jobs (YAML; see package
	// subscription). Optional: without it webhook events are consumed and
	// create no job.
	SubscriptionsFile string
	// ReloadInterval is how often the routing and subscription files are
	// checked for changes; default 2s.
	ReloadInterval time.Duration
	// AdminAddr serves /healthz, /readyz and /metrics over plain HTTP; default
	// 127.0.0.1:9444. "-" disables it.
	AdminAddr string
	// Topology sizes the streams and buckets the dispatcher creates.
	Topology topology.Config
	// AckWait is how long a job request or result may be processed before it is
	// redelivered; default 30s.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one job request or result; default 10.
	MaxDeliver int
	// Concurrency is the number of messages handled at once per consumer; default 16.
	Concurrency int
	// Source is the CloudEvents source of events the dispatcher publishes;
	// default "ciss-dispatcher".
	Source string
	// Logger receives structured logs; default discards.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.RoutingFile == "" {
		return errors.New("dispatcher: Config.RoutingFile is required")
	}
	c.NATSURL = cmp.Or(c.NATSURL, nats.DefaultURL)
	c.ReloadInterval = cmp.Or(c.ReloadInterval, 2*time.Second)
	c.AdminAddr = cmp.Or(c.AdminAddr, "127.0.0.1:9444")
	c.AckWait = cmp.Or(c.AckWait, 30*time.Second)
	c.MaxDeliver = cmp.Or(c.MaxDeliver, 10)
	c.Concurrency = cmp.Or(c.Concurrency, 16)
	c.Source = cmp.Or(c.Source, "ciss-dispatcher")
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxDeliver < 2 {
		return fmt.Errorf("dispatcher: Config.MaxDeliver %d: must be at least 2", c.MaxDeliver)
	}
	return nil
}

// Dispatcher routes jobs to tools. Create it with New, run it with Start, stop
// it with Stop.
type Dispatcher struct {
	cfg    Config
	log    *slog.Logger
	router *route.Router
	met    *metrics
	// routingStamp identifies the routing file version in force, taken when it
	// was read, so a change between New and Start is not mistaken for loaded.
	routingStamp string
	// routingAudit records the routing loaded by New, audited once connected.
	routingAudit schemas.RoutingAudit
	// subscriptions is the subscription set in force (empty without a file);
	// subsStamp identifies its file version, like routingStamp.
	subscriptions atomic.Pointer[subscription.Set]
	subsStamp     string

	nc   *nats.Conn
	js   jetstream.JetStream
	jobs *jobstore.Store
	// trials, variance and reports back tool trials and variance tracking.
	trials   jetstream.KeyValue
	variance jetstream.KeyValue
	reports  jetstream.ObjectStore
	ready    atomic.Bool

	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	admin  *http.Server
	adminL net.Listener
}

// ErrStopped is the cause given to work interrupted by Stop.
var ErrStopped = errors.New("dispatcher stopped")

// New validates cfg and loads the routing file. It does not connect yet.
func New(cfg Config) (*Dispatcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	stamp := fileStamp(cfg.RoutingFile)
	tab, audit, err := loadRouting(cfg)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	d := &Dispatcher{cfg: cfg, log: cfg.Logger, router: route.NewRouter(tab), met: newMetrics(), routingStamp: stamp, routingAudit: audit}
	subs := &subscription.Set{}
	if cfg.SubscriptionsFile != "" {
		d.subsStamp = fileStamp(cfg.SubscriptionsFile)
		if subs, err = subscription.Load(cfg.SubscriptionsFile); err != nil {
			return nil, fmt.Errorf("dispatcher: %w", err)
		}
	}
	d.subscriptions.Store(subs)
	return d, nil
}

// Start connects to NATS, ensures the topology, and starts consuming. It returns
// once consumers are running; the topology is retried until NATS answers or ctx
// ends.
func (d *Dispatcher) Start(ctx context.Context) error {
	if d.cfg.AdminAddr != "-" {
		if err := d.startAdmin(); err != nil {
			return err
		}
	}
	nc, err := connect(d.cfg, d.log)
	if err != nil {
		return fmt.Errorf("dispatcher: connect to NATS: %w", err)
	}
	d.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("dispatcher: jetstream: %w", err)
	}
	d.js = js
	if err := retry(ctx, d.log, "ensure topology", func() error { return topology.Ensure(ctx, js, d.cfg.Topology) }); err != nil {
		nc.Close()
		return fmt.Errorf("dispatcher: %w", err)
	}
	kv, err := js.KeyValue(ctx, schemas.BucketJobs)
	if err != nil {
		nc.Close()
		return fmt.Errorf("dispatcher: bind %s: %w", schemas.BucketJobs, err)
	}
	d.jobs = jobstore.New(kv)
	if err := d.bindTrials(ctx); err != nil {
		nc.Close()
		return err
	}

	runCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	d.cancel = cancel
	for _, lane := range schemas.Lanes() {
		if err := d.consume(runCtx, schemas.StreamJobs, "dispatcher-"+string(lane), schemas.SubjectJobRequested(lane), d.handleJobRequested); err != nil {
			cancel(err)
			nc.Close()
			return err
		}
	}
	if err := d.consume(runCtx, schemas.StreamResults, "dispatcher-results", "ciss.results.>", d.handleResult); err != nil {
		cancel(err)
		nc.Close()
		return err
	}
	if err := d.consume(runCtx, schemas.StreamWebhooks, "dispatcher-webhooks", schemas.SubjectWebhooksPrefix+".>", d.handleWebhook); err != nil {
		cancel(err)
		nc.Close()
		return err
	}
	if err := d.consume(runCtx, topology.StreamAdvisories, "dispatcher-advisories", topology.AdvisoryMaxDeliveriesPrefix+".>", d.handleMaxDeliveries); err != nil {
		cancel(err)
		nc.Close()
		return err
	}
	d.wg.Add(2)
	go func() { defer d.wg.Done(); d.watchRouting(runCtx) }()
	go func() { defer d.wg.Done(); d.watchTrials(runCtx) }()
	d.auditRouting(ctx, d.routingAudit)
	d.ready.Store(true)
	d.log.Info("dispatcher started", "nats", nc.ConnectedUrlRedacted(), "routing", d.cfg.RoutingFile,
		"subscriptions", d.cfg.SubscriptionsFile, "subscription_rules", d.subscriptions.Load().Len())
	return nil
}

// Stop stops consuming, waits for in-flight messages until ctx ends, and
// disconnects. Unacknowledged messages are redelivered to another dispatcher.
func (d *Dispatcher) Stop(ctx context.Context) error {
	d.ready.Store(false)
	if d.cancel != nil {
		d.cancel(ErrStopped)
	}
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("dispatcher: stop: %w", context.Cause(ctx))
	}
	if d.nc != nil {
		_ = d.nc.Drain()
	}
	if d.admin != nil {
		err = errors.Join(err, d.admin.Shutdown(ctx))
	}
	return err
}

// AdminAddr is the bound admin address, once started.
func (d *Dispatcher) AdminAddr() string {
	if d.adminL == nil {
		return ""
	}
	return d.adminL.Addr().String()
}

// handler processes one message and says what the stream should do with it.
type handler func(ctx context.Context, msg jetstream.Msg) error

// consume runs a durable pull consumer with bounded concurrency. Each message's
// handler error decides its fate (see settle).
func (d *Dispatcher) consume(ctx context.Context, stream, durable, filter string, h handler) error {
	cons, err := d.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.cfg.AckWait,
		MaxDeliver:    d.cfg.MaxDeliver,
		MaxAckPending: d.cfg.Concurrency * 4,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("dispatcher: consumer %s on %s: %w", durable, stream, err)
	}
	for range d.cfg.Concurrency {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			for ctx.Err() == nil {
				batch, err := cons.Fetch(1, jetstream.FetchContext(ctxWithTimeout(ctx, 5*time.Second)))
				if err != nil {
					if ctx.Err() == nil {
						d.log.Debug("fetch", "consumer", durable, "err", err)
						sleepCtx(ctx, 500*time.Millisecond)
					}
					continue
				}
				for msg := range batch.Messages() {
					d.settle(ctx, durable, msg, h(ctx, msg))
				}
			}
		}()
	}
	return nil
}

// ctxWithTimeout returns a context that ends after d or with parent. Its cancel
// function is released by the timer; Fetch holds it only for one pull.
func ctxWithTimeout(parent context.Context, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(parent, d)
	context.AfterFunc(ctx, cancel)
	return ctx
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// settle acknowledges a handled message according to the handler's error:
// nil → ack; *PermanentError → dead-letter with the reason and terminate;
// anything else → nak with a delay growing with the delivery count, until the
// last delivery, which is dead-lettered too. A poison message never loops.
func (d *Dispatcher) settle(ctx context.Context, durable string, msg jetstream.Msg, err error) {
	meta, merr := msg.Metadata()
	if merr != nil {
		d.log.Error("message without metadata", "consumer", durable, "err", merr)
		_ = msg.Term()
		return
	}
	if err == nil {
		if aerr := msg.Ack(); aerr != nil {
			d.log.Warn("ack", "consumer", durable, "seq", meta.Sequence.Stream, "err", aerr)
		}
		return
	}
	var perm *PermanentError
	last := int(meta.NumDelivered) >= d.cfg.MaxDeliver
	if !errors.As(err, &perm) && !last {
		delay := min(time.Duration(meta.NumDelivered)*time.Second, 30*time.Second)
		d.log.Warn("handling failed, will retry", "consumer", durable, "seq", meta.Sequence.Stream, "delivery", meta.NumDelivered, "err", err)
		_ = msg.NakWithDelay(delay)
		return
	}
	reason := err.Error()
	if !errors.As(err, &perm) {
		reason = fmt.Sprintf("gave up after %d deliveries: %v", meta.NumDelivered, err)
	}
	d.log.Error("dead-lettering message", "consumer", durable, "seq", meta.Sequence.Stream, "reason", reason)
	if dlErr := d.deadLetter(ctx, schemas.DeadLetter{
		Stream: meta.Stream, Sequence: meta.Sequence.Stream, Subject: msg.Subject(),
		Consumer: durable, Deliveries: int(meta.NumDelivered), Reason: reason, Data: msg.Data(), At: time.Now().UTC(),
	}); dlErr != nil {
		// Keep the message rather than lose it: it comes back after AckWait.
		d.log.Error("dead-letter publish failed; message kept", "err", dlErr)
		_ = msg.Nak()
		return
	}
	_ = msg.TermWithReason(truncate(reason, 200))
}

func (d *Dispatcher) deadLetter(ctx context.Context, dl schemas.DeadLetter) error {
	dl = dl.Bounded()
	b, err := schemas.Marshal(schemas.TypeDeadLettered, d.cfg.Source, fmt.Sprintf("%s/%d", dl.Stream, dl.Sequence), dl)
	if err != nil {
		return err
	}
	d.met.deadLetters.Add(1)
	_, err = d.js.Publish(ctx, schemas.SubjectDeadLetter(dl.Stream), b,
		jetstream.WithMsgID(fmt.Sprintf("dlq.%s.%d", dl.Stream, dl.Sequence)))
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// watchRouting reloads the routing and subscription files when they change.
// A file that does not parse is reported and the current version stays in
// force.
func (d *Dispatcher) watchRouting(ctx context.Context) {
	last, lastSubs := d.routingStamp, d.subsStamp
	t := time.NewTicker(d.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s := fileStamp(d.cfg.RoutingFile); s != last {
			last = s
			d.ReloadRouting()
		}
		if d.cfg.SubscriptionsFile == "" {
			continue
		}
		if s := fileStamp(d.cfg.SubscriptionsFile); s != lastSubs {
			lastSubs = s
			d.ReloadSubscriptions()
		}
	}
}

// ReloadSubscriptions re-reads the subscription file now. It reports whether
// the new subscriptions took effect; on error the old ones stay.
func (d *Dispatcher) ReloadSubscriptions() bool {
	if d.cfg.SubscriptionsFile == "" {
		return false
	}
	set, err := subscription.Load(d.cfg.SubscriptionsFile)
	if err != nil {
		d.log.Error("subscriptions reload rejected; keeping current subscriptions", "err", err)
		d.met.reloadErrors.Add(1)
		return false
	}
	d.subscriptions.Store(set)
	d.log.Info("subscriptions reloaded", "file", d.cfg.SubscriptionsFile, "subscriptions", set.Len())
	return true
}

// ReloadRouting re-reads the routing file now. It reports whether the new
// routing took effect; on error the old routing stays.
func (d *Dispatcher) ReloadRouting() bool {
	tab, audit, err := loadRouting(d.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	defer d.auditRouting(ctx, audit)
	if err != nil {
		d.log.Error("routing reload rejected; keeping current routing", "err", err, "owner", audit.Owner)
		d.met.reloadErrors.Add(1)
		return false
	}
	d.router.Swap(tab)
	d.log.Info("routing reloaded", "file", d.cfg.RoutingFile, "digest", audit.Digest, "owner", audit.Owner, "trials", audit.Trials)
	return true
}

func fileStamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	return fmt.Sprint(fi.ModTime().UnixNano(), fi.Size())
}

// retry runs f until it succeeds or ctx ends, backing off up to 5s.
func retry(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	delay := 100 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		log.Warn(what+" failed, retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %w)", what, context.Cause(ctx), err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}
