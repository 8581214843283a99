package workers

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/schemas"
	"ciss.dev/workers/internal/vaultaction"
)

// VaultToolName is the routing name of the protected-action tool.
const VaultToolName = "vault"

// VaultConfig configures the protected-action tool: how CISS reaches Vault and
// logs in with its own AppRole (bound to deploy/vault/ciss-policy.hcl).
type VaultConfig struct {
	// Addr is Vault's address, e.g. https://vault.internal:8200. Required.
	Addr string
	// CACert is a PEM bundle to verify Vault's TLS certificate; optional.
	CACert string
	// AppRoleMount is CISS's AppRole mount; default "approle".
	AppRoleMount string
	// RoleIDFile and SecretIDFile hold CISS's AppRole credentials (mounted
	// secrets). Required. Their contents are never logged.
	RoleIDFile, SecretIDFile string
	// KVMount is the tenants' KV v2 mount; default "secret".
	KVMount string
	// NamespaceParent is the parent of tenants' namespaces ("{tenant}" is
	// replaced); default "{tenant}".
	NamespaceParent string
	// Audit stores audit records (subject, JSON); required, so that no Vault call
	// goes unrecorded. The worker's NATS connection provides it (NewAuditor).
	Audit func(ctx context.Context, subject string, data []byte) error
	// Logger receives the tool's logs; default slog.Default().
	Logger *slog.Logger
}

// VaultTool runs protected actions (the vault-* job types) against Vault with
// CISS's own credentials, which requesters never see. The gateway has already
// checked the guardrails; the tool parses the parameters again with the same
// parser and refuses anything outside the tenant's paths.
type VaultTool struct {
	cfg      VaultConfig
	client   *api.Client
	log      *slog.Logger
	loggedIn atomic.Bool
}

var _ Tool = (*VaultTool)(nil)

// NewVaultTool logs in to Vault and keeps the token renewed until ctx ends. An
// unreachable Vault does not stop the worker (its other tools keep working): the
// login is retried in the background and protected actions are retried until
// it succeeds. Unreadable credential files are a configuration error.
func NewVaultTool(ctx context.Context, cfg VaultConfig) (*VaultTool, error) {
	if cfg.Addr == "" || cfg.RoleIDFile == "" || cfg.SecretIDFile == "" {
		return nil, errors.New("vault tool: Addr, RoleIDFile and SecretIDFile are required")
	}
	if cfg.Audit == nil {
		return nil, errors.New("vault tool: Audit is required")
	}
	log := cmp.Or(cfg.Logger, slog.Default()).With("tool", VaultToolName)
	vc := api.DefaultConfig()
	vc.Address = cfg.Addr
	if cfg.CACert != "" {
		if err := vc.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACert}); err != nil {
			return nil, fmt.Errorf("vault tool: TLS: %w", err)
		}
	}
	c, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault tool: %w", err)
	}
	c.ClearToken() // never a VAULT_TOKEN from the environment
	read := func(f string) (string, error) {
		b, err := os.ReadFile(f)
		return strings.TrimSpace(string(b)), err
	}
	roleID, err := read(cfg.RoleIDFile)
	if err != nil {
		return nil, fmt.Errorf("vault tool: role id: %w", err)
	}
	secretID, err := read(cfg.SecretIDFile)
	if err != nil {
		return nil, fmt.Errorf("vault tool: secret id: %w", err)
	}
	t := &VaultTool{cfg: cfg, client: c, log: log}
	role := vaultaction.AppRole{Mount: cfg.AppRoleMount, RoleID: roleID, SecretID: secretID}
	go t.session(ctx, role)
	return t, nil
}

