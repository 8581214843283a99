// Package summary reads severity counts from report documents, so the job
// status can say what a tool found without clients parsing reports.
package summary

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

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

// sarifLog is the part of SARIF 2.1.0 the summary needs.
type sarifLog struct {
	Version string `json:"version"`
	Runs    []struct {
		Tool struct {
			Driver struct {
				Rules []sarifRule `json:"rules"`
			} `json:"driver"`
		} `json:"tool"`
		Results []struct {
			RuleID    string `json:"ruleId"`
			RuleIndex *int   `json:"ruleIndex"`
			Level     string `json:"level"`
		} `json:"results"`
	} `json:"runs"`
}

type sarifRule struct {
	ID         string `json:"id"`
	Properties struct {
		SecuritySeverity string `json:"security-severity"`
	} `json:"properties"`
}

// SARIF counts the results of a SARIF 2.1.0 log by severity: from the rule's
// security-severity score where present (GitHub's bands: ≥9 critical, ≥7 high,
// ≥4 medium, >0 low), else from the result level (error → high, warning →
// medium, note → low, other → unknown).
func SARIF(b []byte) (schemas.Summary, error) {
	var l sarifLog
	if err := json.Unmarshal(b, &l); err != nil {
		return schemas.Summary{}, fmt.Errorf("sarif: %w", err)
	}
	if l.Version != "2.1.0" {
		return schemas.Summary{}, fmt.Errorf("sarif: version %q, want 2.1.0", l.Version)
	}
	var s schemas.Summary
	for _, run := range l.Runs {
		rules := map[string]sarifRule{}
		for _, r := range run.Tool.Driver.Rules {
			rules[r.ID] = r
		}
		for _, res := range run.Results {
			rule, ok := rules[res.RuleID]
			if !ok && res.RuleIndex != nil && *res.RuleIndex >= 0 && *res.RuleIndex < len(run.Tool.Driver.Rules) {
				rule, ok = run.Tool.Driver.Rules[*res.RuleIndex], true
			}
			score, err := strconv.ParseFloat(strings.TrimSpace(rule.Properties.SecuritySeverity), 64)
			switch {
			case ok && err == nil && score >= 9:
				s.Critical++
			case ok && err == nil && score >= 7:
				s.High++
			case ok && err == nil && score >= 4:
				s.Medium++
			case ok && err == nil && score > 0:
				s.Low++
			case res.Level == "error":
				s.High++
			case res.Level == "warning":
				s.Medium++
			case res.Level == "note":
				s.Low++
			default:
				s.Unknown++
			}
		}
	}
	return s, nil
}
