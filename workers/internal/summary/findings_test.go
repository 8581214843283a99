package summary

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

func TestFindingsSARIF(t *testing.T) {
	t.Parallel()
	log := `{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"x","rules":[
	  {"id":"CVE-1","properties":{"security-severity":"9.8"}},
	  {"id":"G101"}]}},
	 "results":[
	  {"ruleId":"G101","level":"error","locations":[{"physicalLocation":{"artifactLocation":{"uri":"b.go"},"region":{"startLine":7}}}]},
	  {"ruleId":"CVE-1","locations":[{"physicalLocation":{"artifactLocation":{"uri":"go.mod"},"region":{"startLine":-3}}}]},
	  {"ruleIndex":1,"level":"note"}]}]}`
	fs, err := Findings(SourceSARIF, []byte(log))
	require.NoError(t, err)
	require.Equal(t, []schemas.Finding{
		{ID: "CVE-1", File: "go.mod", Severity: schemas.SeverityCritical},
		{ID: "G101", Severity: schemas.SeverityLow},
		{ID: "G101", File: "b.go", Line: 7, Severity: schemas.SeverityHigh},
	}, fs)
}

func TestFindingsTrivyJSON(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "trivy", "testdata", "report.json"))
	require.NoError(t, err)
	fs, err := Findings(SourceTrivyJSON, b)
	require.NoError(t, err)
	require.Len(t, fs, 6)
	s, err := TrivyJSON(b)
	require.NoError(t, err)
	var got schemas.Summary
	for _, f := range fs {
		require.NotEmpty(t, f.ID)
		require.NotEmpty(t, f.Package)
		require.NotEmpty(t, f.Version)
		switch f.Severity {
		case schemas.SeverityCritical:
			got.Critical++
		case schemas.SeverityHigh:
			got.High++
		case schemas.SeverityMedium:
			got.Medium++
		case schemas.SeverityLow:
			got.Low++
		default:
			got.Unknown++
		}
	}
	require.Equal(t, s, got, "findings and summary read the same report alike")
}

func TestFindingsRejects(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct{ source, doc string }{
		"unknown source": {"csv", `{}`},
		"garbage trivy":  {SourceTrivyJSON, `not json`},
		"old trivy":      {SourceTrivyJSON, `{"SchemaVersion":1}`},
		"trivy no id":    {SourceTrivyJSON, `{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"PkgName":"x"}]}]}`},
		"garbage sarif":  {SourceSARIF, `[1,2]`},
		"sarif version":  {SourceSARIF, `{"version":"2.0.0"}`},
		"sarif no rule":  {SourceSARIF, `{"version":"2.1.0","runs":[{"results":[{"level":"error"}]}]}`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := Findings(c.source, []byte(c.doc))
			require.Error(t, err)
		})
	}
}

// FuzzFindings feeds untrusted report bytes (a candidate tool's output) to
// both parsers: they may refuse, never panic, and what they accept has ids.
func FuzzFindings(f *testing.F) {
	f.Add([]byte(`{"version":"2.1.0","runs":[{"results":[{"ruleId":"x","level":"error"}]}]}`))
	f.Add([]byte(`{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"VulnerabilityID":"CVE-1","Severity":"HIGH"}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, src := range []string{SourceTrivyJSON, SourceSARIF} {
			fs, err := Findings(src, b)
			if err != nil {
				continue
			}
			for _, x := range fs {
				if x.ID == "" || x.Line < 0 {
					t.Fatalf("%s accepted a finding without id or with a negative line: %+v", src, x)
				}
			}
		}
	})
}

func TestFindingsCycloneDX(t *testing.T) {
	t.Parallel()
	head := `{"bomFormat":"CycloneDX","specVersion":"1.6","metadata":{"component":{"name":"img"}},
	  "components":[{"bom-ref":"pkg:apk/busybox@1.36","type":"library","name":"busybox","version":"1.36"}]`
	fs, err := Findings(SourceCycloneDX, []byte(head+`}`))
	require.NoError(t, err)
	require.Empty(t, fs, "a plain SBOM has no findings")
	fs, err = Findings(SourceCycloneDX, []byte(head+`,"vulnerabilities":[
	  {"id":"CVE-2023-42363","ratings":[{"severity":"low"},{"severity":"medium"}],"affects":[{"ref":"pkg:apk/busybox@1.36"}]},
	  {"id":"CVE-9","affects":[{"ref":"elsewhere"}]}]}`))
	require.NoError(t, err)
	require.Equal(t, []schemas.Finding{
		{ID: "CVE-2023-42363", Package: "busybox", Version: "1.36", Severity: schemas.SeverityMedium},
		{ID: "CVE-9", Package: "elsewhere", Severity: schemas.SeverityUnknown},
	}, fs)
	_, err = Findings(SourceCycloneDX, []byte(`{"bomFormat":`))
	require.ErrorIs(t, err, ErrNotCycloneDX)
	_, err = Findings(SourceCycloneDX, []byte(head+`,"vulnerabilities":[{"affects":[]}]}`))
	require.Error(t, err, "a vulnerability without an id")
}
