package workers

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"ciss.dev/schemas"
)

// TestVaultToolWaitsForVault: an unreachable Vault does not fail the worker's
// start; protected actions are retried (not failed for good) until the login
// succeeds.
func TestVaultToolWaitsForVault(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	dir := t.TempDir()
	roleID, secretID := filepath.Join(dir, "role-id"), filepath.Join(dir, "secret-id")
	for _, f := range []string{roleID, secretID} {
		if err := os.WriteFile(f, []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	noAudit := func(context.Context, string, []byte) error { return nil }
	if _, err := NewVaultTool(ctx, VaultConfig{Addr: addr, RoleIDFile: roleID, SecretIDFile: filepath.Join(dir, "missing"), Audit: noAudit}); err == nil {
		t.Fatal("a missing secret-id file must be a configuration error")
	}
	vt, err := NewVaultTool(ctx, VaultConfig{Addr: addr, RoleIDFile: roleID, SecretIDFile: secretID, Audit: noAudit})
	if err != nil {
		t.Fatal(err)
	}
	_, err = vt.Run(ctx, Input{Task: schemas.Task{Type: schemas.JobTypeVaultPolicyApply, Tenant: "acme",
		Params: map[string]string{"name": "x"}}}, t.TempDir())
	if !errors.Is(err, errNotLoggedIn) || errors.Is(err, ErrPermanent) {
		t.Fatalf("Run before login: %v, want a retryable errNotLoggedIn", err)
	}
}
