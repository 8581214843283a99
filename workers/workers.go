// Package workers runs CISS tool tasks. A Worker pulls the tasks of the tools it
// implements from JetStream (one durable consumer per tool and lane, each lane
// with its own concurrency), runs them with heartbeats so long scans are not
// redelivered, answers repeated scans from a result cache, stores reports in the
// object store and publishes started/completed events.
package workers

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

	"ciss.dev/schemas"
	"ciss.dev/workers/internal/sign"
)

// Tool runs tasks for the job types it serves. Implementations are registered
// explicitly in Config.Tools.
type Tool interface {
	// Name is the tool's name in routing and subjects (schemas.ValidToken).
	Name() string
	// Version identifies the tool build and the data it scans with (e.g. its
	// vulnerability DB). Both are part of result cache keys.
	Version(ctx context.Context) (ToolVersion, error)
	// Run performs the task in dir, a fresh directory removed afterwards, and
	// returns the reports it wrote there. Errors wrapping ErrPermanent are not
	// retried.
	Run(ctx context.Context, in Input, dir string) (Output, error)
}

// ToolVersion identifies a tool build and its data.
type ToolVersion struct {
	Tool string
	Data string
}

// Input is what a tool runs on.
type Input struct {
	Task schemas.Task
	// Image is the task's image pinned to ImageDigest (repo@sha256:…), so the
	// scan, the cache key and the result all refer to the same bytes.
	Image       string
	ImageDigest string
	// Source is the checkout of the task's repository at its commit (sast).
	Source string
	// Timeout is the time the tool has.
	Timeout time.Duration
}

// Output is what a tool produced.
type Output struct {
	Summary schemas.Summary
	Reports []OutputFile
	// Findings are the findings in the common model, read by FindingsSource
	// (summary.SourceTrivyJSON, summary.SourceSARIF); empty source: none.
	Findings       []schemas.Finding
	FindingsSource string
}

// OutputFile is a report file the tool wrote.
type OutputFile struct {
	Format    string
	MediaType string
	Path      string
}

// Resolver pins an image reference to its digest.
type Resolver interface {
	// Resolve returns the manifest digest ("sha256:…") of ref. A missing image
	// wraps ErrPermanent.
	Resolve(ctx context.Context, ref string) (string, error)
}

// Config configures a Worker. Zero values mean defaults, except Tools.
type Config struct {
	// NATSURL is the NATS server URL; default nats://127.0.0.1:4222.
	NATSURL string
	// NATSCredsFile, NATSCAFile, NATSCertFile, NATSKeyFile configure NATS
	// authentication and TLS; all optional.
	NATSCredsFile, NATSCAFile, NATSCertFile, NATSKeyFile string
	// Tools are the tools this worker runs. At least one.
	Tools []Tool
	// Concurrency is the number of tasks run at once per lane and tool; default
	// interactive 4, bulk 1. Lanes run in separate pools, so a bulk backlog
	// never takes an interactive slot.
	Concurrency map[schemas.Lane]int
	// ShadowConcurrency is the number of shadow tasks (tool trials) run at
	// once per tool; default 1. Shadows have their own pool, so a slow or
	// hanging candidate never takes a slot of a job's authoritative task.
	ShadowConcurrency int
	// AckWait is how long a task may go without a heartbeat before JetStream
	// redelivers it to another worker; default 30s. Heartbeats are sent every
	// AckWait/3 while a task runs.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one task; default 5. The last failing
	// delivery fails the job.
	MaxDeliver int
	// TaskTimeout bounds one run when the task sets none; default 10m.
	TaskTimeout time.Duration
	// WorkDir is where per-task directories are made; default os.TempDir().
	WorkDir string
	// Resolver pins image tags to digests; default a registry client.
	Resolver Resolver
	// AdminAddr serves /healthz, /readyz and /metrics; default 127.0.0.1:9445;
	// "-" disables it.
	AdminAddr string
	// Name identifies this worker instance in events; default host name and pid.
	Name string
	// Source is the CloudEvents source; default "ciss-worker".
	Source string
	// Logger receives structured logs; default discards.
	Logger *slog.Logger
	// Signing, when set, signs results and passing images (see SigningConfig).
	Signing *SigningConfig
	// Git, when set, enables sast jobs: fetching repositories and pushing
	// signed tags for passing commits (see GitConfig).
	Git *GitConfig
}

