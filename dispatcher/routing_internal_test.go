package dispatcher

import (
	"testing"

	"ciss.dev/dispatcher/internal/route"
)

// TestCatalogKnowsTheBuiltinVaultTool: the workers' protected-action tool needs
// no Tekton manifest, but serves only the vault-* job types.
func TestCatalogKnowsTheBuiltinVaultTool(t *testing.T) {
	ok, err := route.Parse([]byte(`version: 1
tools:
  - name: vault
    job_types: [vault-auth-onboard, vault-policy-apply]
routes:
  - job_type: vault-auth-onboard
    primary: vault
  - job_type: vault-policy-apply
    primary: vault
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkCatalog(ok, t.TempDir()); err != nil {
		t.Fatalf("built-in vault tool refused: %v", err)
	}
	bad, err := route.Parse([]byte(`version: 1
tools:
  - name: vault
    job_types: [image-scan]
routes:
  - job_type: image-scan
    primary: vault
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkCatalog(bad, t.TempDir()); err == nil {
		t.Fatal("the vault tool was accepted for image-scan")
	}
}
