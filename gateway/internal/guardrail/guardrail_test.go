package guardrail_test

import (
	"errors"
	"strings"
	"testing"

	"ciss.dev/gateway/internal/guardrail"
	"ciss.dev/schemas"
	"github.com/stretchr/testify/require"
)

const doc = `
version: 1
rules:
  - name: onboard-ci
    tenants: ["acme", "team-*"]
    roles: [submitter]
    actions: [vault-auth-onboard, vault-policy-apply]
    names: ["ci-*", "app"]
    auth_types: [approle, jwt]
    capabilities: [read, list]
    max_token_ttl: 1h
    max_token_max_ttl: 24h
    max_secret_id_ttl: 24h
    allowed_cidrs: ["10.0.0.0/8", "127.0.0.0/8"]
    bound_claims:
      project_path: ["{tenant}/*"]
      ref: ["main"]
  - name: namespaces-with-approval
    tenants: ["acme"]
    roles: [admin]
    actions: [vault-namespace-create]
    names: ["*"]
    capabilities: [read, list, create, update]
    require_approval: true
`

func TestEvaluate(t *testing.T) {
	rules, err := guardrail.Parse([]byte(doc))
	require.NoError(t, err)
	jwtOK := map[string]string{"name": "ci-gitlab", "auth_type": "jwt", "jwt_validation_pubkeys": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----",
		"bound_audiences": "vault", "bound_claims": "project_path=acme/payments,ref=main", "token_ttl": "10m"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	approle := map[string]string{"name": "ci-deploy", "auth_type": "approle", "token_ttl": "30m", "token_max_ttl": "2h",
		"secret_id_ttl": "1h", "bound_cidrs": "10.1.0.0/16"}
	for _, tc := range []struct {
		name      string
		typ       string
		tenant    string
		roles     []string
		params    map[string]string
		rule      string // allowing rule, or refusing rule when field != ""
		field     string
		approval  bool
		parseFail bool
	}{
		{name: "approle within bounds", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", roles: []string{"submitter"}, params: approle, rule: "onboard-ci"},
		{name: "jwt within bounds", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", roles: []string{"submitter"}, params: jwtOK, rule: "onboard-ci"},
		{name: "glob tenant", typ: schemas.JobTypeVaultAuthOnboard, tenant: "team-x", roles: []string{"submitter"}, params: approle, rule: "onboard-ci"},
		{name: "no role", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", roles: []string{"reader"}, params: approle, rule: guardrail.DefaultDeny, field: "-"},
		{name: "other tenant", typ: schemas.JobTypeVaultAuthOnboard, tenant: "evil", roles: []string{"submitter"}, params: approle, rule: guardrail.DefaultDeny, field: "-"},
		{name: "oversized token ttl", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", roles: []string{"submitter"},
			params: with(approle, "token_ttl", "2h", "token_max_ttl", "3h"), rule: "onboard-ci", field: "max_token_ttl"},
		{name: "unlimited secret id", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", roles: []string{"submitter"},
			params: with(approle, "secret_id_ttl", ""), rule: "onboard-ci", field: "max_secret_id_ttl"},
		{name: "cidr outside", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", roles: []string{"submitter"},
			params: with(approle, "bound_cidrs", "0.0.0.0/0"), rule: "onboard-ci", field: "allowed_cidrs"},
		{name: "cidr wider than allowed", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", roles: []string{"submitter"},
			params: with(approle, "bound_cidrs", "10.0.0.0/7"), rule: "onboard-ci", field: "allowed_cidrs"},
		{name: "name pattern", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", roles: []string{"submitter"},
			params: with(approle, "name", "prod"), rule: "onboard-ci", field: "names"},
		{name: "auth type not allowed", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", roles: []string{"submitter"},
			params: map[string]string{"name": "ci-k", "auth_type": "kubernetes", "kubernetes_host": "https://k8s", "bound_service_account_names": "a", "bound_service_account_namespaces": "b"},
			rule:   "onboard-ci", field: "auth_types"},
		{name: "capability not allowed", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", roles: []string{"submitter"},
			params: with(approle, "capabilities", "read,delete"), rule: "onboard-ci", field: "capabilities"},
		{name: "claim of other tenant", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", roles: []string{"submitter"},
			params: with(jwtOK, "bound_claims", "project_path=evil/app,ref=main"), rule: "onboard-ci", field: "bound_claims"},
		{name: "claim not bindable", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", roles: []string{"submitter"},
			params: with(jwtOK, "bound_claims", "sub=anything"), rule: "onboard-ci", field: "bound_claims"},
		{name: "namespace needs approval", typ: schemas.JobTypeVaultNamespaceCreate, tenant: "acme", roles: []string{"admin"},
			params: map[string]string{"name": "payments"}, rule: "namespaces-with-approval", approval: true},
		{name: "namespace by submitter", typ: schemas.JobTypeVaultNamespaceCreate, tenant: "acme", roles: []string{"submitter"},
			params: map[string]string{"name": "payments"}, rule: guardrail.DefaultDeny, field: "-"},
		// Hostile input never gets as far as the guardrails: the parser refuses it.
		{name: "traversal name", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", params: with(approle, "name", "../sys"), parseFail: true},
		{name: "sys path", typ: schemas.JobTypeVaultPolicyApply, tenant: "acme", params: map[string]string{"name": "ci-a", "paths": "../../sys/*"}, parseFail: true},
		{name: "template escape", typ: schemas.JobTypeVaultPolicyApply, tenant: "acme", params: map[string]string{"name": "ci-a", "paths": "{{identity.entity.name}}/*"}, parseFail: true},
		{name: "absolute path", typ: schemas.JobTypeVaultPolicyApply, tenant: "acme", params: map[string]string{"name": "ci-a", "paths": "/secret/data/other"}, parseFail: true},
		{name: "plus glob", typ: schemas.JobTypeVaultPolicyApply, tenant: "acme", params: map[string]string{"name": "ci-a", "paths": "+/x"}, parseFail: true},
		{name: "sudo capability", typ: schemas.JobTypeVaultPolicyApply, tenant: "acme", params: map[string]string{"name": "ci-a", "capabilities": "sudo"}, parseFail: true},
		{name: "ttl above ceiling", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", params: with(approle, "token_ttl", "100000h"), parseFail: true},
		{name: "unknown param", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", params: with(approle, "policies", "root"), parseFail: true},
		{name: "dotted name", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", params: with(approle, "name", "ci.x"), parseFail: true},
		{name: "glob claim", typ: schemas.JobTypeVaultAuthOnboard, tenant: "acme", params: with(jwtOK, "bound_claims", "project_path=acme/*"), parseFail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := schemas.ParseVaultAction(tc.typ, tc.tenant, tc.params)
			if tc.parseFail {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			d, err := rules.Evaluate(a, tc.roles)
			if tc.field == "" {
				require.NoError(t, err)
				require.Equal(t, tc.rule, d.Rule)
				require.Equal(t, tc.approval, d.RequireApproval)
				return
			}
			var den *guardrail.Denied
			require.True(t, errors.As(err, &den), "want a refusal, got %v", err)
			require.Equal(t, tc.rule, den.Rule)
			if tc.field != "-" {
				require.Equal(t, tc.field, den.Field, den.Error())
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for name, d := range map[string]string{
		"version":        "version: 2\nrules: []",
		"unknown field":  "version: 1\nrules:\n- {name: a, tenants: [x], roles: [r], actions: [vault-policy-apply], names: ['*'], nope: 1}",
		"empty match":    "version: 1\nrules:\n- {name: a, tenants: [], roles: [r], actions: [vault-policy-apply], names: ['*']}",
		"unknown action": "version: 1\nrules:\n- {name: a, tenants: [x], roles: [r], actions: [image-scan], names: ['*']}",
		"bad cidr":       "version: 1\nrules:\n- {name: a, tenants: [x], roles: [r], actions: [vault-policy-apply], names: ['*'], allowed_cidrs: [10.0.0.1/8]}",
		"dup name":       "version: 1\nrules:\n- {name: a, tenants: [x], roles: [r], actions: [vault-policy-apply], names: ['*']}\n- {name: a, tenants: [x], roles: [r], actions: [vault-policy-apply], names: ['*']}",
		"bad duration":   "version: 1\nrules:\n- {name: a, tenants: [x], roles: [r], actions: [vault-policy-apply], names: ['*'], max_token_ttl: forever}",
		"reserved name":  "version: 1\nrules:\n- {name: default-deny, tenants: [x], roles: [r], actions: [vault-policy-apply], names: ['*']}",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := guardrail.Parse([]byte(d))
			require.ErrorIs(t, err, guardrail.ErrInvalid)
		})
	}
}

func TestEmptyDeniesEverything(t *testing.T) {
	rules, err := guardrail.Parse([]byte("version: 1\nrules: []\n"))
	require.NoError(t, err)
	a, err := schemas.ParseVaultAction(schemas.JobTypeVaultPolicyApply, "acme", map[string]string{"name": "x"})
	require.NoError(t, err)
	_, err = rules.Evaluate(a, []string{"admin"})
	require.ErrorContains(t, err, guardrail.DefaultDeny)
}

// FuzzEvaluate feeds arbitrary parameters through the parser and the guardrails:
// whatever is admitted must render a policy that stays under the tenant prefix.
func FuzzEvaluate(f *testing.F) {
	rules, err := guardrail.Parse([]byte(doc))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("ci-a", "approle", "*", "read", "1h", "10.0.0.0/8")
	f.Add("../x", "approle", "../../sys/*", "sudo", "9999h", "0.0.0.0/0")
	f.Add("app", "jwt", "a/{{x}}/*", "list", "5m", "127.0.0.1/32")
	f.Fuzz(func(t *testing.T, name, authType, paths, caps, ttl, cidrs string) {
		a, err := schemas.ParseVaultAction(schemas.JobTypeVaultAuthOnboard, "acme", map[string]string{
			"name": name, "auth_type": authType, "paths": paths, "capabilities": caps, "token_ttl": ttl, "bound_cidrs": cidrs,
			"secret_id_ttl": "1h",
		})
		if err != nil {
			return
		}
		if _, err := rules.Evaluate(a, []string{"submitter"}); err != nil {
			return
		}
		hcl := a.PolicyHCL("secret")
		for _, line := range strings.Split(hcl, "\n") {
			if strings.HasPrefix(line, "path ") && !strings.HasPrefix(line, `path "secret/data/acme/`) && !strings.HasPrefix(line, `path "secret/metadata/acme/`) {
				t.Fatalf("admitted policy escapes the tenant prefix: %s", line)
			}
			if strings.Contains(line, "..") || strings.Contains(line, "{{") {
				t.Fatalf("admitted policy contains %q", line)
			}
		}
	})
}
