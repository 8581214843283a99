// Command ciss-load measures CISS against baselines taken in the same run, on
// a private stack (embedded NATS JetStream, loopback registry, the real
// gateway, dispatcher and worker binaries) in a temporary directory:
//
//  1. raw JetStream: synchronous publishes (PubAck awaited) of a job-requested
//     event to a scratch stream on the same server, at concurrency -c;
//  2. signed GitHub push webhooks (server TLS, keep-alive) at the same
//     concurrency, each with a new delivery id, acknowledged once durable, as
//     a ratio to 1; then the jobs they created are drained before phase 3;
//  3. POST /v1/jobs over mTLS with keep-alive at the same concurrency (bulk
//     lane), as a ratio to 1;
//  4. submit→succeeded→SARIF latency of -n sequential interactive scans of the
//     clean demo image without cache, as a ratio to running the worker's Trivy
//     command lines directly;
//  5. the same with a result cache hit;
//  6. the overhead of a shadow trial: -shadow-n interactive cache-off jobs
//     at concurrency -shadow-c, in alternating blocks without and with a
//     shadow (a second full Trivy scan per job), on a third stack.
//
// It prints a markdown table (with machine information) for a closing note and
// exits non-zero when any phase had errors. `make bench` runs it with
// CISS_TRIVY and CISS_BIN_DIR set; without CISS_BIN_DIR it builds the binaries.
// Every loop is bounded in count and time; -timeout bounds the whole run.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/schemas"
	"ciss.dev/test/stack"
)

func main() {
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "ciss-load:", err)
	}
	os.Exit(code)
}

// options are the command's flags.
type options struct {
	conc        int
	dur, pubDur time.Duration
	webhookDur  time.Duration
	maxWebhooks int
	maxSubmits  int
	maxPubs     int
	n           int
	restart     bool
	submitCache bool
	isolate     bool
	keep        bool
	binDir      string
	trivy       string
	timeout     time.Duration
	shadowN     int
	shadowConc  int
}

func parseOptions(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("ciss-load", flag.ContinueOnError)
	fs.IntVar(&o.conc, "c", 16, "concurrency of the publish baseline and of the submit load")
	fs.DurationVar(&o.dur, "d", 10*time.Second, "duration of the submit load")
	fs.IntVar(&o.maxSubmits, "max-submits", 100000, "cap on submits in the load phase")
	fs.DurationVar(&o.pubDur, "pub-d", 5*time.Second, "duration of the raw JetStream publish baseline")
	fs.DurationVar(&o.webhookDur, "webhook-d", 5*time.Second, "duration of the webhook load (0 skips it)")
	fs.IntVar(&o.maxWebhooks, "max-webhooks", 50000, "cap on webhooks in the webhook phase")
	fs.IntVar(&o.maxPubs, "max-pubs", 1000000, "cap on publishes in the baseline")
	fs.IntVar(&o.n, "n", 10, "sequential jobs (and direct Trivy runs) per end-to-end phase")
	fs.BoolVar(&o.restart, "restart", true, "restart the stack between the submit load and the end-to-end phases, so the bulk backlog cannot compete for CPU")
	fs.BoolVar(&o.submitCache, "submit-cache", false, `"cache" of the jobs submitted under load (false: every bulk job is a Trivy run in the background)`)
	fs.BoolVar(&o.isolate, "isolate", false, "stop the dispatcher and worker during the submit load (diagnostic: the submit path without its consumers); implies -restart")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (it is always kept on failure)")
	fs.StringVar(&o.binDir, "bin-dir", os.Getenv("CISS_BIN_DIR"), "directory with ciss-gateway, ciss-dispatcher, ciss-worker; empty builds them [CISS_BIN_DIR]")
	fs.StringVar(&o.trivy, "trivy", os.Getenv("CISS_TRIVY"), "trivy binary [CISS_TRIVY]")
	fs.DurationVar(&o.timeout, "timeout", 8*time.Minute, "bound on the whole run")
	fs.IntVar(&o.shadowN, "shadow-n", 32, "jobs of the shadow-overhead phase, split over four blocks (0 skips it)")
	fs.IntVar(&o.shadowConc, "shadow-c", 4, "concurrency of the shadow-overhead phase")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.trivy == "":
		return o, errors.New("-trivy (CISS_TRIVY) is required: deploy/tools/install-trivy.sh prints the path")
	case o.conc < 1 || o.conc > 1024:
		return o, errors.New("-c must be 1..1024")
	case o.shadowN < 0 || o.shadowN > 10000 || o.shadowConc < 1 || o.shadowConc > 64:
		return o, errors.New("-shadow-n must be 0..10000 and -shadow-c 1..64")
	case o.n < 1 || o.n > 1000:
		return o, errors.New("-n must be 1..1000")
	case o.dur <= 0 || o.pubDur <= 0 || o.maxSubmits < 1 || o.maxPubs < 1 || o.webhookDur < 0 || o.maxWebhooks < 1:
		return o, errors.New("-d, -pub-d, -max-submits, -max-pubs and -max-webhooks must be positive, -webhook-d not negative")
	}
	o.restart = o.restart || o.isolate
	var err error
	if o.trivy, err = filepath.Abs(o.trivy); err != nil {
		return o, err
	}
	if o.binDir != "" {
		if o.binDir, err = filepath.Abs(o.binDir); err != nil {
			return o, err
		}
	}
	return o, nil
}

