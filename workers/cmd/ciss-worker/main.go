// Command ciss-worker runs CISS tool tasks. Tools are registered here,
// explicitly; flags override the environment; run with -h for the list.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"strings"
	"syscall"
	"time"

	"ciss.dev/schemas"
	"ciss.dev/workers"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ciss-worker:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) > 1 && os.Args[1] == "keygen" {
		return keygen(os.Args[2:])
	}
	var (
		signingKey, policyFile string
		cfg                    workers.Config
		catalog                workers.CatalogConfig
		trivyBin, trivyCache   string
		gosecBin               string
		images, workspaces     multiFlag
		interactive, bulk      int
		logLevel, ackWait      string
		taskTimeout, stopWait  string
		allowed, insecureRegs  string
		backend, claims        string
		cluster                workers.ClusterConfig
		vault                  workers.VaultConfig
	)
	fs := flag.NewFlagSet("ciss-worker", flag.ExitOnError)
	fs.StringVar(&cfg.NATSURL, "nats-url", os.Getenv("CISS_NATS_URL"), "NATS server URL(s) [CISS_NATS_URL]")
	fs.StringVar(&cfg.NATSCredsFile, "nats-creds", os.Getenv("CISS_NATS_CREDS"), "NATS credentials file [CISS_NATS_CREDS]")
	fs.StringVar(&cfg.NATSCAFile, "nats-ca", os.Getenv("CISS_NATS_CA"), "CA bundle for NATS TLS [CISS_NATS_CA]")
	fs.StringVar(&cfg.NATSCertFile, "nats-cert", os.Getenv("CISS_NATS_CERT"), "client certificate for NATS TLS [CISS_NATS_CERT]")
	fs.StringVar(&cfg.NATSKeyFile, "nats-key", os.Getenv("CISS_NATS_KEY"), "client key for NATS TLS [CISS_NATS_KEY]")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", os.Getenv("CISS_WORKER_ADMIN_ADDR"), "admin HTTP address, - to disable (default 127.0.0.1:9445) [CISS_WORKER_ADMIN_ADDR]")
	fs.StringVar(&cfg.WorkDir, "work-dir", os.Getenv("CISS_WORKER_WORK_DIR"), "directory for per-task working directories [CISS_WORKER_WORK_DIR]")
	fs.StringVar(&cfg.Name, "name", os.Getenv("CISS_WORKER_NAME"), "instance name in events (default host-pid) [CISS_WORKER_NAME]")
	fs.IntVar(&interactive, "concurrency-interactive", 0, "tasks at once in the interactive lane, per tool (default 4)")
	fs.IntVar(&bulk, "concurrency-bulk", 0, "tasks at once in the bulk lane, per tool (default 1)")
	fs.IntVar(&cfg.ShadowConcurrency, "concurrency-shadow", 0, "shadow (trial) tasks at once, per tool, in their own pool (default 1)")
	fs.StringVar(&ackWait, "ack-wait", envOr("CISS_WORKER_ACK_WAIT", "30s"), "redelivery timeout without heartbeat [CISS_WORKER_ACK_WAIT]")
	fs.IntVar(&cfg.MaxDeliver, "max-deliver", 0, "deliveries of one task before its job fails (default 5)")
	fs.StringVar(&taskTimeout, "task-timeout", envOr("CISS_WORKER_TASK_TIMEOUT", "10m"), "default time limit of one task [CISS_WORKER_TASK_TIMEOUT]")
	fs.StringVar(&stopWait, "stop-wait", "30s", "how long a graceful stop waits for running tasks")
	fs.Func("tools", "comma-separated catalog tools this worker serves (default: all) [CISS_WORKER_TOOLS]", func(v string) error {
		catalog.Only = splitList(v)
		return nil
	})
	fs.StringVar(&catalog.Dir, "tasks-dir", envOr("CISS_TASKS_DIR", "deploy/tekton"), "directory of Tekton Tasks and CISS tool manifests [CISS_TASKS_DIR]")
	fs.Var(&images, "image", "IMAGE_GLOB=BINARY: run steps of matching images with a local binary (repeatable)")
	fs.Var(&workspaces, "workspace", "NAME=DIR: a directory tool manifests bind with from: NAME (repeatable)")
	fs.StringVar(&trivyBin, "trivy", os.Getenv("CISS_TRIVY"), "shortcut for -image 'aquasec/trivy:*=BINARY' (default: trivy on PATH) [CISS_TRIVY]")
	fs.StringVar(&trivyCache, "trivy-cache-dir", os.Getenv("CISS_TRIVY_CACHE_DIR"), "shortcut for -workspace trivy-db=DIR: the provisioned Trivy DB (db/trivy.db, db/metadata.json) [CISS_TRIVY_CACHE_DIR]")
	fs.StringVar(&allowed, "allowed-registries", os.Getenv("CISS_WORKER_ALLOWED_REGISTRIES"), "comma-separated registry globs (host[:port]) jobs may scan; empty allows any but link-local addresses [CISS_WORKER_ALLOWED_REGISTRIES]")
	fs.StringVar(&insecureRegs, "insecure-registries", os.Getenv("CISS_WORKER_INSECURE_REGISTRIES"), "true to allow plain HTTP / unverified TLS to every registry [CISS_WORKER_INSECURE_REGISTRIES]")
	fs.StringVar(&signingKey, "signing-key", os.Getenv("CISS_SIGNING_KEY"), "cosign private key file or hashivault://KEY (Vault Transit: VAULT_ADDR, VAULT_TOKEN, TRANSIT_SECRET_ENGINE_PATH); a key file is decrypted with COSIGN_PASSWORD; empty disables signing [CISS_SIGNING_KEY]")
	fs.StringVar(&policyFile, "policy", os.Getenv("CISS_WORKER_POLICY"), "tenant policy YAML deciding which scanned images are signed (default: fail at HIGH) [CISS_WORKER_POLICY]")
	git := gitFlags(fs)
	fs.StringVar(&gosecBin, "gosec", os.Getenv("CISS_GOSEC"), "shortcut for -image 'securego/gosec:*=BINARY' (default: gosec on PATH) [CISS_GOSEC]")
	fs.StringVar(&backend, "backend", envOr("CISS_WORKER_BACKEND", "local"), "where Tasks run: local (processes on this host) or cluster (Tekton TaskRuns) [CISS_WORKER_BACKEND]")
	fs.StringVar(&cluster.Kubeconfig, "kubeconfig", os.Getenv("CISS_WORKER_KUBECONFIG"), "cluster backend: kubeconfig file; empty uses the in-cluster service account [CISS_WORKER_KUBECONFIG]")
	fs.StringVar(&cluster.Namespace, "namespace", envOr("CISS_WORKER_NAMESPACE", "default"), "cluster backend: namespace of the TaskRuns [CISS_WORKER_NAMESPACE]")
	fs.StringVar(&claims, "cluster-claims", os.Getenv("CISS_WORKER_CLUSTER_CLAIMS"), "cluster backend: NAME=PVC,... binds worker-provided data (manifest from: NAME, e.g. trivy-db) to PersistentVolumeClaims [CISS_WORKER_CLUSTER_CLAIMS]")
	fs.StringVar(&cluster.HelperImage, "helper-image", os.Getenv("CISS_WORKER_HELPER_IMAGE"), "cluster backend: image with sh and busybox wget for the report upload step, pinned by digest [CISS_WORKER_HELPER_IMAGE]")
	fs.StringVar(&cluster.UploadAddr, "upload-addr", envOr("CISS_WORKER_UPLOAD_ADDR", "127.0.0.1:9446"), "cluster backend: listener for report uploads from pods [CISS_WORKER_UPLOAD_ADDR]")
	fs.StringVar(&cluster.UploadURL, "upload-url", os.Getenv("CISS_WORKER_UPLOAD_URL"), "cluster backend: the upload listener as pods reach it (default http://UPLOAD_ADDR) [CISS_WORKER_UPLOAD_URL]")
	fs.StringVar(&vault.Addr, "vault-addr", os.Getenv("CISS_VAULT_ADDR"), "Vault address: enables protected actions (vault-* job types) [CISS_VAULT_ADDR]")
	fs.StringVar(&vault.CACert, "vault-ca-cert", os.Getenv("CISS_VAULT_CACERT"), "PEM bundle verifying Vault's TLS certificate [CISS_VAULT_CACERT]")
	fs.StringVar(&vault.AppRoleMount, "vault-approle-mount", os.Getenv("CISS_VAULT_APPROLE_MOUNT"), "CISS's AppRole mount (default approle) [CISS_VAULT_APPROLE_MOUNT]")
	fs.StringVar(&vault.RoleIDFile, "vault-role-id-file", os.Getenv("CISS_VAULT_ROLE_ID_FILE"), "file holding CISS's AppRole role_id [CISS_VAULT_ROLE_ID_FILE]")
	fs.StringVar(&vault.SecretIDFile, "vault-secret-id-file", os.Getenv("CISS_VAULT_SECRET_ID_FILE"), "file holding CISS's AppRole secret_id [CISS_VAULT_SECRET_ID_FILE]")
	fs.StringVar(&vault.KVMount, "vault-kv-mount", os.Getenv("CISS_VAULT_KV_MOUNT"), "tenants' KV v2 mount (default secret) [CISS_VAULT_KV_MOUNT]")
	fs.StringVar(&vault.NamespaceParent, "vault-namespace-parent", os.Getenv("CISS_VAULT_NAMESPACE_PARENT"), "parent of tenants' namespaces, {tenant} replaced (default {tenant}) [CISS_VAULT_NAMESPACE_PARENT]")
	fs.StringVar(&logLevel, "log-level", envOr("CISS_LOG_LEVEL", "info"), "debug, info, warn or error [CISS_LOG_LEVEL]")
	catalog.Only = splitList(os.Getenv("CISS_WORKER_TOOLS"))
	_ = fs.Parse(os.Args[1:])

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	var err error
	if cfg.AckWait, err = time.ParseDuration(ackWait); err != nil {
		return fmt.Errorf("-ack-wait: %w", err)
	}
	if cfg.TaskTimeout, err = time.ParseDuration(taskTimeout); err != nil {
		return fmt.Errorf("-task-timeout: %w", err)
	}
	wait, err := time.ParseDuration(stopWait)
	if err != nil {
		return fmt.Errorf("-stop-wait: %w", err)
	}
	catalog.Images, catalog.Workspaces = map[string]string{}, map[string]string{}
	if err := images.into(catalog.Images); err != nil {
		return fmt.Errorf("-image: %w", err)
	}
	if err := workspaces.into(catalog.Workspaces); err != nil {
		return fmt.Errorf("-workspace: %w", err)
	}
	if _, set := catalog.Images["aquasec/trivy:*"]; !set {
		if trivyBin == "" {
			trivyBin, _ = exec.LookPath("trivy")
		}
		if trivyBin != "" {
			catalog.Images["aquasec/trivy:*"] = trivyBin
		}
	}
	if _, set := catalog.Workspaces["trivy-db"]; !set && trivyCache != "" {
		catalog.Workspaces["trivy-db"] = trivyCache
	}
	if err := sastDefaults(catalog.Images, catalog.Workspaces, gosecBin); err != nil {
		return err
	}
	res := workers.RegistryResolver{Insecure: insecureRegs == "true"}
	for _, g := range strings.Split(allowed, ",") {
		if g = strings.TrimSpace(g); g != "" {
			if _, err := path.Match(g, ""); err != nil {
				return fmt.Errorf("-allowed-registries: bad glob %q: %w", g, err)
			}
			res.Allowed = append(res.Allowed, g)
		}
	}
	cfg.Resolver = res
	if signingKey != "" {
		cfg.Signing = &workers.SigningConfig{Key: signingKey, Password: []byte(os.Getenv("COSIGN_PASSWORD")), InsecureRegistries: res.Insecure}
		if policyFile != "" {
			if cfg.Signing.Policy, err = workers.LoadPolicy(policyFile); err != nil {
				return err
			}
		}
	} else if policyFile != "" && git.signingKey == "" {
		return fmt.Errorf("-policy needs -signing-key or -git-signing-key: the policy decides what is signed")
	}
	if cfg.Git, err = git.config(policyFile); err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.Concurrency = map[schemas.Lane]int{schemas.LaneInteractive: interactive, schemas.LaneBulk: bulk}
	host, _ := os.Hostname()
	cfg.Source = "ciss-worker/" + host

	switch backend {
	case "local":
	case "cluster":
		cluster.Claims, cluster.Logger, cluster.Worker = map[string]string{}, cfg.Logger, cmp.Or(cfg.Name, host)
		for _, kv := range strings.Split(claims, ",") {
			if kv = strings.TrimSpace(kv); kv == "" {
				continue
			}
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" || v == "" {
				return fmt.Errorf("-cluster-claims: %q: want NAME=PVC", kv)
			}
			cluster.Claims[k] = v
		}
		cb, err := workers.OpenCluster(context.Background(), cluster)
		if err != nil {
			return err
		}
		defer cb.Close()
		catalog.Cluster = cb
	default:
		return fmt.Errorf("-backend %q: want local or cluster", backend)
	}
	tools, err := workers.LoadTools(context.Background(), catalog)
	if err != nil {
		return err
	}
	cfg.Tools = tools
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if vault.Addr != "" {
		aud, err := workers.NewAuditor(cfg)
		if err != nil {
			return err
		}
		defer aud.Close()
		vault.Audit, vault.Logger = aud.Audit, cfg.Logger
		vt, err := workers.NewVaultTool(ctx, vault)
		if err != nil {
			return err
		}
		cfg.Tools = append(cfg.Tools, vt)
	}

	w, err := workers.New(cfg)
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return w.Stop(sctx)
}

// keygen writes a cosign key pair (cosign.key, encrypted with
// COSIGN_PASSWORD, and cosign.pub) into a directory unless one is there.
func keygen(args []string) error {
	fs := flag.NewFlagSet("ciss-worker keygen", flag.ExitOnError)
	dir := fs.String("dir", ".ciss/dev", "directory for cosign.key and cosign.pub")
	_ = fs.Parse(args)
	path, err := workers.GenerateDevKey(*dir, []byte(os.Getenv("COSIGN_PASSWORD")))
	if err != nil {
		return err
	}
	fmt.Println(path)
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// multiFlag collects repeated NAME=VALUE flags.
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }

func (m *multiFlag) Set(v string) error {
	*m = append(*m, v)
	return nil
}

func (m multiFlag) into(dst map[string]string) error {
	for _, kv := range m {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return fmt.Errorf("%q: want NAME=VALUE", kv)
		}
		dst[k] = v
	}
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
