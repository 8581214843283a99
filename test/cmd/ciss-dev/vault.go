package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"ciss.dev/test/stack"
	"ciss.dev/test/vaultdev"
)

// devGuardrails lets the dev admin (tenant dev) try every protected action.
const devGuardrails = `version: 1
rules:
  - name: dev
    tenants: [dev]
    roles: [admin]
    actions: [vault-auth-onboard, vault-policy-apply, vault-namespace-create]
    names: ["*"]
    auth_types: [approle, jwt, oidc, kubernetes]
    capabilities: [read, list, create, update, delete]
    max_token_ttl: 1h
    max_token_max_ttl: 24h
    max_secret_id_ttl: 720h
    allowed_cidrs: ["127.0.0.0/8", "10.0.0.0/8"]
    bound_claims:
      project_path: ["{tenant}/*"]
`

// startVault starts a dev Vault, sets CISS's AppRole up with
// deploy/vault/ciss-policy.hcl, and configures the gateway (guardrails) and the
// worker (Vault address and AppRole files) for protected actions.
func startVault(ctx context.Context, cfg *stack.Config, bin, addr string) (*vaultdev.Server, error) {
	dir := filepath.Join(cfg.Dir, "vault")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	hcl, err := os.ReadFile(filepath.Join("deploy", "vault", "ciss-policy.hcl"))
	if err != nil {
		return nil, fmt.Errorf("run from the repository root: %w", err)
	}
	fmt.Fprintln(os.Stderr, "ciss-dev: starting a dev Vault…")
	v, err := vaultdev.Start(ctx, vaultdev.Config{Binary: bin, Addr: addr})
	if err != nil {
		return nil, err
	}
	roleID, secretID, err := v.SetupCISS(ctx, string(hcl))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "root-token"), []byte(v.RootToken+"\n"), 0o600)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "role-id"), []byte(roleID), 0o600)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "secret-id"), []byte(secretID), 0o600)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(cfg.Dir, "guardrails.yaml"), []byte(devGuardrails), 0o644)
	}
	if err != nil {
		_ = v.Stop(context.Background())
		return nil, err
	}
	if cfg.Args == nil {
		cfg.Args = map[string][]string{}
	}
	cfg.Args[stack.Gateway] = append(cfg.Args[stack.Gateway], "-guardrails", filepath.Join(cfg.Dir, "guardrails.yaml"))
	cfg.Args[stack.Worker] = append(cfg.Args[stack.Worker], "-vault-addr", v.Addr,
		"-vault-role-id-file", filepath.Join(dir, "role-id"), "-vault-secret-id-file", filepath.Join(dir, "secret-id"))
	return v, nil
}

func printVault(w *os.File, cfg stack.Config, s *stack.Stack, v *vaultdev.Server) {
	tls := fmt.Sprintf("--cacert %s --cert %s --key %s", s.PKI.CAFile, s.PKI.ClientCertFile, s.PKI.ClientKeyFile)
	body := `{"type":"vault-auth-onboard","params":{"name":"ci-deploy","auth_type":"approle","token_ttl":"15m","secret_id_ttl":"1h","paths":"app/*","dry_run":"true"}}`
	fmt.Fprintf(w, `Protected actions: a dev Vault at %s (root token in %s; guardrails %s).

  # 9. plan an AppRole onboarding for tenant dev (drop "dry_run" to apply it)
  ID=$(curl -sS -o /dev/null -D - %s -H 'Content-Type: application/json' -d '%s' \
    %s/v1/jobs | sed -n 's|^[Ll]ocation: /v1/jobs/\([^[:space:]]*\).*|\1|p'); echo "job $ID"
  curl -sS %s "%s/v1/jobs/$ID?wait=30s" >/dev/null
  curl -sS %s -H 'Accept: application/json' "%s/v1/jobs/$ID/result"

`, v.Addr, filepath.Join(cfg.Dir, "vault", "root-token"), filepath.Join(cfg.Dir, "guardrails.yaml"),
		tls, strings.ReplaceAll(body, "'", `'\''`), s.APIURL, tls, s.APIURL, tls, s.APIURL)
}
