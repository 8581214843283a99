package schemas

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseVaultActionHostile(t *testing.T) {
	base := func(kv ...string) map[string]string {
		m := map[string]string{"name": "ci-a", "auth_type": "approle"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		what, typ, tenant string
		params            map[string]string
		field             string
	}{
		{"traversal name", JobTypeVaultAuthOnboard, "acme", base("name", "../x"), "params.name"},
		{"slash name", JobTypeVaultAuthOnboard, "acme", base("name", "a/b"), "params.name"},
		{"sys name", JobTypeVaultAuthOnboard, "acme", base("name", "sys/auth"), "params.name"},
		{"dot name", JobTypeVaultAuthOnboard, "acme", base("name", "a.b"), "params.name"},
		{"upper name", JobTypeVaultAuthOnboard, "acme", base("name", "CI"), "params.name"},
		{"long name", JobTypeVaultAuthOnboard, "acme", base("name", strings.Repeat("a", 33)), "params.name"},
		{"traversal path", JobTypeVaultPolicyApply, "acme", map[string]string{"name": "p", "paths": "a/../../b"}, "params.paths"},
		{"sys path", JobTypeVaultPolicyApply, "acme", map[string]string{"name": "p", "paths": "/sys/*"}, "params.paths"},
		{"template path", JobTypeVaultPolicyApply, "acme", map[string]string{"name": "p", "paths": "{{identity.entity.name}}"}, "params.paths"},
		{"mid glob", JobTypeVaultPolicyApply, "acme", map[string]string{"name": "p", "paths": "a/*/b"}, "params.paths"},
		{"plus", JobTypeVaultPolicyApply, "acme", map[string]string{"name": "p", "paths": "+"}, "params.paths"},
		{"quote injection", JobTypeVaultPolicyApply, "acme", map[string]string{"name": "p", "paths": `a" { capabilities = ["sudo"] } path "x`}, "params.paths"},
		{"sudo", JobTypeVaultPolicyApply, "acme", map[string]string{"name": "p", "capabilities": "read,sudo"}, "params.capabilities"},
		{"deny", JobTypeVaultPolicyApply, "acme", map[string]string{"name": "p", "capabilities": "deny"}, "params.capabilities"},
		{"ttl ceiling", JobTypeVaultAuthOnboard, "acme", base("token_ttl", "721h"), "params.token_ttl"},
		{"ttl fraction", JobTypeVaultAuthOnboard, "acme", base("token_ttl", "1.5s"), "params.token_ttl"},
		{"negative ttl", JobTypeVaultAuthOnboard, "acme", base("token_ttl", "-1h"), "params.token_ttl"},
		{"ttl above max", JobTypeVaultAuthOnboard, "acme", base("token_ttl", "2h", "token_max_ttl", "1h"), "params.token_ttl"},
		{"cidr host bits", JobTypeVaultAuthOnboard, "acme", base("bound_cidrs", "10.0.0.1/8"), "params.bound_cidrs"},
		{"unknown param", JobTypeVaultAuthOnboard, "acme", base("token_policies", "root"), "params.token_policies"},
		{"unknown auth", JobTypeVaultAuthOnboard, "acme", base("auth_type", "userpass"), "params.auth_type"},
		{"k8s param on approle", JobTypeVaultAuthOnboard, "acme", base("kubernetes_host", "https://x"), "params.kubernetes_host"},
		{"jwt without claims", JobTypeVaultAuthOnboard, "acme", base("auth_type", "jwt", "oidc_discovery_url", "https://i", "bound_audiences", "v"), "params.bound_claims"},
		{"jwt glob claim", JobTypeVaultAuthOnboard, "acme", base("auth_type", "jwt", "oidc_discovery_url", "https://i", "bound_audiences", "v", "bound_claims", "sub=*"), "params.bound_claims"},
		{"jwt http issuer", JobTypeVaultAuthOnboard, "acme", base("auth_type", "jwt", "oidc_discovery_url", "http://i", "bound_audiences", "v", "bound_claims", "a=b"), "params.oidc_discovery_url"},
		{"k8s glob sa", JobTypeVaultAuthOnboard, "acme", base("auth_type", "kubernetes", "kubernetes_host", "https://k", "bound_service_account_names", "*", "bound_service_account_namespaces", "ns"), "params.bound_service_account_names"},
		{"bad tenant", JobTypeVaultPolicyApply, "../acme", map[string]string{"name": "p"}, "tenant"},
		{"not an action", JobTypeImageScan, "acme", map[string]string{}, "type"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			_, err := ParseVaultAction(tc.typ, tc.tenant, tc.params)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("want a field error on %s, got %v", tc.field, err)
			}
			if !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("want a field error on %s, got %v", tc.field, err)
			}
		})
	}
}

func TestParseVaultActionDerivedPaths(t *testing.T) {
	a, err := ParseVaultAction(JobTypeVaultAuthOnboard, "acme", map[string]string{"name": "ci-a", "auth_type": "approle",
		"paths": "app/*,db", "capabilities": "read,list,read", "token_ttl": "15m", "dry_run": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if a.AuthMount() != "ciss/acme/ci-a" || a.PolicyName() != "ciss.acme.ci-a" || a.TokenTTL != 15*time.Minute || !a.DryRun || a.Role != "default" {
		t.Fatalf("%+v", a)
	}
	want := `path "secret/data/acme/app/*" {
  capabilities = ["read"]
}
path "secret/metadata/acme/app/*" {
  capabilities = ["list", "read"]
}
path "secret/data/acme/db" {`
	if got := a.PolicyHCL("secret"); !strings.Contains(got, want) {
		t.Fatalf("policy:\n%s", got)
	}
}

// FuzzParseVaultAction: whatever parses derives paths that stay inside the
// tenant's prefixes.
func FuzzParseVaultAction(f *testing.F) {
	f.Add("ci-a", "app/*", "read,list", "1h")
	f.Add("../x", "../../sys/*", "sudo", "-1s")
	f.Add("a", "{{identity.entity.id}}/*", "create", "720h")
	f.Fuzz(func(t *testing.T, name, paths, caps, ttl string) {
		a, err := ParseVaultAction(JobTypeVaultPolicyApply, "acme", map[string]string{"name": name, "paths": paths, "capabilities": caps})
		if err != nil {
			return
		}
		if strings.ContainsAny(a.Name, "/.{}") || a.AuthMount() != "ciss/acme/"+a.Name {
			t.Fatalf("name %q escapes", a.Name)
		}
		for _, line := range strings.Split(a.PolicyHCL("secret"), "\n") {
			if !strings.HasPrefix(line, "path ") {
				continue
			}
			quoted, ok := strings.CutSuffix(strings.TrimPrefix(line, "path "), " {")
			p := strings.Trim(quoted, `"`)
			if !ok || !strings.HasPrefix(p, "secret/data/acme/") && !strings.HasPrefix(p, "secret/metadata/acme/") ||
				strings.Contains(p, "..") || strings.ContainsAny(p, "\"+{}\\ ") || len(p) != len(quoted)-2 {
				t.Fatalf("escaping policy line %q", line)
			}
		}
		_ = ttl
	})
}
