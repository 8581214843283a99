package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"ciss.dev/gateway/internal/api"
	"ciss.dev/gateway/internal/webhook"
)

// Webhook listener timeouts: git hosts send one bounded request per
// connection or keep it alive briefly; GitHub gives up after 10 s.
const (
	webhookReadTimeout  = 15 * time.Second
	webhookWriteTimeout = 15 * time.Second
)

// webhooksEnabled reports whether the configuration asks for the receivers.
func (c Config) webhooksEnabled() bool { return c.WebhookConfigFile != "" && c.WebhookAddr != "-" }

// openWebhooks loads the webhook configuration and its secrets, when enabled.
func (g *Gateway) openWebhooks() error {
	if !g.cfg.webhooksEnabled() {
		return nil
	}
	f, err := webhook.OpenFile(g.cfg.WebhookConfigFile, g.cfg.LookupEnv)
	if err != nil {
		return &ConfigError{Field: "WebhookConfigFile", Err: err}
	}
	g.webhooks = f
	g.log.Info("webhook configuration loaded", "file", f.Path(), "secrets", f.Secrets())
	return nil
}

// listenWebhooks binds the webhook listener, when enabled (else nil).
func (g *Gateway) listenWebhooks(ctx context.Context, lc *net.ListenConfig) (net.Listener, error) {
	if g.webhooks == nil {
		return nil, nil
	}
	ln, err := lc.Listen(ctx, "tcp", g.cfg.WebhookAddr)
	if err != nil {
		return nil, &ConfigError{Field: "WebhookAddr", Err: err}
	}
	return ln, nil
}

// newWebhookServer builds the receivers' server for ln (nil: disabled). It
// serves the API's server certificate, reloaded with it, and asks for no
// client certificate.
func (g *Gateway) newWebhookServer(ln net.Listener) error {
	if ln == nil {
		return nil
	}
	h, err := webhook.New(webhook.Config{
		Secrets:      g.webhooks,
		Store:        g.store,
		Problem:      api.ProblemFor,
		Observer:     g.metrics,
		Logger:       g.log.With("component", "webhook"),
		Source:       g.cfg.Source,
		MaxBodyBytes: g.cfg.WebhookMaxBodyBytes,
	})
	if err != nil {
		return err
	}
	g.webhookSrv = &http.Server{
		Handler: h,
		TLSConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			ClientAuth: tls.NoClientCert,
			NextProtos: []string{"h2", "http/1.1"},
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return g.tls.Certificate(), nil
			},
		},
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       webhookReadTimeout,
		WriteTimeout:      webhookWriteTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	return nil
}

func closeListener(ln net.Listener) {
	if ln != nil {
		_ = ln.Close()
	}
}

// WebhookAddr returns the webhook listener's address, like APIAddr; "" when
// the receivers are disabled.
func (g *Gateway) WebhookAddr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.webhooks == nil {
		return ""
	}
	return g.webhookAddr
}

func (g *Gateway) reloadWebhooks() error {
	if g.webhooks == nil {
		return nil
	}
	if err := g.webhooks.Reload(); err != nil {
		return fmt.Errorf("gateway: reload webhook configuration: %w", err)
	}
	g.log.Info("webhook configuration reloaded", "file", g.webhooks.Path(), "secrets", g.webhooks.Secrets())
	return nil
}
