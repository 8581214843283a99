package trivy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

func TestParseReport(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("testdata", "report.json"))
	require.NoError(t, err)
	fs, err := ParseReport(b)
	require.NoError(t, err)
	require.Equal(t, []Finding{
		{ID: "CVE-2024-5535", Package: "libcrypto3", InstalledVersion: "3.1.4-r5", Severity: "CRITICAL"},
		{ID: "CVE-2024-4741", Package: "libcrypto3", InstalledVersion: "3.1.4-r5", Severity: "HIGH"},
		{ID: "CVE-2024-2511", Package: "libssl3", InstalledVersion: "3.1.4-r5", Severity: "MEDIUM"},
		{ID: "CVE-2024-9143", Package: "libssl3", InstalledVersion: "3.1.4-r5", Severity: "LOW"},
		{ID: "CVE-2024-45337", Package: "golang.org/x/crypto", InstalledVersion: "v0.21.0", Severity: "HIGH"},
		{ID: "GHSA-xxxx-yyyy-zzzz", Package: "example.com/lib", InstalledVersion: "v1.0.0", Severity: "UNKNOWN"},
	}, fs)
	require.Equal(t, schemas.Summary{Critical: 1, High: 2, Medium: 1, Low: 1, Unknown: 1}, Summarize(fs))
}

func TestParseReportClean(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`{"SchemaVersion":2}`,
		`{"SchemaVersion":2,"Results":[]}`,
		`{"SchemaVersion":2,"Results":[{"Target":"alpine","Class":"os-pkgs","Type":"alpine"}]}`,
		`{"SchemaVersion":2,"Results":[{"Target":"x","Vulnerabilities":null}]}`,
	} {
		fs, err := ParseReport([]byte(in))
		require.NoError(t, err, in)
		require.Empty(t, fs, in)
		require.Zero(t, Summarize(fs).Total(), in)
	}
}

func TestParseReportRejects(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"schema version 1":        `{"SchemaVersion":1,"Results":[]}`,
		"schema version 3":        `{"SchemaVersion":3,"Results":[]}`,
		"schema version missing":  `{"Results":[]}`,
		"schema version a string": `{"SchemaVersion":"2"}`,
		"not json":                `FATAL error`,
		"empty":                   ``,
		"array":                   `[]`,
		"truncated":               `{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"VulnerabilityID":"CVE-1"`,
		"results not a list":      `{"SchemaVersion":2,"Results":{}}`,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fs, err := ParseReport([]byte(in))
			require.Error(t, err)
			require.ErrorContains(t, err, "trivy: ")
			require.Nil(t, fs)
		})
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	f := func(sev ...string) []Finding {
		var fs []Finding
		for i, s := range sev {
			fs = append(fs, Finding{ID: "CVE-" + string(rune('a'+i)), Severity: s})
		}
		return fs
	}
	tests := []struct {
		name string
		in   []Finding
		want schemas.Summary
	}{
		{"none", nil, schemas.Summary{}},
		{"each once", f("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"), schemas.Summary{Critical: 1, High: 1, Medium: 1, Low: 1, Unknown: 1}},
		{"many critical", f("CRITICAL", "CRITICAL", "CRITICAL", "LOW"), schemas.Summary{Critical: 3, Low: 1}},
		{"unrecognised is unknown", f("", "NEGLIGIBLE", "high"), schemas.Summary{Unknown: 3}},
	}
	for _, tt := range tests {
		got := Summarize(tt.in)
		require.Equal(t, tt.want, got, tt.name)
		require.Equal(t, len(tt.in), got.Total(), tt.name)
	}
}
