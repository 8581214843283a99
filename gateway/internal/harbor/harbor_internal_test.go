package harbor

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The adapter is tested end to end against the real gateway in
// ciss.dev/gateway (harbor_test.go) and test/e2e; these are its parsers.

func TestAcceptedReport(t *testing.T) {
	t.Parallel()
	for accept, want := range map[string]string{
		"":    MediaTypeVulnReport,
		"*/*": MediaTypeVulnReport,
		"application/vnd.security.vulnerability.report; version=1.1":            MediaTypeVulnReport,
		"application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0":  MediaTypeHarborReport,
		"application/vnd.scanner.adapter.vuln.report.raw":                       MediaTypeRawReport,
		"text/html, application/vnd.scanner.adapter.vuln.report.raw":            MediaTypeRawReport,
		"application/vnd.security.vulnerability.report; version=2.0, */*;q=0.1": MediaTypeVulnReport,
	} {
		got, err := acceptedReport(accept)
		require.NoError(t, err, accept)
		require.Equal(t, want, got, accept)
	}
	for _, accept := range []string{"text/html", "application/vnd.security.vulnerability.report; version=2.0"} {
		_, err := acceptedReport(accept)
		require.Error(t, err, accept)
	}
}

func TestImageRef(t *testing.T) {
	t.Parallel()
	req := &ScanRequest{Artifact: Artifact{Repository: "/library/app/", Digest: "sha256:abc"}}
	req.Registry.URL = "https://core.harbor.example:8443/"
	got, err := imageRef(req)
	require.NoError(t, err)
	require.Equal(t, "core.harbor.example:8443/library/app@sha256:abc", got)
}
