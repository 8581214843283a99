package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/test/fixture"
	"ciss.dev/test/stack"
	"ciss.dev/test/vaultdev"
)

// e2eGuardrails lets acme's CI identity onboard AppRole methods named ci-* with
// short TTLs and loopback CIDRs, reading and listing only.
const e2eGuardrails = `version: 1
rules:
  - name: acme-ci-approle
    tenants: [acme]
    roles: [submitter]
    actions: [vault-auth-onboard]
    names: ["ci-*"]
    auth_types: [approle]
    capabilities: [read, list]
    max_token_ttl: 1h
    max_token_max_ttl: 4h
    max_secret_id_ttl: 24h
    allowed_cidrs: ["127.0.0.0/8"]
  - name: acme-policies-approved
    tenants: [acme]
    roles: [submitter]
    actions: [vault-policy-apply]
    names: ["team-*"]
    capabilities: [read, list, create, update]
    require_approval: true
`

// vaultPolicy adds an approver for acme to the e2e identities.
const vaultPolicy = e2ePolicy + `  - name: acme-approver
    match:
      spiffe_id: "spiffe://ciss.dev/tenant/acme/approver"
    tenant: acme
    roles: [approver]
`

// vaultAPI is a minimal Vault HTTP client for the test's own set-up and checks:
// the test module does not link Vault's client, and these calls are what an
// operator would make with the vault CLI.
type vaultAPI struct {
	t    *testing.T
	addr string
}

func (v vaultAPI) do(method, path, token string, body any) (int, map[string]any) {
	v.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(v.t, err)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, v.addr+"/v1/"+path, r)
	require.NoError(v.t, err)
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(v.t, err)
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

func (v vaultAPI) must(method, path, token string, body any) map[string]any {
	v.t.Helper()
	code, out := v.do(method, path, token, body)
	require.Less(v.t, code, 300, "%s %s: HTTP %d %v", method, path, code, out)
	return out
}

func data(m map[string]any) map[string]any { d, _ := m["data"].(map[string]any); return d }

