package dispatcher

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the dispatcher's Prometheus counters, on a private registry.
type metrics struct {
	reg          *prometheus.Registry
	dispatched   prometheus.Counter
	finished     prometheus.Counter
	deadLetters  prometheus.Counter
	reloadErrors prometheus.Counter
	// webhookEvents counts stored webhook events handled; webhookJobs the
	// jobs they created.
	webhookEvents prometheus.Counter
	webhookJobs   prometheus.Counter
	// Trials: shadow tasks published, canary jobs, comparisons made, each
	// trial's aggregate (trial, measure), variance reports and alerts.
	shadowsPublished *prometheus.CounterVec
	canaryJobs       *prometheus.CounterVec
	comparisons      *prometheus.CounterVec
	trial            *prometheus.GaugeVec
	variance         prometheus.Counter
	varianceAlerts   prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg:           prometheus.NewRegistry(),
		dispatched:    prometheus.NewCounter(prometheus.CounterOpts{Name: "ciss_dispatcher_tasks_published_total", Help: "Tasks published to workers."}),
		finished:      prometheus.NewCounter(prometheus.CounterOpts{Name: "ciss_dispatcher_jobs_finished_total", Help: "Jobs moved to a terminal state."}),
		deadLetters:   prometheus.NewCounter(prometheus.CounterOpts{Name: "ciss_dispatcher_dead_letters_total", Help: "Messages moved to the dead-letter stream."}),
		reloadErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ciss_dispatcher_routing_reload_errors_total", Help: "Routing or subscription reloads rejected as invalid."}),
		webhookEvents: prometheus.NewCounter(prometheus.CounterOpts{Name: "ciss_dispatcher_webhook_events_total", Help: "Stored webhook events handled."}),
		webhookJobs:   prometheus.NewCounter(prometheus.CounterOpts{Name: "ciss_dispatcher_webhook_jobs_total", Help: "Jobs created from webhook events."}),
	}
	m.shadowsPublished = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ciss_dispatcher_shadow_tasks_published_total", Help: "Shadow tasks published, per trial."}, []string{"trial"})
	m.canaryJobs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ciss_dispatcher_canary_jobs_total", Help: "Jobs routed to a canary, per trial."}, []string{"trial"})
	m.comparisons = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ciss_trial_comparisons_total", Help: "Primary/candidate comparisons made by this dispatcher, per trial."}, []string{"trial"})
	m.trial = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ciss_trial", Help: "A trial's aggregate (GET /v1/trials/{name}): measure is jobs_compared, errors, both, only_primary, only_candidate, severity_disagreements, ignored, agreement_rate, precision, recall, error_rate, duration_ratio_p50, duration_ratio_p95, net_disagreement."}, []string{"trial", "measure"})
	m.variance = prometheus.NewCounter(prometheus.CounterOpts{Name: "ciss_variance_reports_total", Help: "Variance reports published (a target scanned again)."})
	m.varianceAlerts = prometheus.NewCounter(prometheus.CounterOpts{Name: "ciss_variance_alerts_total", Help: "Variance reports with new findings at or above the alert severity."})
	m.reg.MustRegister(m.shadowsPublished, m.canaryJobs, m.comparisons, m.trial, m.variance, m.varianceAlerts)
	m.reg.MustRegister(m.dispatched, m.finished, m.deadLetters, m.reloadErrors, m.webhookEvents, m.webhookJobs,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (d *Dispatcher) startAdmin() error {
	l, err := net.Listen("tcp", d.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("dispatcher: admin listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !d.ready.Load():
			http.Error(w, "not ready: starting or stopping", http.StatusServiceUnavailable)
		case d.nc == nil || !d.nc.IsConnected():
			http.Error(w, "not ready: NATS disconnected", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.met.reg, promhttp.HandlerOpts{}))
	d.adminL = l
	d.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		if err := d.admin.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("admin server", "err", err)
		}
	}()
	return nil
}

// connect dials NATS. The connection retries forever in the background, so the
// dispatcher starts before NATS does and survives a NATS restart.
func connect(cfg Config, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(cfg.Source),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected", "err", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if cfg.NATSCredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCredsFile))
	}
	if cfg.NATSCAFile != "" || cfg.NATSCertFile != "" {
		tc, err := natsTLS(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	return nats.Connect(cfg.NATSURL, opts...)
}

func natsTLS(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.NATSCAFile != "" {
		pem, err := os.ReadFile(cfg.NATSCAFile)
		if err != nil {
			return nil, fmt.Errorf("NATS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("NATS CA %s: no certificates", cfg.NATSCAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.NATSCertFile != "" {
		c, err := tls.LoadX509KeyPair(cfg.NATSCertFile, cfg.NATSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("NATS client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}
