package summary

import (
	"encoding/json"
	"testing"
)

// FuzzSARIF: SARIF logs come from tools run on untrusted source trees.
// Parsing, counting and merging never panic, agree on the number of
// results, and a merge of a valid log is a valid log with the same findings.
func FuzzSARIF(f *testing.F) {
	f.Add([]byte(`{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"gosec","rules":[{"id":"G101","defaultConfiguration":{"level":"error"}}]}},"results":[{"ruleId":"G101","locations":[{"physicalLocation":{"artifactLocation":{"uri":"main.go"},"region":{"startLine":6}}}]}]}]}`))
	f.Add([]byte(`{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"Trivy","rules":[{"id":"x","properties":{"security-severity":"9.5"}}]}},"results":[{"ruleId":"x","ruleIndex":0,"level":"note"}]}]}`))
	f.Add([]byte(`{"version":"2.1.0","runs":[{"tool":{"driver":{"rules":[{"id":"y","properties":{"security-severity":7}}]}},"results":[{"ruleIndex":-1},{"ruleIndex":99}]}]}`))
	f.Add([]byte(`{"version":"2.0.0","runs":[]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, err := SARIFFindings(b)
		s, serr := SARIF(b)
		if (err == nil) != (serr == nil) {
			t.Fatalf("SARIFFindings err %v, SARIF err %v", err, serr)
		}
		if err != nil {
			return
		}
		if s.Total() != len(fs) {
			t.Fatalf("summary counts %d, findings %d", s.Total(), len(fs))
		}
		for _, f := range fs {
			switch f.Severity {
			case "CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN":
			default:
				t.Fatalf("severity %q", f.Severity)
			}
		}
		m, err := MergeSARIF(b, b)
		if err != nil {
			t.Fatalf("merge of a valid log: %v", err)
		}
		if !json.Valid(m) {
			t.Fatal("merged log is not JSON")
		}
		mf, err := SARIFFindings(m)
		if err != nil {
			t.Fatalf("merged log: %v", err)
		}
		if len(mf) != 2*len(fs) {
			t.Fatalf("merged %d findings, want %d", len(mf), 2*len(fs))
		}
	})
}