// TestVaultAppRoleOnboarding is issue 6's done-when, on the real stack and a real
// Vault: a team's certificate requests an AppRole onboarding; the dry run shows
// the plan and changes nothing; the real run creates it; a login with the new role
// reads only under the tenant prefix; a second run is a no-op; an out-of-bounds
// request is refused before any Vault call (Vault's own audit log shows none);
// every decision and Vault call is in CISS_AUDIT with the certificate identity;
// no Vault token or AppRole secret appears in logs, results or audit records.
func TestVaultAppRoleOnboarding(t *testing.T) {
	srv := vaultdev.New(t)
	v := vaultAPI{t: t, addr: srv.Addr}
	root := srv.RootToken
	dir := t.TempDir()
	auditLog := filepath.Join(dir, "vault-audit.log")
	v.must("PUT", "sys/audit/file", root, map[string]any{"type": "file", "options": map[string]string{"file_path": auditLog}})
	hcl, err := os.ReadFile(filepath.Join("..", "..", "deploy", "vault", "ciss-policy.hcl"))
	require.NoError(t, err)
	v.must("PUT", "sys/policies/acl/ciss", root, map[string]any{"policy": string(hcl)})
	v.must("POST", "sys/auth/approle", root, map[string]any{"type": "approle"})
	v.must("POST", "auth/approle/role/ciss", root, map[string]any{"token_policies": []string{"ciss"}, "token_ttl": "20m"})
	roleID := data(v.must("GET", "auth/approle/role/ciss/role-id", root, nil))["role_id"].(string)
	secretID := data(v.must("POST", "auth/approle/role/ciss/secret-id", root, nil))["secret_id"].(string)
	roleIDFile := writeFile(t, dir, "role-id", []byte(roleID))
	secretIDFile := writeFile(t, dir, "secret-id", []byte(secretID))
	guardrails := writeFile(t, dir, "guardrails.yaml", []byte(e2eGuardrails))

	e := newEnvConfig(t, stack.Config{Policy: vaultPolicy, Args: map[string][]string{
		stack.Gateway: {"-guardrails", guardrails},
		stack.Worker:  {"-vault-addr", srv.Addr, "-vault-role-id-file", roleIDFile, "-vault-secret-id-file", secretIDFile},
	}})

	params := map[string]string{"name": "ci-deploy", "auth_type": "approle", "token_ttl": "15m", "token_max_ttl": "1h",
		"secret_id_ttl": "1h", "bound_cidrs": "127.0.0.0/8", "paths": "app/*"}
	onboard := func(extra ...string) schemas.JobRequest {
		p := map[string]string{}
		for k, v := range params {
			p[k] = v
		}
		for i := 0; i+1 < len(extra); i += 2 {
			p[extra[i]] = extra[i+1]
		}
		return schemas.JobRequest{Type: schemas.JobTypeVaultAuthOnboard, Params: p}
	}
	type result struct {
		DryRun  bool `json:"dry_run"`
		Changed bool `json:"changed"`
		Plan    struct {
			Steps []struct {
				Method, Path string
			} `json:"steps"`
			Summary string `json:"summary"`
		} `json:"plan"`
	}
	run := func(req schemas.JobRequest) result {
		t.Helper()
		j := e.acme.submit(req, nil)
		j = e.acme.waitDone(j.ID)
		require.Equal(t, schemas.StatusSucceeded, j.Status, "job error: %+v", j.Error)
		resp, b := e.acme.result(j.ID, "application/json")
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
		var r result
		require.NoError(t, json.Unmarshal(b, &r), "%s", b)
		return r
	}
	mounted := func() bool {
		_, out := v.do("GET", "sys/auth", root, nil)
		_, ok := data(out)["ciss/acme/ci-deploy/"]
		return ok
	}

	// 1. Dry run: the plan, nothing changed.
	dry := run(onboard("dry_run", "true"))
	require.True(t, dry.DryRun)
	require.False(t, dry.Changed)
	require.Len(t, dry.Plan.Steps, 3, dry.Plan.Summary)
	require.Equal(t, "sys/auth/ciss/acme/ci-deploy", dry.Plan.Steps[0].Path)
	require.False(t, mounted(), "the dry run changed Vault")

	// 2. The real run creates it.
	real := run(onboard())
	require.True(t, real.Changed)
	require.True(t, mounted())

	// 3. The team logs in with its new role and reads only under acme/.
	v.must("POST", "secret/data/acme/app/db", root, map[string]any{"data": map[string]string{"pw": "acme"}})
	v.must("POST", "secret/data/globex/app/db", root, map[string]any{"data": map[string]string{"pw": "globex"}})
	teamRole := data(v.must("GET", "auth/ciss/acme/ci-deploy/role/default/role-id", root, nil))["role_id"].(string)
	teamSecret := data(v.must("POST", "auth/ciss/acme/ci-deploy/role/default/secret-id", root, nil))["secret_id"].(string)
	login := v.must("POST", "auth/ciss/acme/ci-deploy/login", "", map[string]string{"role_id": teamRole, "secret_id": teamSecret})
	teamToken := login["auth"].(map[string]any)["client_token"].(string)
	got := v.must("GET", "secret/data/acme/app/db", teamToken, nil)
	require.Equal(t, "acme", data(data(got))["pw"])
	for _, p := range []string{"secret/data/globex/app/db", "secret/data/acme/other", "sys/policies/acl/ciss"} {
		code, _ := v.do("GET", p, teamToken, nil)
		require.Equal(t, http.StatusForbidden, code, p)
	}

	// 4. A second run is a no-op.
	again := run(onboard())
	require.False(t, again.Changed)
	require.Empty(t, again.Plan.Steps)
	require.Equal(t, "no changes", again.Plan.Summary)

	// 5. Out of bounds: refused by the gateway, naming the rule; Vault never sees it.
	for _, tc := range []struct {
		req   schemas.JobRequest
		field string
	}{
		{onboard("name", "ci-oob", "token_ttl", "48h", "token_max_ttl", "72h"), "guardrail.acme-ci-approle.max_token_ttl"},
		{onboard("name", "ci-oob", "bound_cidrs", "0.0.0.0/0"), "guardrail.acme-ci-approle.allowed_cidrs"},
		{onboard("name", "prod-oob"), "guardrail.acme-ci-approle.names"},
	} {
		resp, b := e.acme.do(http.MethodPost, "/v1/jobs", tc.req, nil)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "%s", b)
		require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
		require.Contains(t, string(b), "guardrail-denied")
		require.Contains(t, string(b), tc.field)
	}
	// Hostile names never parse; a reader identity has no guardrail rule.
	resp, b := e.acme.do(http.MethodPost, "/v1/jobs", onboard("name", "../../sys"), nil)
	require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode, "%s", b)
	resp, b = e.audit.do(http.MethodPost, "/v1/jobs", onboard("name", "ci-reader"), nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "%s", b)
	resp, b = e.globe.do(http.MethodPost, "/v1/jobs", onboard("name", "ci-globex"), nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "%s", b)
	require.Contains(t, string(b), "default-deny")
	vaultAudit, err := os.ReadFile(auditLog)
	require.NoError(t, err)
	require.Contains(t, string(vaultAudit), "ciss/acme/ci-deploy") // the device does record CISS's calls
	for _, name := range []string{"ci-oob", "prod-oob", "ci-reader", "ci-globex"} {
		require.NotContains(t, string(vaultAudit), name, "a refused request reached Vault")
	}

	// 6. A rule requiring approval: the job waits, its requester cannot approve
	// it, an approver can; only then does Vault change.
	pj := e.acme.submit(schemas.JobRequest{Type: schemas.JobTypeVaultPolicyApply,
		Params: map[string]string{"name": "team-writers", "paths": "shared/*", "capabilities": "read,create,update"}}, nil)
	require.Equal(t, schemas.StatusPendingApproval, pj.Status)
	code, _ := v.do("GET", "sys/policies/acl/ciss.acme.team-writers", root, nil)
	require.Equal(t, http.StatusNotFound, code, "a job pending approval reached Vault")
	resp, b = e.acme.do(http.MethodPost, "/v1/jobs/"+pj.ID+"/approve", nil, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "%s", b) // submitter role, and self-approval
	approverKP, err := e.s.PKI.CA.IssueClient(fixture.ClientOpts{CommonName: "acme-approver", SPIFFEID: "spiffe://ciss.dev/tenant/acme/approver"})
	require.NoError(t, err)
	approverCert, approverKey := filepath.Join(dir, "approver.pem"), filepath.Join(dir, "approver-key.pem")
	require.NoError(t, approverKP.WriteFiles(approverCert, approverKey))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := e.ciss(ctx, "approve", "--cert", approverCert, "--key", approverKey, "--output", "json", pj.ID)
	require.Equal(t, 0, cli.code, "ciss approve: %s", cli.stderr)
	require.Contains(t, cli.stdout, "spiffe://ciss.dev/tenant/acme/approver")
	approver := e.clientFor(approverKP)
	pj = e.acme.waitDone(pj.ID)
	require.Equal(t, schemas.StatusSucceeded, pj.Status, "%+v", pj.Error)
	require.Equal(t, "spiffe://ciss.dev/tenant/acme/approver", pj.ApprovedBy)
	v.must("GET", "sys/policies/acl/ciss.acme.team-writers", root, nil)
	resp, b = approver.do(http.MethodPost, "/v1/jobs/"+pj.ID+"/approve", nil, nil)
	require.Equal(t, http.StatusConflict, resp.StatusCode, "%s", b)

	// 7. Audit: decisions with the certificate identity, Vault calls, results.
	recs := actionAudit(t, e)
	seen := map[string]int{}
	tenants := map[string]bool{}
	for _, r := range recs {
		seen[r.Stage+"."+r.Verdict]++
		tenants[r.Tenant+"."+r.Verdict] = true
		if r.Verdict == "approved" {
			require.Equal(t, "spiffe://ciss.dev/tenant/acme/approver", r.Identity, "%+v", r)
		} else if r.Stage != schemas.AuditStageDecision || r.Verdict == "allowed" {
			require.Equal(t, "spiffe://ciss.dev/tenant/acme/ci", r.Identity, "%+v", r)
		}
	}
	require.True(t, tenants["globex.denied"], "globex's refusal is not audited: %v", tenants)
	require.Equal(t, 3, seen["decision.allowed"], "%v", seen) // dry run, real run, no-op run
	require.Equal(t, 1, seen["decision.pending-approval"], "%v", seen)
	require.Equal(t, 1, seen["decision.approved"], "%v", seen)
	require.Equal(t, 4, seen["decision.denied"], "%v", seen) // 3 out of bounds, globex; 422s and the reader never reach the guardrails
	require.Equal(t, 4, seen["call.ok"], "%v", seen)         // 3 onboarding calls, 1 policy
	require.Equal(t, 1, seen["result.dry-run"], "%v", seen)
	require.Equal(t, 3, seen["result.ok"], "%v", seen)

	// 8. No Vault token or AppRole secret anywhere CISS writes.
	auditJSON, err := json.Marshal(recs)
	require.NoError(t, err)
	dryJSON, _ := json.Marshal(dry)
	realJSON, _ := json.Marshal(real)
	for _, where := range []struct{ name, text string }{
		{"component logs", e.logs.String()}, {"audit records", string(auditJSON)}, {"results", string(dryJSON) + string(realJSON)},
	} {
		for _, secret := range []string{"hvs.", roleID, secretID, root, teamSecret} {
			require.NotContains(t, where.text, secret, where.name)
		}
	}
}

// actionAudit reads every protected-action record from CISS_AUDIT.
func actionAudit(t *testing.T, e *env) []schemas.ActionAudit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.js.OrderedConsumer(ctx, schemas.StreamAudit, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schemas.SubjectAuditActionPrefix + ".>"}})
	require.NoError(t, err)
	info, err := c.Info(ctx)
	require.NoError(t, err)
	n := int(info.NumPending)
	var out []schemas.ActionAudit
	for len(out) < n {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err)
		var r schemas.ActionAudit
		require.NoError(t, json.Unmarshal(m.Data(), &r))
		out = append(out, r)
	}
	return out
}