// results are the measurements of one run.
type results struct {
	opts    options
	machine machine

	payloadBytes, bodyBytes int
	pub                     loadResult
	pubCPU                  cpuSnap
	sub                     submitResult
	subCPU                  cpuSnap
	hookBytes               int
	hook                    webhookResult
	hookCPU                 cpuSnap
	backlogPending          uint64
	backlogAckPending       uint64
	startTook               time.Duration
	restarted               bool
	restartTook             time.Duration

	directCold, e2eCold, cacheWarm time.Duration
	direct                         latencies
	e2e                            []jobTiming
	cached                         []jobTiming
	e2eCPU                         cpuSnap
	e2eElapsed                     time.Duration
	shadow                         shadowResult

	// errs lists every failure, by phase; non-empty means exit 1.
	errs []string
}

func (r *results) fail(phase string, err error) {
	r.errs = append(r.errs, phase+": "+err.Error())
	fmt.Fprintf(os.Stderr, "ciss-load: %s: %v\n", phase, err)
}

func run(args []string) (int, error) {
	o, err := parseOptions(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0, nil
	} else if err != nil {
		return 2, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeoutCause(ctx, o.timeout, errors.New("ciss-load: -timeout reached"))
	defer cancel()

	tmp, err := os.MkdirTemp("", "ciss-load-")
	if err != nil {
		return 1, err
	}
	logPath := filepath.Join(tmp, "stack.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return 1, err
	}
	keep := o.keep
	defer func() {
		logf.Close()
		if keep {
			fmt.Fprintf(os.Stderr, "ciss-load: kept %s (component logs: %s)\n", tmp, logPath)
		} else {
			os.RemoveAll(tmp)
		}
	}()

	if o.binDir == "" {
		o.binDir = filepath.Join(tmp, "bin")
		progress("building the component binaries into %s", o.binDir)
		if err := stack.Build(ctx, o.binDir); err != nil {
			keep = true
			return 1, err
		}
	}
	r := &results{opts: o, machine: machineInfo(ctx, o.trivy)}
	if err := measure(ctx, r, tmp, logf); err != nil {
		r.fail("run", err)
	}
	printReport(os.Stdout, r)
	if len(r.errs) > 0 {
		keep = true
		return 1, fmt.Errorf("%d phase error(s); component logs: %s", len(r.errs), logPath)
	}
	return 0, nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ciss-load: "+format+"\n", args...)
}

// startStack starts a stack in tmp/name, logging to logs.
func startStack(ctx context.Context, o options, tmp, name string, logs io.Writer) (*stack.Stack, *http.Client, time.Duration, error) {
	t0 := time.Now()
	s, err := stack.Start(ctx, stack.Config{Dir: filepath.Join(tmp, name), BinDir: o.binDir, Trivy: o.trivy, Output: logs})
	if err != nil {
		return nil, nil, 0, err
	}
	took := time.Since(t0)
	hc, err := s.Client(s.PKI.Client)
	if err != nil {
		s.Close()
		return nil, nil, 0, err
	}
	tr, ok := hc.Transport.(*http.Transport)
	if !ok {
		s.Close()
		return nil, nil, 0, errors.New("stack client has no *http.Transport")
	}
	// One shared transport; an idle connection kept per goroutine.
	tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, o.conc)
	tr.MaxIdleConns = max(tr.MaxIdleConns, o.conc)
	hc.Timeout = 0 // every request has its own context deadline
	return s, hc, took, nil
}

