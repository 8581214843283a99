package workers

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/workers/internal/runner"
	"ciss.dev/workers/internal/tekton"
)

// TestClassifyRun: registry verdicts blame the image (permanent), local
// faults stay retryable even when they say "denied" or "not found".
func TestClassifyRun(t *testing.T) {
	t.Parallel()
	step := func(stderr string) error { return &runner.StepError{Step: "scan", ExitCode: 1, Stderr: stderr} }
	for _, c := range []struct {
		name      string
		err       error
		notFound  bool
		permanent bool
		timeout   bool
	}{
		{"manifest unknown", step("GET https://r.example/v2/a/manifests/sha256:9a: MANIFEST_UNKNOWN: manifest unknown"), true, true, false},
		{"name unknown", step("NAME_UNKNOWN: repository name not known to registry"), true, true, false},
		{"unauthorized", step("UNAUTHORIZED: authentication required"), true, true, false},
		{"denied", step("DENIED: requested access to the resource is denied"), true, true, false},
		{"http 404", step("unexpected status code 404 Not Found"), true, true, false},
		{"local permission denied", step("open /var/cache/trivy/db/trivy.db: permission denied"), false, false, false},
		{"local file not found", step("stat /x: no such file or directory, not found"), false, false, false},
		{"connection refused", step("dial tcp 127.0.0.1:5000: connect: connection refused"), false, false, false},
		{"timeout", runner.ErrTimeout, false, false, true},
		{"unmapped image", runner.ErrUnmappedImage, false, true, false},
		{"unresolved variable", tekton.ErrUnresolved, false, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := classifyRun(c.err)
			require.ErrorIs(t, got, c.err, "the original error stays in the chain")
			require.Equal(t, c.notFound, errors.Is(got, ErrTargetNotFound))
			require.Equal(t, c.permanent, errors.Is(got, ErrPermanent))
			require.Equal(t, c.timeout, errors.Is(got, ErrTimeout))
		})
	}
}

// TestLoadToolsOnly: -tools limits what a worker serves, so a tool whose
// workspaces this worker cannot provide is left to others; a name outside the
// catalog is refused, and an unconfigured workspace of a served tool stays an
// error.
func TestLoadToolsOnly(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "deploy", "tekton")
	tools, err := LoadTools(t.Context(), CatalogConfig{Dir: dir, Only: []string{"trivy"},
		Workspaces: map[string]string{"trivy-db": t.TempDir()}})
	require.NoError(t, err)
	require.Len(t, tools, 1)
	require.Equal(t, "trivy", tools[0].Name())

	_, err = LoadTools(t.Context(), CatalogConfig{Dir: dir, Only: []string{"trivy", "grype"},
		Workspaces: map[string]string{"trivy-db": t.TempDir()}})
	require.ErrorContains(t, err, `tool "grype" is not in the catalog`)

	_, err = LoadTools(t.Context(), CatalogConfig{Dir: dir, Workspaces: map[string]string{"trivy-db": t.TempDir()}})
	require.ErrorContains(t, err, "go-cache", "serving every tool needs every workspace")
}
