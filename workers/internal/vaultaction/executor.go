package vaultaction

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"ciss.dev/schemas"
	"github.com/hashicorp/vault/api"
)

// Config configures an Executor. Zero values mean defaults.
type Config struct {
	// Client is an authenticated Vault client (see Session). Required.
	Client *api.Client
	// KVMount is the KV v2 mount holding tenants' secrets under <tenant>/; default "secret".
	KVMount string
	// NamespaceParent is the namespace tenants' namespaces are created under, with
	// "{tenant}" replaced by the tenant; default "{tenant}".
	NamespaceParent string
	// Logger receives one line per Vault call; default slog.Default().
	Logger *slog.Logger
	// OnCall, if set, is told about every Vault call (redacted) and its outcome,
	// e.g. to write the audit stream.
	OnCall func(ctx context.Context, s Step, err error)
}

// Executor plans and applies protected actions.
type Executor struct {
	cfg Config
	log *slog.Logger
	// beforeStep is a test seam that can fail a step (rollback tests).
	beforeStep func(i int, s Step) error
}

// New returns an Executor for cfg.
func New(cfg Config) (*Executor, error) {
	if cfg.Client == nil {
		return nil, errors.New("vaultaction: Config.Client is required")
	}
	cfg.KVMount = cmp.Or(cfg.KVMount, "secret")
	cfg.NamespaceParent = cmp.Or(cfg.NamespaceParent, "{tenant}")
	return &Executor{cfg: cfg, log: cmp.Or(cfg.Logger, slog.Default())}, nil
}

// Run executes a, or only plans it when a.DryRun is set. On a failed step it rolls
// back the steps already applied, in reverse order, and returns the result with
// the error.
func (e *Executor) Run(ctx context.Context, a *schemas.VaultAction) (*Result, error) {
	steps, err := e.plan(ctx, a)
	if err != nil {
		return nil, err
	}
	res := &Result{DryRun: a.DryRun}
	for _, s := range steps {
		res.Plan.Steps = append(res.Plan.Steps, s.Redacted())
	}
	res.Plan.summarize()
	if a.DryRun || len(steps) == 0 {
		return res, nil
	}
	for i, s := range steps {
		err := error(nil)
		if e.beforeStep != nil {
			err = e.beforeStep(i, s)
		}
		if err == nil {
			err = e.call(ctx, s)
		}
		if err != nil {
			stepErr := &StepError{Step: s.Redacted(), Err: err}
			for j := len(res.Applied) - 1; j >= 0; j-- {
				u := steps[j].undo
				if u == nil {
					continue
				}
				if uerr := e.call(context.WithoutCancel(ctx), *u); uerr != nil {
					stepErr.RollbackErrs = append(stepErr.RollbackErrs, fmt.Errorf("undo %s %s: %w", u.Method, u.Path, uerr))
					continue
				}
				res.RolledBack = append(res.RolledBack, u.Redacted())
			}
			res.Changed = len(stepErr.RollbackErrs) > 0
			return res, stepErr
		}
		res.Applied = append(res.Applied, s.Redacted())
		res.Changed = true
	}
	return res, nil
}

// call makes one Vault call.
func (e *Executor) call(ctx context.Context, s Step) error {
	c := e.cfg.Client
	if s.Namespace != "" {
		c = c.WithNamespace(s.Namespace)
	}
	var err error
	switch s.Method {
	case http.MethodDelete:
		_, err = c.Logical().DeleteWithContext(ctx, s.Path)
	default:
		_, err = c.Logical().WriteWithContext(ctx, s.Path, s.Body)
	}
	e.log.InfoContext(ctx, "vault call", "method", s.Method, "path", s.Path, "namespace", s.Namespace,
		"change", s.Change, "error", err)
	if e.cfg.OnCall != nil {
		e.cfg.OnCall(ctx, s.Redacted(), err)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", s.Method, s.Path, err)
	}
	return nil
}

// plan reads Vault's state and returns the steps that bring it to what a asks for.
func (e *Executor) plan(ctx context.Context, a *schemas.VaultAction) ([]Step, error) {
	switch a.Type {
	case schemas.JobTypeVaultPolicyApply:
		return e.planPolicy(ctx, "", a.PolicyName(), a.PolicyHCL(e.cfg.KVMount), a.Tenant)
	case schemas.JobTypeVaultAuthOnboard:
		return e.planAuth(ctx, a)
	case schemas.JobTypeVaultNamespaceCreate:
		return e.planNamespace(ctx, a)
	}
	return nil, fmt.Errorf("vaultaction: %w: %q", ErrUnknownAction, a.Type)
}