func (c *Config) validate() error {
	if len(c.Tools) == 0 {
		return errors.New("workers: Config.Tools: at least one tool is required")
	}
	seen := map[string]bool{}
	for i, t := range c.Tools {
		if !schemas.ValidToken(t.Name()) || seen[t.Name()] {
			return fmt.Errorf("workers: Config.Tools[%d]: invalid or duplicate name %q", i, t.Name())
		}
		seen[t.Name()] = true
	}
	c.NATSURL = cmp.Or(c.NATSURL, nats.DefaultURL)
	conc := map[schemas.Lane]int{schemas.LaneInteractive: 4, schemas.LaneBulk: 1}
	for l, n := range c.Concurrency {
		if !l.Valid() || n < 0 {
			return fmt.Errorf("workers: Config.Concurrency: bad lane %q or count %d", l, n)
		}
		if n > 0 {
			conc[l] = n
		}
	}
	c.Concurrency = conc
	if c.ShadowConcurrency < 0 {
		return fmt.Errorf("workers: Config.ShadowConcurrency %d: must not be negative", c.ShadowConcurrency)
	}
	c.ShadowConcurrency = cmp.Or(c.ShadowConcurrency, 1)
	c.AckWait = cmp.Or(c.AckWait, 30*time.Second)
	if c.AckWait < 3*time.Second {
		return fmt.Errorf("workers: Config.AckWait %s: must be at least 3s", c.AckWait)
	}
	c.MaxDeliver = cmp.Or(c.MaxDeliver, 5)
	if c.MaxDeliver < 1 {
		return fmt.Errorf("workers: Config.MaxDeliver %d: must be positive", c.MaxDeliver)
	}
	c.TaskTimeout = cmp.Or(c.TaskTimeout, 10*time.Minute)
	c.WorkDir = cmp.Or(c.WorkDir, os.TempDir())
	if c.Resolver == nil {
		c.Resolver = RegistryResolver{}
	}
	c.AdminAddr = cmp.Or(c.AdminAddr, "127.0.0.1:9445")
	host, _ := os.Hostname()
	c.Name = cmp.Or(c.Name, fmt.Sprintf("%s-%d", host, os.Getpid()))
	c.Source = cmp.Or(c.Source, "ciss-worker")
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Worker runs tasks. Create it with New, run it with Start, stop it with Stop.
type Worker struct {
	cfg Config
	log *slog.Logger
	met *metrics

	nc      *nats.Conn
	js      jetstream.JetStream
	jobs    jetstream.KeyValue
	cache   jetstream.KeyValue
	reports jetstream.ObjectStore
	ready   atomic.Bool
	key     *sign.Key  // nil: signing off
	git     *sastState // nil: no sast

	running sync.Map // task id → runningTask

	stopFetch context.CancelCauseFunc // stops pulling new tasks
	abort     context.CancelCauseFunc // interrupts running tasks
	wg        sync.WaitGroup
	admin     *http.Server
	adminL    net.Listener
}

// Sentinel errors.
var (
	// ErrPermanent marks a failure that retrying cannot fix (a missing image, an
	// invalid task). The job fails at once.
	ErrPermanent = errors.New("permanent failure")
	// ErrStopped is the cause given to tasks interrupted by Stop; they are
	// handed back to JetStream for another worker.
	ErrStopped = errors.New("worker stopped")
	// ErrCancelled is the cause given to tasks whose job was cancelled.
	ErrCancelled = errors.New("job cancelled")
)

// New validates cfg.
func New(cfg Config) (*Worker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg, log: cfg.Logger.With("worker", cfg.Name), met: newMetrics()}, nil
}

