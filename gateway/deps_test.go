package gateway_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyBoundary keeps scanners, signers, Tekton, Vault and the NATS
// server out of the gateway's (non-test) build: they belong to the workers
// and the e2e tests.
func TestDependencyBoundary(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/aquasecurity/", "github.com/sigstore/", "github.com/tektoncd/",
			"github.com/hashicorp/vault", "github.com/nats-io/nats-server",
		} {
			if strings.HasPrefix(pkg, banned) {
				t.Errorf("gateway depends on %s", pkg)
			}
		}
	}
}
