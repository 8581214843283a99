package cli_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientLinksNoServerCode keeps the ciss binary a thin client: the
// standard library, the wire types and its own packages, no NATS client, no
// scanner, no server code.
func TestClientLinksNoServerCode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}",
		"ciss.dev/gateway/cmd/ciss").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := map[string]bool{
		"ciss.dev/schemas": true, "ciss.dev/gateway/client": true, "ciss.dev/gateway/cmd/ciss": true,
		"ciss.dev/gateway/internal/cli": true, "ciss.dev/gateway/internal/report": true,
	}
	for _, pkg := range strings.Fields(string(out)) {
		if !allowed[pkg] {
			t.Errorf("the ciss client links %s", pkg)
		}
	}
}
