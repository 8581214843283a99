package report_test

import (
	"os"
	"path/filepath"
	"testing"

	"ciss.dev/gateway/internal/report"
	"github.com/stretchr/testify/require"
)

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

// TestSARIFAndTrivyAgree: Trivy's JSON and the SARIF Trivy converts it to
// (trivy convert --format sarif) give the same findings.
func TestSARIFAndTrivyAgree(t *testing.T) {
	t.Parallel()
	native, err := report.ParseTrivy(read(t, "trivy.json"))
	require.NoError(t, err)
	sarif, err := report.ParseSARIF(read(t, "trivy.sarif.json"))
	require.NoError(t, err)
	report.Sort(native)
	report.Sort(sarif)
	require.Len(t, native, 6)
	require.Len(t, sarif, len(native))
	for i := range native {
		n, s := native[i], sarif[i]
		require.Equal(t, n.ID, s.ID)
		require.Equal(t, n.Severity, s.Severity, n.ID)
		require.Equal(t, n.Package, s.Package, n.ID)
		require.Equal(t, n.InstalledVersion, s.InstalledVersion, n.ID)
		require.Equal(t, n.FixedVersion, s.FixedVersion, n.ID)
	}
	first := native[0]
	require.Equal(t, "CVE-2024-5535", first.ID)
	require.Equal(t, report.SeverityCritical, first.Severity)
	require.Equal(t, "9.1", first.CVSS3Score)
	require.Equal(t, "https://avd.aquasec.com/nvd/cve-2024-5535", first.Links[0])
	require.Equal(t, "openssl: SSL_select_next_proto buffer overread", sarif[0].Title)
}

func TestSeverity(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]report.Severity{
		"critical": report.SeverityCritical, "HIGH": report.SeverityHigh, "Medium": report.SeverityMedium,
		"low": report.SeverityLow, "UNKNOWN": report.SeverityUnknown,
	} {
		got, ok := report.ParseSeverity(in)
		require.True(t, ok, in)
		require.Equal(t, want, got, in)
	}
	_, ok := report.ParseSeverity("severe")
	require.False(t, ok)
	require.Greater(t, report.SeverityHigh, report.SeverityMedium)
}

// TestGenericSARIF: a tool without severity tags is ranked by
// security-severity, then by level; its message is the title.
func TestGenericSARIF(t *testing.T) {
	t.Parallel()
	doc := `{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"gosec","rules":[
	  {"id":"G101","properties":{"security-severity":"7.5"}},
	  {"id":"G104"}]}},
	  "results":[
	    {"ruleId":"G101","message":{"text":"Potential hardcoded credentials"},"locations":[{"physicalLocation":{"artifactLocation":{"uri":"main.go"}}}]},
	    {"ruleId":"G104","level":"note","message":{"text":"Errors unhandled."}}]}]}`
	fs, err := report.ParseSARIF([]byte(doc))
	require.NoError(t, err)
	require.Len(t, fs, 2)
	require.Equal(t, report.SeverityHigh, fs[0].Severity)
	require.Equal(t, "Potential hardcoded credentials", fs[0].Title)
	require.Equal(t, "main.go", fs[0].Location)
	require.Equal(t, report.SeverityLow, fs[1].Severity)

	_, err = report.ParseSARIF([]byte(`{"SchemaVersion":2}`))
	require.ErrorIs(t, err, report.ErrNotSARIF)
	_, err = report.ParseTrivy([]byte(`{"version":"2.1.0"}`))
	require.ErrorIs(t, err, report.ErrNotTrivy)
}