// measure runs the phases in order, recording failures in r and going on
// where the next phase does not depend on the failed one.
func measure(ctx context.Context, r *results, tmp string, logs io.Writer) error {
	o := r.opts
	progress("starting stack A (logs: %s)", filepath.Join(tmp, "stack.log"))
	s, hc, took, err := startStack(ctx, o, tmp, "stack-a", logs)
	if err != nil {
		return fmt.Errorf("start stack: %w", err)
	}
	r.startTook = took
	closeStack := func() {
		if s != nil {
			s.Close()
			s = nil
		}
	}
	defer func() { closeStack() }()

	nc, err := nats.Connect(s.NATSURL, nats.Name("ciss-load"))
	if err != nil {
		return fmt.Errorf("connect NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}

	// 1. Raw JetStream publish baseline.
	payload, err := jobRequestedPayload(s.Images.Clean, schemas.LaneBulk)
	if err != nil {
		return err
	}
	r.payloadBytes = len(payload)
	if err := createBenchStream(ctx, js); err != nil {
		r.fail("publish", err)
	} else {
		progress("phase 1: raw JetStream publish, C=%d, %s (payload %d B)", o.conc, o.pubDur, len(payload))
		c0 := cpuNow()
		r.pub = rawPublish(ctx, js, payload, o.conc, o.pubDur, o.maxPubs)
		r.pubCPU = cpuNow().since(c0)
		if n := r.pub.errCount(); n > 0 {
			r.fail("publish", fmt.Errorf("%d errors: %s", n, errSummary(r.pub.Errs)))
		}
		_ = js.DeleteStream(ctx, benchStream)
	}

	// 2. Webhook load: signed GitHub pushes, each creating an interactive job
	// (dev subscription) that is drained before the next phase.
	if o.webhookDur > 0 {
		hookBody := stack.GitHubPush("acme/payments-api", "refs/heads/main", "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c")
		r.hookBytes = len(hookBody)
		progress("phase 2: signed GitHub push webhooks, C=%d, %s (body %d B)", o.conc, o.webhookDur, len(hookBody))
		c0 := cpuNow()
		r.hook = webhookLoad(ctx, s, hookBody, o.conc, o.webhookDur, o.maxWebhooks)
		r.hookCPU = cpuNow().since(c0)
		if n := r.hook.errCount(); n > 0 {
			r.fail("webhook", fmt.Errorf("%d errors: %s", n, errSummary(r.hook.Errs)))
		}
		progress("draining the jobs the webhooks created (at most 3m)")
		if err := drainWebhookJobs(ctx, js, &r.hook, 3*time.Minute); err != nil {
			r.fail("webhook drain", err)
		}
	}

	// 3. Submit load, bulk lane.
	body, err := json.Marshal(schemas.JobRequest{
		Type: schemas.JobTypeImageScan, Target: schemas.Target{Image: s.Images.Clean}, Lane: schemas.LaneBulk, Cache: &o.submitCache,
	})
	if err != nil {
		return err
	}
	r.bodyBytes = len(body)
	if o.isolate {
		progress("stopping the dispatcher and worker (-isolate)")
		_ = s.StopComponent(stack.Worker, syscall.SIGTERM)
		_ = s.StopComponent(stack.Dispatcher, syscall.SIGTERM)
	}
	progress("phase 3: POST /v1/jobs, C=%d, %s, bulk lane, cache=%t", o.conc, o.dur, o.submitCache)
	c0 := cpuNow()
	r.sub = submitLoad(ctx, hc, s.APIURL, body, o.conc, o.dur, o.maxSubmits)
	r.subCPU = cpuNow().since(c0)
	if n := r.sub.errCount(); n > 0 {
		r.fail("submit", fmt.Errorf("%d errors: %s", n, errSummary(r.sub.Errs)))
	}
	bctx, bcancel := context.WithTimeout(ctx, 5*time.Second)
	r.backlogPending, r.backlogAckPending, err = consumerBacklog(bctx, js, schemas.StreamJobs)
	bcancel()
	if err != nil {
		progress("dispatcher backlog unknown: %v", err)
	}

	if o.restart {
		progress("restarting the stack (the bulk backlog stays behind)")
		nc.Close()
		hc.CloseIdleConnections()
		t0 := time.Now()
		closeStack()
		s, hc, _, err = startStack(ctx, o, tmp, "stack-b", logs)
		if err != nil {
			return fmt.Errorf("restart stack: %w", err)
		}
		r.restarted, r.restartTook = true, time.Since(t0)
	}

	// 4. End to end without cache, against Trivy run directly.
	workRoot := filepath.Join(tmp, "direct")
	if err := os.MkdirAll(workRoot, 0o700); err != nil {
		return err
	}
	progress("phase 4: Trivy direct and CISS end-to-end (cache off), interleaved, ×%d each on %s", o.n, s.Images.Clean)
	// One untimed run each first: it pages the binary in and, for CISS, makes
	// the worker probe the Trivy version; both are reported as cold. A Trivy
	// that cannot scan here would fail every job too, each only after the
	// worker's retries, and a failed job most likely means the rest fail the
	// same slow way: stop early in both cases.
	if r.directCold, err = trivyDirect(ctx, o.trivy, s.DB.CacheDir, s.Images.Clean, workRoot); err != nil {
		return fmt.Errorf("direct trivy: %w", err)
	}
	cold, err := e2eJob(ctx, hc, s.APIURL, s.Images.Clean, false)
	if err != nil {
		return fmt.Errorf("e2e: %w", err)
	}
	r.e2eCold = cold.Total
	// Interleaved, so that drift on a shared machine hits both sides alike.
	c0, t0 := cpuNow(), time.Now()
	defer func() { r.e2eCPU, r.e2eElapsed = cpuNow().since(c0), time.Since(t0) }()
	for range o.n {
		if ctx.Err() != nil {
			break
		}
		d, err := trivyDirect(ctx, o.trivy, s.DB.CacheDir, s.Images.Clean, workRoot)
		if err != nil {
			return fmt.Errorf("direct trivy: %w", err)
		}
		r.direct = append(r.direct, d)
		t, err := e2eJob(ctx, hc, s.APIURL, s.Images.Clean, false)
		if err != nil {
			return fmt.Errorf("e2e: %w", err)
		}
		if t.CacheHit {
			r.fail("e2e", errors.New(`a job with "cache":false was a cache hit`))
		}
		r.e2e = append(r.e2e, t)
	}

	// 5. End to end from the result cache.
	progress("phase 5: CISS end-to-end ×%d (cache on, after one warm-up)", o.n)
	warm, err := e2eJob(ctx, hc, s.APIURL, s.Images.Clean, true)
	if err != nil {
		return fmt.Errorf("e2e cache: %w", err)
	}
	r.cacheWarm = warm.Total
	for range o.n {
		if ctx.Err() != nil {
			break
		}
		t, err := e2eJob(ctx, hc, s.APIURL, s.Images.Clean, true)
		if err != nil {
			return fmt.Errorf("e2e cache: %w", err)
		}
		if !t.CacheHit {
			r.fail("e2e cache", errors.New("a job after the warm-up was not a cache hit"))
		}
		r.cached = append(r.cached, t)
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}

	// 6. Shadow overhead, on its own stack.
	if o.shadowN > 0 {
		closeStack()
		if r.shadow, err = shadowOverhead(ctx, o, tmp, logs); err != nil {
			r.fail("shadow", err)
		}
	}
	return nil
}

// machine describes where the numbers were taken.
type machine struct {
	CPUs, GOMAXPROCS int
	CPUModel, Go     string
	Trivy            string
	// LoadAvg is /proc/loadavg's 1-minute figure when the run started: the
	// machine may be shared.
	LoadAvg string
}

func machineInfo(ctx context.Context, trivy string) machine {
	m := machine{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		CPUModel: "unknown", Trivy: trivyVersion(ctx, trivy)}
	m.LoadAvg = "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.LoadAvg = f[0]
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cmp.Or(cpuModel(string(b)), m.CPUModel)
	}
	return m
}
