package summary

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"ciss.dev/schemas"
	"ciss.dev/workers/internal/trivy"
)

// Finding sources: the parsers that read a report into the common model.
const (
	SourceTrivyJSON = "trivy-json"
	SourceSARIF     = "sarif"
	SourceCycloneDX = "cyclonedx"
)

// Findings reads a report into the common finding model, sorted, so reports
// of different tools can be compared by a component that links neither.
// source is SourceTrivyJSON, SourceSARIF or SourceCycloneDX (the BOM's
// vulnerabilities, usually none in a plain SBOM).
func Findings(source string, b []byte) ([]schemas.Finding, error) {
	var fs []schemas.Finding
	switch source {
	case SourceTrivyJSON:
		tf, err := trivy.ParseReport(b)
		if err != nil {
			return nil, err
		}
		for _, f := range tf {
			fs = append(fs, schemas.Finding{
				ID: f.ID, Aliases: f.Aliases, Package: f.Package, Version: f.InstalledVersion,
				File: f.PkgPath, Severity: severity(f.Severity),
			})
		}
	case SourceSARIF:
		var err error
		if fs, err = sarifFindings(b); err != nil {
			return nil, err
		}
	case SourceCycloneDX:
		var err error
		if fs, err = cycloneDXFindings(b); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("findings: unknown source %q", source)
	}
	for i := range fs {
		if fs[i].ID == "" {
			return nil, fmt.Errorf("findings: %s finding %d has no id", source, i)
		}
	}
	SortFindings(fs)
	return fs, nil
}

// SortFindings orders findings by id, package, version, file and line.
func SortFindings(fs []schemas.Finding) {
	slices.SortFunc(fs, func(a, b schemas.Finding) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Package, b.Package), cmp.Compare(a.Version, b.Version),
			cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
}

func severity(s string) schemas.Severity {
	switch v := schemas.Severity(strings.ToUpper(strings.TrimSpace(s))); v {
	case schemas.SeverityCritical, schemas.SeverityHigh, schemas.SeverityMedium, schemas.SeverityLow:
		return v
	}
	return schemas.SeverityUnknown
}

// sarifFindingsLog is the part of SARIF 2.1.0 the finding model needs.
type sarifFindingsLog struct {
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
			Locations []struct {
				PhysicalLocation struct {
					ArtifactLocation struct {
						URI string `json:"uri"`
					} `json:"artifactLocation"`
					Region struct {
						StartLine int `json:"startLine"`
					} `json:"region"`
				} `json:"physicalLocation"`
			} `json:"locations"`
		} `json:"results"`
	} `json:"runs"`
}

// sarifFindings maps each SARIF result to a finding: the rule id, the first
// location's file and line, and the severity as SARIF counts it.
func sarifFindings(b []byte) ([]schemas.Finding, error) {
	var l sarifFindingsLog
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("sarif: %w", err)
	}
	if l.Version != "2.1.0" {
		return nil, fmt.Errorf("sarif: version %q, want 2.1.0", l.Version)
	}
	var fs []schemas.Finding
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
			id := cmp.Or(res.RuleID, rule.ID)
			f := schemas.Finding{ID: id, Severity: sarifSeverity(ok, rule, res.Level)}
			if len(res.Locations) > 0 {
				f.File = res.Locations[0].PhysicalLocation.ArtifactLocation.URI
				f.Line = max(res.Locations[0].PhysicalLocation.Region.StartLine, 0)
			}
			fs = append(fs, f)
		}
	}
	return fs, nil
}

// sarifSeverity applies SARIF's banding (see SARIF).
func sarifSeverity(ok bool, rule sarifRule, level string) schemas.Severity {
	score, err := strconv.ParseFloat(strings.TrimSpace(rule.Properties.SecuritySeverity), 64)
	switch {
	case ok && err == nil && score >= 9:
		return schemas.SeverityCritical
	case ok && err == nil && score >= 7:
		return schemas.SeverityHigh
	case ok && err == nil && score >= 4:
		return schemas.SeverityMedium
	case ok && err == nil && score > 0:
		return schemas.SeverityLow
	case level == "error":
		return schemas.SeverityHigh
	case level == "warning":
		return schemas.SeverityMedium
	case level == "note":
		return schemas.SeverityLow
	}
	return schemas.SeverityUnknown
}
