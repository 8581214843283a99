package vaultaction

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"ciss.dev/schemas"
	"github.com/hashicorp/vault/api"
)

// Names inside a tenant namespace created by vault-namespace-create.
const (
	nsBaselinePolicy = "baseline"
	nsAdminMount     = "approle"
	nsAdminRole      = "admin"
)

// NamespacesSupported reports whether the server has namespaces: Vault
// Enterprise says so in sys/health; OpenBao does not, but answers on
// sys/namespaces, where Vault Community Edition answers 404 "enterprise-only
// feature" (older servers: "unsupported path").
func (e *Executor) NamespacesSupported(ctx context.Context) (bool, error) {
	h, err := e.cfg.Client.Sys().HealthWithContext(ctx)
	if err != nil {
		return false, fmt.Errorf("vaultaction: sys/health: %w", err)
	}
	if h.Enterprise {
		return true, nil
	}
	// A raw request: the client's List hides a 404 and its errors.
	resp, err := e.cfg.Client.RawRequestWithContext(ctx, e.cfg.Client.NewRequest("LIST", "/v1/sys/namespaces"))
	if resp != nil {
		resp.Body.Close()
	}
	var re *api.ResponseError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &re) && re.StatusCode == http.StatusNotFound &&
		(strings.Contains(strings.Join(re.Errors, " "), "enterprise-only feature") ||
			strings.Contains(strings.Join(re.Errors, " "), "unsupported path")):
		return false, nil
	case errors.As(err, &re) && re.StatusCode == http.StatusNotFound:
		return true, nil // a namespace-aware server with no namespaces yet
	}
	return false, fmt.Errorf("vaultaction: probe sys/namespaces: %w", err)
}

// NamespaceParent returns the namespace a tenant's namespaces are created under.
func (e *Executor) NamespaceParent(tenant string) string {
	return strings.ReplaceAll(e.cfg.NamespaceParent, "{tenant}", tenant)
}

// planNamespace follows Vault's documented API: POST sys/namespaces/:path in the
// parent namespace (X-Vault-Namespace), then, inside the new namespace, the
// baseline policy (sys/policies/acl/baseline), an AppRole mount
// (sys/auth/approle) and the team's admin role bound to the baseline policy.
func (e *Executor) planNamespace(ctx context.Context, a *schemas.VaultAction) ([]Step, error) {
	ok, err := e.NamespacesSupported(ctx)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNamespacesUnsupported
	}
	parent := e.NamespaceParent(a.Tenant)
	child := parent + "/" + a.Name
	var steps []Step
	have, err := e.read(ctx, parent, "sys/namespaces/"+a.Name)
	if err != nil {
		return nil, err
	}
	fresh := have == nil
	if fresh {
		path := "sys/namespaces/" + a.Name
		steps = append(steps, Step{Method: http.MethodPut, Path: path, Namespace: parent,
			Body: map[string]any{"custom_metadata": map[string]any{"ciss.tenant": a.Tenant}}, Change: "create",
			undo: &Step{Method: http.MethodDelete, Path: path, Namespace: parent, Change: "undo create"}})
	}
	base := *a
	if len(base.Paths) == 0 {
		base.Paths = []string{"*"}
	}
	hcl := base.PolicyHCL(e.cfg.KVMount)
	if err := checkPolicy(hcl, e.cfg.KVMount, a.Tenant); err != nil {
		return nil, err
	}
	if fresh {
		// Nothing can be read inside a namespace that does not exist yet; and the
		// namespace's own undo (delete) removes everything created in it.
		steps = append(steps,
			Step{Method: http.MethodPut, Path: "sys/policies/acl/" + nsBaselinePolicy, Namespace: child, Body: map[string]any{"policy": hcl}, Change: "create"},
			Step{Method: http.MethodPut, Path: "sys/auth/" + nsAdminMount, Namespace: child, Body: map[string]any{"type": schemas.AuthAppRole, "description": "CISS: team admin"}, Change: "create"},
			Step{Method: http.MethodPut, Path: "auth/" + nsAdminMount + "/role/" + nsAdminRole, Namespace: child, Body: nsAdminRoleBody(&base), Change: "create"})
		return steps, nil
	}
	ps, err := e.planPolicy(ctx, child, nsBaselinePolicy, hcl, a.Tenant)
	if err != nil {
		return nil, err
	}
	steps = append(steps, ps...)
	ms, err := e.planMount(ctx, child, nsAdminMount, schemas.AuthAppRole, "CISS: team admin")
	if err != nil {
		return nil, err
	}
	steps = append(steps, ms...)
	rs, err := e.planWrite(ctx, child, "auth/"+nsAdminMount+"/role/"+nsAdminRole, nsAdminRoleBody(&base), len(ms) > 0)
	if err != nil {
		return nil, err
	}
	return append(steps, rs...), nil
}

func nsAdminRoleBody(a *schemas.VaultAction) map[string]any {
	cidrs := make([]string, 0, len(a.BoundCIDRs))
	for _, c := range a.BoundCIDRs {
		cidrs = append(cidrs, c.String())
	}
	return map[string]any{
		"token_policies":        []string{nsBaselinePolicy},
		"token_ttl":             int64(a.TokenTTL.Seconds()),
		"token_max_ttl":         int64(a.TokenMaxTTL.Seconds()),
		"secret_id_ttl":         int64(a.SecretIDTTL.Seconds()),
		"token_bound_cidrs":     cidrs,
		"secret_id_bound_cidrs": cidrs,
	}
}
