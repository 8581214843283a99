// Command ciss-dev runs the whole CISS stack locally for development (`make
// run`): embedded NATS JetStream, a loopback registry seeded with demo images,
// a dev PKI and Trivy DB fixture in .ciss/dev/, and the real gateway,
// dispatcher and worker binaries. It prints what to try next and runs in the
// foreground until interrupted, then stops everything it started.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"ciss.dev/test/stack"
	"ciss.dev/test/vaultdev"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ciss-dev:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg stack.Config
	var quiet bool
	var vaultBin, vaultAddr string
	fs := flag.NewFlagSet("ciss-dev", flag.ExitOnError)
	fs.StringVar(&cfg.Dir, "dir", ".ciss/dev", "state directory (PKI, DB fixture, JetStream store)")
	fs.StringVar(&cfg.BinDir, "bin-dir", "bin", "directory holding ciss-gateway, ciss-dispatcher, ciss-worker")
	fs.StringVar(&cfg.Trivy, "trivy", os.Getenv("CISS_TRIVY"), "trivy binary [CISS_TRIVY]")
	fs.StringVar(&cfg.Gosec, "gosec", os.Getenv("CISS_GOSEC"), "gosec binary for sast jobs (default: gosec on PATH) [CISS_GOSEC]")
	fs.StringVar(&cfg.NATSURL, "nats-url", os.Getenv("CISS_NATS_URL"), "external NATS URL; empty embeds a JetStream server [CISS_NATS_URL]")
	fs.IntVar(&cfg.NATSPort, "nats-port", 4222, "embedded NATS port")
	fs.StringVar(&cfg.APIAddr, "api-addr", "127.0.0.1:8443", "gateway mTLS API address")
	fs.StringVar(&cfg.WebhookAddr, "webhook-addr", "127.0.0.1:8444", "gateway webhook address (server TLS, signed webhooks)")
	fs.StringVar(&cfg.RegistryAddr, "registry-addr", "127.0.0.1:5000", "loopback OCI registry address")
	admin := fs.String("admin-addrs", "127.0.0.1:9443,127.0.0.1:9444,127.0.0.1:9445", "admin addresses of gateway,dispatcher,worker")
	fs.BoolVar(&quiet, "quiet", false, "do not print component logs")
	kubeconfig := fs.String("kubeconfig", "", "run the worker with the cluster backend (Tekton TaskRuns) on this cluster; default: local backend")
	namespace := fs.String("namespace", "default", "cluster backend: namespace of the TaskRuns")
	claims := fs.String("cluster-claims", "", "cluster backend: NAME=PVC,... (trivy-db=PVC holding the Trivy DB)")
	helper := fs.String("helper-image", "", "cluster backend: image with sh and busybox wget for the report upload step")
	fs.StringVar(&vaultBin, "vault", os.Getenv("CISS_VAULT"), "vault binary: runs a dev Vault and enables protected actions [CISS_VAULT]")
	fs.StringVar(&vaultAddr, "vault-addr", "127.0.0.1:8200", "dev Vault listen address")
	_ = fs.Parse(os.Args[1:])
	if cfg.Trivy == "" {
		return fmt.Errorf("-trivy is required (deploy/tools/install-trivy.sh prints the path)")
	}
	addrs := strings.Split(*admin, ",")
	if len(addrs) != 3 {
		return fmt.Errorf("-admin-addrs: want 3 comma-separated addresses, got %q", *admin)
	}
	cfg.AdminAddrs = map[string]string{stack.Gateway: addrs[0], stack.Dispatcher: addrs[1], stack.Worker: addrs[2]}
	if *kubeconfig != "" {
		cfg.Args = map[string][]string{stack.Worker: {"-backend", "cluster", "-kubeconfig", *kubeconfig,
			"-namespace", *namespace, "-cluster-claims", *claims, "-helper-image", *helper, "-upload-addr", "127.0.0.1:0",
			"-tools", "trivy,trivy-sbom"}} // sast runs on the local backend only
	}
	if !quiet {
		cfg.Output = os.Stderr
	}
	var err error
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	start := time.Now()
	var vault *vaultdev.Server
	if vaultBin != "" {
		if vault, err = startVault(ctx, &cfg, vaultBin, vaultAddr); err != nil {
			return err
		}
		defer vault.Stop(context.Background())
	}
	fmt.Fprintln(os.Stderr, "ciss-dev: starting NATS JetStream, registry, gateway, dispatcher and worker…")
	s, err := stack.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	for name, content := range map[string]string{
		"demo-image": s.Images.Vulnerable + "\n", "clean-image": s.Images.Clean + "\n",
		// Sample webhook bodies for the printed curl commands; sent byte for
		// byte (--data-binary), as the signature covers every byte.
		"github-push.json": string(stack.GitHubPush("acme/payments-api", "refs/heads/main", "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c")),
		"gitlab-push.json": string(stack.GitLabPush("acme/checkout", "refs/heads/main", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7")),
	} {
		if err := os.WriteFile(filepath.Join(cfg.Dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	printNext(os.Stdout, cfg, s, time.Since(start))
	if vault != nil {
		printVault(os.Stdout, cfg, s, vault)
	}
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "\nciss-dev: stopping…")
	return nil
}

func printNext(w *os.File, cfg stack.Config, s *stack.Stack, took time.Duration) {
	rel := func(p string) string {
		if wd, err := os.Getwd(); err == nil {
			if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
				return r
			}
		}
		return p
	}
	tls := fmt.Sprintf("--cacert %s --cert %s --key %s", rel(s.PKI.CAFile), rel(s.PKI.ClientCertFile), rel(s.PKI.ClientKeyFile))
	fmt.Fprintf(w, `
CISS is up (%s).
  API (mTLS)   %s        admin identity: %s
  NATS         %s
  registry     %s        demo image: %s (in %s)
  admin        gateway http://%s  dispatcher http://%s  worker http://%s  (/healthz /readyz /metrics)
  webhooks     %s/v1/webhooks/{github,gitlab}  secret: %s  subscriptions: %s

Try it (from this directory, in another terminal):

  # 1. submit a scan of the demo image; prints the job id
  ID=$(curl -sS -o /dev/null -D - %s -H 'Content-Type: application/json' \
    -d '{"type":"image-scan","target":{"image":"%s"}}' \
    %s/v1/jobs | sed -n 's|^[Ll]ocation: /v1/jobs/\([^[:space:]]*\).*|\1|p'); echo "job $ID"

  # 2. poll it (long-polls up to 30s for the status to change)
  curl -sS %s "%s/v1/jobs/$ID?wait=30s"

  # 3. fetch the SARIF report (also: application/json for Trivy's, application/vnd.cyclonedx+json)
  curl -sS %s -H 'Accept: application/sarif+json' %s/v1/jobs/$ID/result

`, took.Round(100*time.Millisecond), s.APIURL, rel(s.PKI.ClientCertFile), s.NATSURL, s.Registry.Addr(), s.Images.Vulnerable,
		rel(filepath.Join(cfg.Dir, "demo-image")), cfg.AdminAddrs[stack.Gateway], cfg.AdminAddrs[stack.Dispatcher], cfg.AdminAddrs[stack.Worker],
		s.WebhookURL, rel(s.WebhookSecretPath), rel(s.SubscriptionsFile),
		tls, s.Images.Vulnerable, s.APIURL, tls, s.APIURL, tls, s.APIURL)
	fmt.Fprintf(w, `  # 4. a signed GitHub push webhook (any repository: the dev subscription scans the demo image);
  #    the delivery id must be new each time, a repeated one is answered "duplicate"
  sig=$(openssl dgst -sha256 -hmac "$(cat %[1]s)" < %[2]s | sed 's/^.* //')
  curl -sS --cacert %[3]s -H 'Content-Type: application/json' -H 'X-GitHub-Event: push' \
    -H "X-GitHub-Delivery: dev-$(date +%%s%%N)" -H "X-Hub-Signature-256: sha256=$sig" \
    --data-binary @%[2]s %[4]s/v1/webhooks/github

  # 5. the same from GitLab (token, not signature)
  curl -sS --cacert %[3]s -H 'Content-Type: application/json' -H 'X-Gitlab-Event: Push Hook' \
    -H "X-Gitlab-Event-UUID: dev-$(date +%%s%%N)" -H "X-Gitlab-Token: $(cat %[1]s)" \
    --data-binary @%[5]s %[4]s/v1/webhooks/gitlab

  # 6. the jobs they created (with their provenance), and the webhook audit log
  curl -sS %[6]s "%[7]s/v1/jobs?limit=2"
  curl -sS %[6]s "%[7]s/v1/audit/webhooks?limit=5"

`, rel(s.WebhookSecretPath), rel(filepath.Join(cfg.Dir, "github-push.json")), rel(s.PKI.CAFile), s.WebhookURL,
		rel(filepath.Join(cfg.Dir, "gitlab-push.json")), tls, s.APIURL)
	fmt.Fprintf(w, `  # 7. signed outcomes: scan the clean image (it passes the dev policy and gets signed), then
  #    verify with the dev public key (also at GET /v1/keys) and the cosign CLI
  #    (deploy/tools/install-cosign.sh prints its path)
  curl -sS %[1]s -H 'Content-Type: application/json' -d '{"type":"image-scan","target":{"image":"%[2]s"}}' %[3]s/v1/jobs
  curl -sS %[1]s %[3]s/v1/keys
  echo '{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}' > /tmp/ciss-trusted-root.json
  cosign verify --key %[4]s --insecure-ignore-tlog --allow-insecure-registry --trusted-root /tmp/ciss-trusted-root.json %[2]s
  cosign verify-attestation --type vuln --key %[4]s --insecure-ignore-tlog --allow-insecure-registry --trusted-root /tmp/ciss-trusted-root.json %[2]s

`, tls, s.Images.Clean, s.APIURL, rel(s.SigningPublicKeyFile))
	fmt.Fprintf(w, `  # 8. sast: gosec + Trivy secret/misconfig on the demo repository's clean commit (the other
  #    commit, %[5]s, has a planted credential and gets no tag); the clean one gets a
  #    signed tag that plain git verifies
  curl -sS %[1]s -H 'Content-Type: application/json' -d '{"type":"sast","target":{"repo":"%[2]s","commit":"%[3]s"}}' %[4]s/v1/jobs
  git clone -q "$(sed 's|^http://|http://%[6]s:%[7]s@|' <<< '%[2]s')" /tmp/ciss-demo && cd /tmp/ciss-demo
  git -c gpg.ssh.allowedSignersFile=%[8]s verify-tag ciss/sast/%[9]s

Press Ctrl-C to stop everything.
`, tls, s.SASTRepo.URL, s.SASTRepo.Clean, s.APIURL, s.SASTRepo.Vulnerable[:12], s.Git.User, s.Git.Password,
		s.AllowedSignersFile, s.SASTRepo.Clean[:12])
}
