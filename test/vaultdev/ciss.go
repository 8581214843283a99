package vaultdev

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// Call makes one Vault API call with the root token and decodes the answer; a
// status of 300 or more is an error naming the call.
func (s *Server) Call(ctx context.Context, method, path string, body any) (map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.Addr+"/v1/"+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Vault-Token", s.RootToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("vaultdev: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("vaultdev: %s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	var out map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			return nil, fmt.Errorf("vaultdev: %s %s: %w", method, path, err)
		}
	}
	return out, nil
}

// SetupCISS prepares the server as an operator would for CISS (deploy/vault/README.md):
// the given policy (deploy/vault/ciss-policy.hcl) as "ciss", an AppRole mount at
// approle/ with a role "ciss" bound to it, and returns that role's role_id and a
// new secret_id.
func (s *Server) SetupCISS(ctx context.Context, policyHCL string) (roleID, secretID string, err error) {
	steps := []struct {
		method, path string
		body         any
	}{
		{"PUT", "sys/policies/acl/ciss", map[string]any{"policy": policyHCL}},
		{"POST", "sys/auth/approle", map[string]any{"type": "approle"}},
		{"POST", "auth/approle/role/ciss", map[string]any{"token_policies": []string{"ciss"}, "token_ttl": "20m", "token_max_ttl": "24h"}},
	}
	for _, st := range steps {
		if _, err := s.Call(ctx, st.method, st.path, st.body); err != nil {
			return "", "", err
		}
	}
	r, err := s.Call(ctx, "GET", "auth/approle/role/ciss/role-id", nil)
	if err != nil {
		return "", "", err
	}
	sec, err := s.Call(ctx, "POST", "auth/approle/role/ciss/secret-id", nil)
	if err != nil {
		return "", "", err
	}
	rd, _ := r["data"].(map[string]any)
	sd, _ := sec["data"].(map[string]any)
	roleID, _ = rd["role_id"].(string)
	secretID, _ = sd["secret_id"].(string)
	if roleID == "" || secretID == "" {
		return "", "", fmt.Errorf("vaultdev: no role_id or secret_id in Vault's answer")
	}
	return roleID, secretID, nil
}