// checkPolicy refuses a rendered policy that names any path outside the tenant's
// prefixes: a second line of defence behind the parameter parser.
func checkPolicy(hcl, kvMount, tenant string) error {
	pre := schemas.SecretPrefixes(kvMount, tenant)
	for _, line := range strings.Split(hcl, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "path ") {
			continue
		}
		p := strings.TrimSuffix(strings.TrimPrefix(line, "path "), " {")
		p = strings.Trim(p, `"`)
		if !strings.HasPrefix(p, pre[0]) && !strings.HasPrefix(p, pre[1]) || strings.Contains(p, "..") ||
			strings.ContainsAny(p, "{}+") {
			return fmt.Errorf("%w: %q", ErrPolicyEscapes, p)
		}
	}
	return nil
}

func (e *Executor) planPolicy(ctx context.Context, ns, name, hcl, tenant string) ([]Step, error) {
	if err := checkPolicy(hcl, e.cfg.KVMount, tenant); err != nil {
		return nil, err
	}
	path := "sys/policies/acl/" + name
	have, err := e.read(ctx, ns, path)
	if err != nil {
		return nil, err
	}
	want := map[string]any{"policy": hcl}
	if have == nil {
		return []Step{{Method: http.MethodPut, Path: path, Namespace: ns, Body: want, Change: "create",
			undo: &Step{Method: http.MethodDelete, Path: path, Namespace: ns, Change: "undo create"}}}, nil
	}
	if changed := diff(want, have); len(changed) > 0 {
		return []Step{{Method: http.MethodPut, Path: path, Namespace: ns, Body: want, Change: "update " + strings.Join(changed, ", "),
			undo: &Step{Method: http.MethodPut, Path: path, Namespace: ns, Body: map[string]any{"policy": have["policy"]}, Change: "undo update"}}}, nil
	}
	return nil, nil
}

// planMount enables an auth method at path (under sys/auth/) unless it is there.
// A mount of another type there is a conflict, never silently replaced.
func (e *Executor) planMount(ctx context.Context, ns, mount, typ, desc string) ([]Step, error) {
	path := "sys/auth/" + mount
	have, err := e.readMount(ctx, ns, mount)
	if err != nil {
		return nil, err
	}
	if have != nil {
		if t, _ := have["type"].(string); t != typ {
			return nil, fmt.Errorf("%w: auth/%s is a %q method, not %q", ErrConflict, mount, t, typ)
		}
		return nil, nil
	}
	return []Step{{Method: http.MethodPut, Path: path, Namespace: ns, Body: map[string]any{"type": typ, "description": desc}, Change: "create",
		undo: &Step{Method: http.MethodDelete, Path: path, Namespace: ns, Change: "undo create"}}}, nil
}

// planWrite creates or updates a config/role object at path so that it has want's
// fields. mountNew says the object's mount is created by this plan (no read then).
func (e *Executor) planWrite(ctx context.Context, ns, path string, want map[string]any, mountNew bool) ([]Step, error) {
	var have map[string]any
	if !mountNew {
		var err error
		if have, err = e.read(ctx, ns, path); err != nil {
			return nil, err
		}
	}
	if have == nil {
		return []Step{{Method: http.MethodPut, Path: path, Namespace: ns, Body: want, Change: "create",
			undo: &Step{Method: http.MethodDelete, Path: path, Namespace: ns, Change: "undo create"}}}, nil
	}
	changed := diff(want, have)
	if len(changed) == 0 {
		return nil, nil
	}
	old := make(map[string]any, len(want))
	for k := range want {
		old[k] = have[k]
	}
	return []Step{{Method: http.MethodPut, Path: path, Namespace: ns, Body: want, Change: "update " + strings.Join(changed, ", "),
		undo: &Step{Method: http.MethodPut, Path: path, Namespace: ns, Body: old, Change: "undo update"}}}, nil
}