// session logs in (retrying with backoff) and then keeps the token alive.
func (t *VaultTool) session(ctx context.Context, role vaultaction.AppRole) {
	backoff := time.Second
	for {
		s, err := vaultaction.Login(ctx, t.client, role, t.log)
		if err == nil {
			t.loggedIn.Store(true)
			if err := s.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				t.log.Warn("vault session ended", "err", err)
			}
			return
		}
		t.log.Warn("vault login failed; retrying", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// errNotLoggedIn makes a task wait (retry) until the first login succeeded.
var errNotLoggedIn = errors.New("vault tool: not logged in to Vault yet")

// Name implements Tool.
func (t *VaultTool) Name() string { return VaultToolName }

// Version implements Tool: Vault's version, from sys/health.
func (t *VaultTool) Version(ctx context.Context) (ToolVersion, error) {
	h, err := t.client.Sys().HealthWithContext(ctx)
	if err != nil {
		return ToolVersion{}, fmt.Errorf("vault health: %w", err)
	}
	return ToolVersion{Tool: "vault " + h.Version}, nil
}

// Run implements Tool: it plans (dry run) or applies the action and stores the
// result (plan, applied and rolled-back calls, redacted) as the job's native JSON
// report. Every Vault call and the outcome go to the audit stream with the
// requester's identity.
func (t *VaultTool) Run(ctx context.Context, in Input, dir string) (Output, error) {
	task := in.Task
	if !t.loggedIn.Load() {
		return Output{}, errNotLoggedIn
	}
	rec := schemas.ActionAudit{JobID: task.JobID, Tenant: task.Tenant, Type: task.Type, Identity: task.RequestedBy}
	audit := func(ctx context.Context, r schemas.ActionAudit) error {
		r.Time = time.Now().UTC()
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return t.cfg.Audit(ctx, schemas.SubjectAuditAction(r.Stage, r.Verdict), b)
	}
	a, err := schemas.ParseVaultAction(task.Type, task.Tenant, task.Params)
	if err != nil {
		return Output{}, fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	var auditErr error
	exec, err := vaultaction.New(vaultaction.Config{
		Client: t.client, KVMount: t.cfg.KVMount, NamespaceParent: t.cfg.NamespaceParent,
		Logger: t.log.With("job", task.JobID, "tenant", task.Tenant),
		OnCall: func(ctx context.Context, s vaultaction.Step, err error) {
			r := rec
			r.Stage, r.Verdict = schemas.AuditStageCall, "ok"
			r.Method, r.Path, r.Namespace, r.Body = s.Method, s.Path, s.Namespace, s.Body
			if err != nil {
				r.Verdict, r.Error = "error", err.Error()
			}
			auditErr = errors.Join(auditErr, audit(ctx, r))
		},
	})
	if err != nil {
		return Output{}, err
	}
	res, runErr := exec.Run(ctx, a)
	r := rec
	r.Stage, r.Verdict = schemas.AuditStageResult, "ok"
	if a.DryRun {
		r.Verdict = "dry-run"
	}
	if res != nil {
		r.Summary = res.Plan.Summary
	}
	if runErr != nil {
		r.Verdict, r.Error = "error", runErr.Error()
	}
	if err := errors.Join(auditErr, audit(context.WithoutCancel(ctx), r)); err != nil {
		t.log.Error("audit record not stored", "job", task.JobID, "err", err)
		if runErr == nil {
			runErr = fmt.Errorf("audit: %w", err)
		}
	}
	if runErr != nil {
		var se *vaultaction.StepError
		if errors.As(runErr, &se) || errors.Is(runErr, vaultaction.ErrNamespacesUnsupported) ||
			errors.Is(runErr, vaultaction.ErrConflict) || errors.Is(runErr, vaultaction.ErrPolicyEscapes) {
			// Rolled back or refused: running it again blindly cannot help.
			return Output{}, fmt.Errorf("%w: %w", ErrPermanent, runErr)
		}
		return Output{}, runErr
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return Output{}, err
	}
	f := filepath.Join(dir, "vault-result.json")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		return Output{}, err
	}
	return Output{Reports: []OutputFile{{Format: schemas.FormatNative, MediaType: schemas.MediaTypeJSON, Path: f}}}, nil
}

// runAction runs a protected action: no image to resolve and never from the
// result cache (Vault's state is the input, and a dry run must reflect it now).
func (w *Worker) runAction(ctx context.Context, tool Tool, task schemas.Task) (schemas.TaskResult, error) {
	var res schemas.TaskResult
	ver, err := tool.Version(ctx)
	if err != nil {
		return res, fmt.Errorf("tool version: %w", err)
	}
	res.ToolVersion = ver.Tool
	dir, err := os.MkdirTemp(w.cfg.WorkDir, "ciss-task-")
	if err != nil {
		return res, fmt.Errorf("work dir: %w", err)
	}
	defer os.RemoveAll(dir)
	timeout := cmp.Or(time.Duration(task.Timeout), w.cfg.TaskTimeout)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := tool.Run(rctx, Input{Task: task, Timeout: timeout}, dir)
	if err != nil {
		return res, err
	}
	result := &schemas.Result{Summary: out.Summary}
	for _, f := range out.Reports {
		rep, err := w.storeReport(ctx, f)
		if err != nil {
			return res, err
		}
		result.Reports = append(result.Reports, rep)
	}
	res.Result = result
	return res, nil
}

// Auditor stores audit records in the CISS_AUDIT stream over its own NATS
// connection (made with cfg's NATS settings), waiting for each acknowledgement.
type Auditor struct {
	nc *nats.Conn
	js jetstream.JetStream
}

// NewAuditor connects to NATS as cfg says. Close it after the worker stopped.
func NewAuditor(cfg Config) (*Auditor, error) {
	cfg.NATSURL = cmp.Or(cfg.NATSURL, nats.DefaultURL)
	cfg.Source = cmp.Or(cfg.Source, "ciss-worker") + "/audit"
	nc, err := connect(cfg, cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)))
	if err != nil {
		return nil, fmt.Errorf("auditor: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("auditor: %w", err)
	}
	return &Auditor{nc: nc, js: js}, nil
}

// Audit stores one record and returns once JetStream acknowledged it.
func (a *Auditor) Audit(ctx context.Context, subject string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := a.js.Publish(ctx, subject, data, jetstream.WithExpectStream(schemas.StreamAudit)); err != nil {
		return fmt.Errorf("audit %s: %w", subject, err)
	}
	return nil
}

// Close closes the connection.
func (a *Auditor) Close() { a.nc.Close() }
