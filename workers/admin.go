package workers

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

// metrics are the worker's Prometheus metrics, on a private registry.
type metrics struct {
	reg       *prometheus.Registry
	started   prometheus.Counter
	retried   prometheus.Counter
	cacheHits prometheus.Counter
	completed *prometheus.CounterVec
	// signSeconds times signing ("image": signature + attestation written to
	// the registry; "result": the result envelope), for the signing overhead.
	signSeconds  *prometheus.HistogramVec
	policyFailed prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg:       prometheus.NewRegistry(),
		started:   prometheus.NewCounter(prometheus.CounterOpts{Name: "ciss_worker_tasks_started_total", Help: "Task runs started (including re-runs)."}),
		retried:   prometheus.NewCounter(prometheus.CounterOpts{Name: "ciss_worker_tasks_retried_total", Help: "Task runs that failed transiently and were handed back for retry."}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "ciss_worker_cache_hits_total", Help: "Tasks answered from the result cache."}),
		completed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ciss_worker_tasks_completed_total", Help: "Tasks completed, by outcome."}, []string{"outcome"}),
	}
	m.signSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ciss_worker_sign_seconds", Help: "Time spent signing, by what was signed (image, result).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"what"})
	m.policyFailed = prometheus.NewCounter(prometheus.CounterOpts{Name: "ciss_worker_policy_failed_total", Help: "Image scans whose image failed the tenant policy and was not signed."})
	m.reg.MustRegister(m.signSeconds, m.policyFailed)
	m.reg.MustRegister(m.started, m.retried, m.cacheHits, m.completed,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (w *Worker) startAdmin() error {
	l, err := net.Listen("tcp", w.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("workers: admin listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprintln(rw, "ok") })
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		switch {
		case !w.ready.Load():
			http.Error(rw, "not ready: starting or stopping", http.StatusServiceUnavailable)
		case w.nc == nil || !w.nc.IsConnected():
			http.Error(rw, "not ready: NATS disconnected", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(rw, "ready")
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(w.met.reg, promhttp.HandlerOpts{}))
	w.adminL = l
	w.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		if err := w.admin.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.log.Error("admin server", "err", err)
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