func (e *Executor) planAuth(ctx context.Context, a *schemas.VaultAction) ([]Step, error) {
	mount := a.AuthMount()
	typ := a.AuthType
	steps, err := e.planMount(ctx, "", mount, typ, fmt.Sprintf("CISS: tenant %s, %s", a.Tenant, a.Name))
	if err != nil {
		return nil, err
	}
	mountNew := len(steps) > 0
	// Config first (the role write of jwt/kubernetes needs it), then the policy the
	// role is bound to, then the role.
	if cfg := authConfig(a); cfg != nil {
		s, err := e.planWrite(ctx, "", "auth/"+mount+"/config", cfg, mountNew)
		if err != nil {
			return nil, err
		}
		for i := range s {
			// Deleting a config is not supported by these methods; the mount's own
			// undo (disable) removes it when the mount was new.
			if s[i].Change == "create" {
				s[i].undo = nil
			}
		}
		steps = append(steps, s...)
	}
	ps, err := e.planPolicy(ctx, "", a.PolicyName(), a.PolicyHCL(e.cfg.KVMount), a.Tenant)
	if err != nil {
		return nil, err
	}
	steps = append(steps, ps...)
	rs, err := e.planWrite(ctx, "", "auth/"+mount+"/role/"+a.Role, roleBody(a), mountNew)
	if err != nil {
		return nil, err
	}
	return append(steps, rs...), nil
}

func authConfig(a *schemas.VaultAction) map[string]any {
	switch a.AuthType {
	case schemas.AuthJWT, schemas.AuthOIDC:
		c := map[string]any{"bound_issuer": a.BoundIssuer}
		if a.JWTPublicKeys != "" {
			c["jwt_validation_pubkeys"] = []string{strings.TrimSpace(a.JWTPublicKeys)}
		} else {
			c["oidc_discovery_url"] = a.OIDCDiscoveryURL
		}
		return c
	case schemas.AuthKubernetes:
		// Never Vault's own pod service account (its CA and token reviewer JWT):
		// the tenant's cluster is named explicitly.
		c := map[string]any{"kubernetes_host": a.KubernetesHost, "disable_local_ca_jwt": true}
		if a.KubernetesCACert != "" {
			c["kubernetes_ca_cert"] = a.KubernetesCACert
		}
		return c
	}
	return nil
}

func roleBody(a *schemas.VaultAction) map[string]any {
	cidrs := make([]string, 0, len(a.BoundCIDRs))
	for _, c := range a.BoundCIDRs {
		cidrs = append(cidrs, c.String())
	}
	r := map[string]any{
		"token_policies":    []string{a.PolicyName()},
		"token_ttl":         int64(a.TokenTTL.Seconds()),
		"token_max_ttl":     int64(a.TokenMaxTTL.Seconds()),
		"token_bound_cidrs": cidrs,
	}
	switch a.AuthType {
	case schemas.AuthAppRole:
		r["secret_id_ttl"] = int64(a.SecretIDTTL.Seconds())
		r["secret_id_bound_cidrs"] = cidrs
	case schemas.AuthJWT, schemas.AuthOIDC:
		r["role_type"] = "jwt"
		r["user_claim"] = a.UserClaim
		r["bound_audiences"] = a.BoundAudiences
		r["bound_claims"] = a.BoundClaims
	case schemas.AuthKubernetes:
		r["bound_service_account_names"] = a.ServiceAccounts
		r["bound_service_account_namespaces"] = a.ServiceAccountNSes
	}
	return r
}

// read returns the data at path, or nil when there is none.
func (e *Executor) read(ctx context.Context, ns, path string) (map[string]any, error) {
	c := e.cfg.Client
	if ns != "" {
		c = c.WithNamespace(ns)
	}
	s, err := c.Logical().ReadWithContext(ctx, path)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
			return nil, nil
		}
		return nil, fmt.Errorf("vaultaction: read %s: %w", path, err)
	}
	if s == nil {
		return nil, nil
	}
	return s.Data, nil
}

// readMount reads an auth mount's configuration; Vault answers 400 "No auth
// engine at ..." for a missing one.
func (e *Executor) readMount(ctx context.Context, ns, mount string) (map[string]any, error) {
	c := e.cfg.Client
	if ns != "" {
		c = c.WithNamespace(ns)
	}
	s, err := c.Logical().ReadWithContext(ctx, "sys/auth/"+mount)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && (re.StatusCode == http.StatusNotFound ||
			re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "No auth engine")) {
			return nil, nil
		}
		return nil, fmt.Errorf("vaultaction: read sys/auth/%s: %w", mount, err)
	}
	if s == nil {
		return nil, nil
	}
	return s.Data, nil
}
