// Command ciss-gateway runs the CISS API gateway.
//
// Every flag has an environment variable equivalent: CISS_GATEWAY_ followed by
// the flag name in upper case with dashes as underscores (-api-addr is
// CISS_GATEWAY_API_ADDR). A flag given on the command line wins over the
// environment. Unset values take the gateway.Config defaults.
//
// SIGINT and SIGTERM stop the gateway gracefully; SIGHUP reloads the
// certificates, the client CA bundle, the policy and the webhook configuration
// (with its secrets) at once. Webhook secret_env references are resolved from
// the environment read here, like the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"ciss.dev/gateway"
)

// envPrefix starts the environment variable of every flag.
const envPrefix = "CISS_GATEWAY_"

// stopTimeout bounds a graceful stop.
const stopTimeout = 30 * time.Second

func main() {
	if err := run(os.Args[1:], os.LookupEnv, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "ciss-gateway:", err)
		os.Exit(1)
	}
}

// options are the settings that are not part of gateway.Config.
type options struct {
	logLevel  slog.Level
	logFormat string
}

// parseConfig turns flags and environment into a Config. lookupEnv is the only
// way the environment is read.
func parseConfig(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (gateway.Config, options, error) {
	var (
		cfg gateway.Config
		opt = options{logFormat: "json"}
	)
	fs := flag.NewFlagSet("ciss-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.APIAddr, "api-addr", "", "mTLS API listen address (default "+gateway.DefaultAPIAddr+")")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", "", "plain HTTP admin listen address for /healthz, /readyz, /metrics (default "+gateway.DefaultAdminAddr+")")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert", "", "server certificate chain, PEM (required)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key", "", "server private key, PEM (required)")
	fs.StringVar(&cfg.ClientCAFile, "client-ca", "", "bundle of CAs trusted for client certificates, PEM (required)")
	fs.StringVar(&cfg.PolicyFile, "policy", "", "authorization policy, YAML (required)")
	fs.StringVar(&cfg.GuardrailsFile, "guardrails", "", "guardrails for protected actions (vault-* job types), YAML; unset refuses them")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "NATS server URL(s), comma-separated (default "+gateway.DefaultNATSURL+")")
	fs.StringVar(&cfg.NATSCredsFile, "nats-creds", "", "NATS user credentials file")
	fs.StringVar(&cfg.NATSCAFile, "nats-ca", "", "CAs trusted for the NATS server, PEM")
	fs.StringVar(&cfg.NATSCertFile, "nats-cert", "", "client certificate for NATS, PEM")
	fs.StringVar(&cfg.NATSKeyFile, "nats-key", "", "client key for NATS, PEM")
	fs.DurationVar(&cfg.ReloadInterval, "reload-interval", 0, "how often certificate and policy files are checked for changes (default 2s)")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", 0, "maximum request body size (default 1MiB)")
	fs.DurationVar(&cfg.MaxWait, "max-wait", 0, "maximum ?wait= long-poll duration (default 60s)")
	fs.StringVar(&cfg.Source, "source", "", "CloudEvents source of published events (default "+gateway.DefaultSource+")")
	fs.StringVar(&cfg.WebhookConfigFile, "webhook-config", "", "git webhook secrets, YAML; enables the webhook receivers (see deploy/webhooks.example.yaml)")
	fs.StringVar(&cfg.WebhookAddr, "webhook-addr", "", "webhook receivers' listen address, server TLS only; - disables them (default "+gateway.DefaultWebhookAddr+")")
	fs.Int64Var(&cfg.WebhookMaxBodyBytes, "webhook-max-body-bytes", 0, "maximum webhook body size (default 1MiB)")
	fs.Func("signing-public-keys", "comma-separated PEM files of the workers' signing public keys, published at GET /v1/keys", func(v string) error {
		cfg.PublicKeyFiles = nil
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				cfg.PublicKeyFiles = append(cfg.PublicKeyFiles, f)
			}
		}
		return nil
	})
	fs.StringVar(&cfg.AllowedSignersFile, "allowed-signers", "", "ssh allowed-signers file for signed git tags, published at GET /v1/keys")
	fs.TextVar(&opt.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	fs.StringVar(&opt.logFormat, "log-format", opt.logFormat, "log format: json or text")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: ciss-gateway [flags]\n\nEvery flag can also be set as %s<FLAG_NAME>, e.g. %sAPI_ADDR.\n\n", envPrefix, envPrefix)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, opt, err
	}
	if fs.NArg() > 0 {
		return cfg, opt, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := lookupEnv(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	})
	if opt.logFormat != "json" && opt.logFormat != "text" {
		errs = append(errs, fmt.Errorf("log format %q: want json or text", opt.logFormat))
	}
	return cfg, opt, errors.Join(errs...)
}

func run(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) error {
	cfg, opt, err := parseConfig(args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	hopts := &slog.HandlerOptions{Level: opt.logLevel}
	var h slog.Handler = slog.NewJSONHandler(stderr, hopts)
	if opt.logFormat == "text" {
		h = slog.NewTextHandler(stderr, hopts)
	}
	log := slog.New(h)
	cfg.Logger = log
	cfg.LookupEnv = lookupEnv

	g, err := gateway.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	if err := g.Start(ctx); err != nil {
		return err
	}
	for running := true; running; {
		select {
		case <-hup:
			if err := g.Reload(); err != nil {
				log.Error("reload on SIGHUP failed; previous configuration stays in force", "err", err)
			}
		case <-ctx.Done():
			running = false
		}
	}
	log.Info("stopping")
	sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	return g.Stop(sctx)
}