// Start connects, binds to the topology (waiting for the dispatcher to create
// it), subscribes to cancellations and starts the lane pools.
func (w *Worker) Start(ctx context.Context) error {
	if w.cfg.AdminAddr != "-" {
		if err := w.startAdmin(); err != nil {
			return err
		}
	}
	if err := w.loadKey(ctx); err != nil {
		return err
	}
	if err := w.initGit(ctx); err != nil {
		return err
	}
	nc, err := connect(w.cfg, w.log)
	if err != nil {
		return fmt.Errorf("workers: connect to NATS: %w", err)
	}
	w.nc = nc
	if w.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return fmt.Errorf("workers: jetstream: %w", err)
	}
	err = retry(ctx, w.log, "bind to JetStream topology", func() (err error) {
		if w.jobs, err = w.js.KeyValue(ctx, schemas.BucketJobs); err != nil {
			return fmt.Errorf("kv %s: %w", schemas.BucketJobs, err)
		}
		if w.cache, err = w.js.KeyValue(ctx, schemas.BucketResultCache); err != nil {
			return fmt.Errorf("kv %s: %w", schemas.BucketResultCache, err)
		}
		if w.reports, err = w.js.ObjectStore(ctx, schemas.ObjectReports); err != nil {
			return fmt.Errorf("object store %s: %w", schemas.ObjectReports, err)
		}
		_, err = w.js.Stream(ctx, schemas.StreamTasks)
		return err
	})
	if err != nil {
		nc.Close()
		return fmt.Errorf("workers: %w", err)
	}
	if _, err := nc.Subscribe(schemas.SubjectCancelPrefix+".*", w.onCancel); err != nil {
		nc.Close()
		return fmt.Errorf("workers: subscribe to cancellations: %w", err)
	}
	fetchCtx, stopFetch := context.WithCancelCause(context.WithoutCancel(ctx))
	runCtx, abort := context.WithCancelCause(context.WithoutCancel(ctx))
	w.stopFetch, w.abort = stopFetch, abort
	for _, tool := range w.cfg.Tools {
		for _, lane := range schemas.Lanes() {
			if err := w.startPool(fetchCtx, runCtx, tool, ConsumerName(tool.Name(), lane), schemas.SubjectTask(lane, tool.Name()),
				fmt.Sprintf("%s tasks in the %s lane", tool.Name(), lane), w.cfg.Concurrency[lane]); err != nil {
				stopFetch(err)
				abort(err)
				nc.Close()
				return err
			}
		}
		if err := w.startPool(fetchCtx, runCtx, tool, ShadowConsumerName(tool.Name()), schemas.SubjectShadowTask(tool.Name()),
			fmt.Sprintf("%s shadow tasks (trials)", tool.Name()), w.cfg.ShadowConcurrency); err != nil {
			stopFetch(err)
			abort(err)
			nc.Close()
			return err
		}
	}
	w.ready.Store(true)
	w.log.Info("worker started", "nats", nc.ConnectedUrlRedacted(), "tools", len(w.cfg.Tools), "concurrency", w.cfg.Concurrency)
	return nil
}

// Stop stops pulling tasks and waits for running ones until ctx ends; then it
// interrupts them and hands them back to JetStream (nak), so another worker
// picks them up at once instead of after AckWait.
func (w *Worker) Stop(ctx context.Context) error {
	w.ready.Store(false)
	if w.stopFetch != nil {
		w.stopFetch(ErrStopped)
	}
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		w.abort(ErrStopped)
		<-done
		err = fmt.Errorf("workers: stop: running tasks interrupted: %w", context.Cause(ctx))
	}
	if w.abort != nil {
		w.abort(ErrStopped)
	}
	if w.nc != nil {
		_ = w.nc.Drain()
	}
	if w.admin != nil {
		err = errors.Join(err, w.admin.Shutdown(ctx))
	}
	return err
}

// AdminAddr is the bound admin address, once started.
func (w *Worker) AdminAddr() string {
	if w.adminL == nil {
		return ""
	}
	return w.adminL.Addr().String()
}

// ConsumerName is the durable consumer name for a tool's tasks in a lane.
func ConsumerName(tool string, lane schemas.Lane) string {
	return "worker-" + tool + "-" + string(lane)
}

// ShadowConsumerName is the durable consumer name for a tool's shadow tasks.
func ShadowConsumerName(tool string) string { return "worker-" + tool + "-shadow" }

func (w *Worker) startPool(fetchCtx, runCtx context.Context, tool Tool, durable, subject, desc string, n int) error {
	lane := durable
	cons, err := w.js.CreateOrUpdateConsumer(fetchCtx, schemas.StreamTasks, jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   desc,
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxDeliver:    w.cfg.MaxDeliver,
		MaxAckPending: 1024,
	})
	if err != nil {
		return fmt.Errorf("workers: consumer %s: %w", durable, err)
	}
	for range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for fetchCtx.Err() == nil {
				pull, cancel := context.WithTimeout(fetchCtx, 5*time.Second)
				batch, err := cons.Fetch(1, jetstream.FetchContext(pull))
				if err != nil {
					cancel()
					if fetchCtx.Err() == nil {
						w.log.Debug("fetch", "tool", tool.Name(), "lane", lane, "err", err)
						sleepCtx(fetchCtx, 500*time.Millisecond)
					}
					continue
				}
				for msg := range batch.Messages() {
					w.handle(runCtx, tool, msg)
				}
				cancel()
			}
		}()
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
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
