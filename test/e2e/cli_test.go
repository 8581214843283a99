package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/test/fixture"
)

// cissRun is one run of the ciss binary.
type cissRun struct {
	code           int
	stdout, stderr string
}

// ciss runs the client binary as a pipeline step would: settings from the
// environment, no terminal.
func (e *env) ciss(ctx context.Context, args ...string) cissRun {
	e.t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "ciss"), args...)
	cmd.Env = append(os.Environ(),
		"CISS_URL="+e.s.APIURL, "CISS_CERT="+e.s.PKI.ClientCertFile,
		"CISS_KEY="+e.s.PKI.ClientKeyFile, "CISS_CA="+e.s.PKI.CAFile)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := cissRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		e.t.Fatalf("run ciss: %v", err)
	}
	return r
}

// TestCLI runs the ciss client against the real stack: a pipeline step that
// fails on the demo image's HIGH and CRITICAL findings and writes SARIF, one
// that passes on the clean image, and a --wait that outlives a gateway crash.
func TestCLI(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sarif := filepath.Join(t.TempDir(), "ciss.sarif")

	r := e.ciss(ctx, "submit", "image-scan", "--image", e.s.Images.Vulnerable, "--no-cache",
		"--wait", "--fail-on", "high", "--output", "sarif", "--out", sarif)
	require.Equal(t, 1, r.code, "HIGH and CRITICAL findings fail the step: %s", r.stderr)
	require.Contains(t, r.stderr, "ciss: policy failure: 2 finding(s) at or above HIGH")
	require.Contains(t, r.stdout, "CRITICAL  1")
	doc, err := os.ReadFile(sarif)
	require.NoError(t, err)
	for _, f := range fixture.VulnerableFindings() {
		require.Contains(t, string(doc), f.ID)
	}

	r = e.ciss(ctx, "submit", "image-scan", "--image", e.s.Images.Vulnerable, "--wait")
	require.Equal(t, 0, r.code, "no --fail-on: %s", r.stderr)
	for _, f := range fixture.VulnerableFindings() {
		require.Regexp(t, f.Severity+` +`+f.ID+` +`+f.Package+` +`+f.InstalledVersion+` +`+f.FixedVersion, r.stdout)
	}
	require.Contains(t, r.stdout, "(cached result)", "same digest, tool and DB: answered from the cache")

	r = e.ciss(ctx, "submit", "image-scan", "--image", e.s.Images.Clean, "--wait", "--fail-on", "low", "--output", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"SchemaVersion": 2`)
	require.Empty(t, r.stderr, "off a terminal the client is quiet")

	r = e.ciss(ctx, "jobs", "--status", "succeeded")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, 3, strings.Count(r.stdout, "succeeded"), r.stdout)

	t.Run("wait survives a gateway crash", func(t *testing.T) {
		release := e.s.Registry.Hold("demo/vulnerable")
		defer release()
		r := e.ciss(ctx, "submit", "image-scan", "--image", e.s.Images.VulnerableTag, "--no-cache")
		require.Equal(t, 0, r.code, r.stderr)
		id := strings.TrimSpace(r.stdout)
		done := make(chan cissRun, 1)
		go func() { done <- e.ciss(ctx, "status", id, "--wait", "--output", "json", "--timeout", "3m") }()
		e.admin.waitFor(id, time.Minute, func(j schemas.Job) bool { return j.Status == schemas.StatusRunning })
		require.NoError(t, e.s.StopComponent("gateway", syscall.SIGKILL))
		release()
		require.NoError(t, e.s.StartComponent(ctx, "gateway"))
		r = <-done
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, `"status": "succeeded"`)
	})

	t.Run("mistakes are one line and exit 2", func(t *testing.T) {
		r := e.ciss(ctx, "submit", "sast", "--repo", "https://git.example.com/app.git", "--commit", "0123abcd")
		require.Equal(t, 2, r.code)
		require.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
		require.True(t, strings.HasPrefix(r.stderr, "ciss: the gateway refused the request: "), r.stderr)
		other, err := fixture.NewCA("other CA", "")
		require.NoError(t, err)
		otherCA := writeFile(t, t.TempDir(), "other-ca.pem", other.CertPEM())
		r = e.ciss(ctx, "submit", "image-scan", "--image", e.s.Images.Clean, "--ca", otherCA)
		require.Equal(t, 2, r.code)
		require.Equal(t, "ciss: server certificate not trusted by CA "+otherCA+"\n", r.stderr)
	})
}
