package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/test/fixture"
)

// TestHarborAdapter drives the Harbor Pluggable Scanner API as Harbor does:
// metadata, a scan request for the demo image, polling the report through
// 302 + Refresh-After, then the vulnerability report from a real Trivy scan.
func TestHarborAdapter(t *testing.T) {
	e := newEnv(t, nil)
	resp, b := e.admin.do(http.MethodGet, "/api/v1/metadata", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)

	repoTag, digest, ok := strings.Cut(e.s.Images.Vulnerable, "@")
	require.True(t, ok)
	_, repo, _ := strings.Cut(repoTag, "/")
	scan := map[string]any{
		"registry": map[string]string{"url": "http://" + e.s.Registry.Addr(), "authorization": "Basic cm9ib3Q6c2VjcmV0"},
		"artifact": map[string]string{"repository": repo, "digest": digest, "tag": "1.0",
			"mime_type": "application/vnd.oci.image.manifest.v1+json"},
	}
	resp, b = e.admin.do(http.MethodPost, "/api/v1/scan", scan,
		map[string]string{"Content-Type": "application/vnd.scanner.adapter.scan.request+json; version=1.0"})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", b)
	var sr struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal(b, &sr))

	accept := map[string]string{"Accept": "application/vnd.security.vulnerability.report; version=1.1"}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, b = e.admin.do(http.MethodGet, "/api/v1/scan/"+sr.ID+"/report", nil, accept)
		if resp.StatusCode != http.StatusFound {
			break
		}
		require.NotEmpty(t, resp.Header.Get("Refresh-After"))
		require.True(t, time.Now().Before(deadline), "report still pending")
		// The job state changes at most a few times; long-poll it instead of
		// sleeping for Refresh-After.
		e.admin.get(sr.ID, 5*time.Second)
	}
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	require.Equal(t, "application/vnd.security.vulnerability.report; version=1.1", resp.Header.Get("Content-Type"))
	var rep struct {
		Artifact struct {
			Repository string `json:"repository"`
			Digest     string `json:"digest"`
		} `json:"artifact"`
		Severity        string `json:"severity"`
		Vulnerabilities []struct {
			ID         string `json:"id"`
			Package    string `json:"package"`
			Version    string `json:"version"`
			FixVersion string `json:"fix_version"`
			Severity   string `json:"severity"`
		} `json:"vulnerabilities"`
	}
	require.NoError(t, json.Unmarshal(b, &rep))
	require.Equal(t, repo, rep.Artifact.Repository)
	require.Equal(t, digest, rep.Artifact.Digest)
	require.Equal(t, "Critical", rep.Severity)
	want := fixture.VulnerableFindings()
	require.Len(t, rep.Vulnerabilities, len(want))
	for _, f := range want {
		found := false
		for _, v := range rep.Vulnerabilities {
			if v.ID == f.ID && v.Package == f.Package {
				found = true
				require.Equal(t, f.InstalledVersion, v.Version)
				require.Equal(t, f.FixedVersion, v.FixVersion)
				require.Equal(t, strings.ToUpper(v.Severity), f.Severity)
			}
		}
		require.True(t, found, "%s in %s missing from the Harbor report", f.ID, f.Package)
	}
	require.NotContains(t, string(b), "cm9ib3Q6c2VjcmV0")
}
