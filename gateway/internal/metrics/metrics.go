// Package metrics holds the gateway's Prometheus collectors in a private
// registry, so that several gateways (as in tests) never collide on the global
// one and only gateway metrics are exposed.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics records what the gateway does.
type Metrics struct {
	registry        *prometheus.Registry
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	submitted       *prometheus.CounterVec
	natsUnavailable prometheus.Counter
	webhooks        *prometheus.CounterVec
	webhookDuration *prometheus.HistogramVec
}

// New creates the collectors and registers them, with the Go runtime and
// process collectors, in a new registry.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ciss", Subsystem: "gateway", Name: "http_requests_total",
			Help: "API requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "ciss", Subsystem: "gateway", Name: "http_request_duration_seconds",
			Help:    "API request duration by route pattern, including long-poll waits.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ciss", Subsystem: "gateway", Name: "jobs_submitted_total",
			Help: "Jobs accepted (202, not replays) by job type and lane.",
		}, []string{"type", "lane"}),
		natsUnavailable: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ciss", Subsystem: "gateway", Name: "nats_unavailable_total",
			Help: "Requests answered 503 because NATS JetStream was unavailable.",
		}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ciss", Subsystem: "gateway", Name: "webhooks_total",
			Help: "Webhook requests by provider, verdict and status code.",
		}, []string{"provider", "verdict", "code"}),
		webhookDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "ciss", Subsystem: "gateway", Name: "webhook_duration_seconds",
			Help:    "Time from a webhook request's arrival to its answer, by provider.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"provider"}),
	}
	m.registry.MustRegister(
		m.requests, m.duration, m.submitted, m.natsUnavailable, m.webhooks, m.webhookDuration,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ObserveRequest counts a finished request.
func (m *Metrics) ObserveRequest(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

// JobSubmitted counts a newly accepted job.
func (m *Metrics) JobSubmitted(jobType, lane string) {
	m.submitted.WithLabelValues(jobType, lane).Inc()
}

// ObserveWebhook counts an answered webhook request.
func (m *Metrics) ObserveWebhook(provider, verdict string, code int, d time.Duration) {
	m.webhooks.WithLabelValues(provider, verdict, strconv.Itoa(code)).Inc()
	m.webhookDuration.WithLabelValues(provider).Observe(d.Seconds())
}

// NATSUnavailable counts a 503 caused by NATS.
func (m *Metrics) NATSUnavailable() { m.natsUnavailable.Inc() }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}
