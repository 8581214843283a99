// Package summary reads severity counts from report documents, so the job
// status can say what a tool found without clients parsing reports.
package summary

import (
	"ciss.dev/schemas"
	"ciss.dev/workers/internal/trivy"
)

// TrivyJSON counts the vulnerabilities of a Trivy JSON report by severity.
func TrivyJSON(b []byte) (schemas.Summary, error) {
	fs, err := trivy.ParseReport(b)
	if err != nil {
		return schemas.Summary{}, err
	}
	return trivy.Summarize(fs), nil
}

// SARIF counts the results of a SARIF 2.1.0 log by severity, as
// SARIFFindings maps them: from the rule's security-severity score where
// present (GitHub's bands: ≥9 critical, ≥7 high, ≥4 medium, >0 low), else
// from the result's (or the rule's default) level (error → high, warning →
// medium, note → low, other → unknown).
func SARIF(b []byte) (schemas.Summary, error) {
	fs, err := SARIFFindings(b)
	if err != nil {
		return schemas.Summary{}, err
	}
	var s schemas.Summary
	for _, f := range fs {
		switch f.Severity {
		case "CRITICAL":
			s.Critical++
		case "HIGH":
			s.High++
		case "MEDIUM":
			s.Medium++
		case "LOW":
			s.Low++
		default:
			s.Unknown++
		}
	}
	return s, nil
}

// sarifRule is the part of a SARIF rule the finding model reads.
type sarifRule struct {
	ID         string `json:"id"`
	Properties struct {
		SecuritySeverity string `json:"security-severity"`
	} `json:"properties"`
}
