// Command ciss-dispatcher routes CISS jobs to tools. Flags override the
// environment; run with -h for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"ciss.dev/dispatcher"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ciss-dispatcher:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg dispatcher.Config
	var logLevel, ackWait string
	fs := flag.NewFlagSet("ciss-dispatcher", flag.ExitOnError)
	fs.StringVar(&cfg.NATSURL, "nats-url", os.Getenv("CISS_NATS_URL"), "NATS server URL(s) [CISS_NATS_URL]")
	fs.StringVar(&cfg.NATSCredsFile, "nats-creds", os.Getenv("CISS_NATS_CREDS"), "NATS credentials file [CISS_NATS_CREDS]")
	fs.StringVar(&cfg.NATSCAFile, "nats-ca", os.Getenv("CISS_NATS_CA"), "CA bundle for NATS TLS [CISS_NATS_CA]")
	fs.StringVar(&cfg.NATSCertFile, "nats-cert", os.Getenv("CISS_NATS_CERT"), "client certificate for NATS TLS [CISS_NATS_CERT]")
	fs.StringVar(&cfg.NATSKeyFile, "nats-key", os.Getenv("CISS_NATS_KEY"), "client key for NATS TLS [CISS_NATS_KEY]")
	fs.StringVar(&cfg.RoutingFile, "routing", os.Getenv("CISS_ROUTING"), "routing YAML file (required) [CISS_ROUTING]")
	fs.StringVar(&cfg.CatalogDir, "catalog", os.Getenv("CISS_CATALOG"), "tool catalog directory (deploy/tekton); when set, routing naming a tool without a manifest there is rejected [CISS_CATALOG]")
	fs.StringVar(&cfg.SubscriptionsFile, "subscriptions", os.Getenv("CISS_SUBSCRIPTIONS"), "webhook subscriptions YAML file: which git events create which jobs [CISS_SUBSCRIPTIONS]")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", os.Getenv("CISS_DISPATCHER_ADMIN_ADDR"), "admin HTTP address, - to disable (default 127.0.0.1:9444) [CISS_DISPATCHER_ADMIN_ADDR]")
	fs.StringVar(&ackWait, "ack-wait", envOr("CISS_DISPATCHER_ACK_WAIT", "30s"), "redelivery timeout [CISS_DISPATCHER_ACK_WAIT]")
	fs.IntVar(&cfg.Topology.Replicas, "replicas", 0, "JetStream replicas for streams and buckets (default 1)")
	fs.StringVar(&logLevel, "log-level", envOr("CISS_LOG_LEVEL", "info"), "debug, info, warn or error [CISS_LOG_LEVEL]")
	_ = fs.Parse(os.Args[1:])

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	var err error
	if cfg.AckWait, err = time.ParseDuration(ackWait); err != nil {
		return fmt.Errorf("-ack-wait: %w", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.Source = "ciss-dispatcher/" + hostname()

	d, err := dispatcher.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := d.Start(ctx); err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	for {
		select {
		case <-hup:
			d.ReloadRouting()
			d.ReloadSubscriptions()
			continue
		case <-ctx.Done():
		}
		break
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Stop(sctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
