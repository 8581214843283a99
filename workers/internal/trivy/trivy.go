// Package trivy reads Trivy's JSON report. Trivy itself runs as a Tekton Task
// (deploy/tekton/trivy-image-scan.yaml), not linked: linking it needs
// GOEXPERIMENT=jsonv2 and ~400 modules, while the CLI is built once, cached and
// swapped by configuration.
package trivy

import (
	"encoding/json"
	"fmt"

	"ciss.dev/schemas"
)

// Finding is one vulnerability in the report.
type Finding struct {
	ID, Package, InstalledVersion, Severity string
	// Aliases are the vendor ids of the same vulnerability (GHSA-…).
	Aliases []string
	// PkgPath is the file a language package was found in; empty for OS packages.
	PkgPath string
}

// report is the part of Trivy's JSON report CISS reads.
type report struct {
	SchemaVersion int `json:"SchemaVersion"`
	Results       []struct {
		Vulnerabilities []struct {
			VulnerabilityID  string   `json:"VulnerabilityID"`
			PkgName          string   `json:"PkgName"`
			InstalledVersion string   `json:"InstalledVersion"`
			Severity         string   `json:"Severity"`
			VendorIDs        []string `json:"VendorIDs"`
			PkgPath          string   `json:"PkgPath"`
		} `json:"Vulnerabilities"`
	} `json:"Results"`
}

// ParseReport reads the findings from a Trivy JSON report.
func ParseReport(b []byte) ([]Finding, error) {
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("trivy: decode report: %w", err)
	}
	if r.SchemaVersion != 2 {
		return nil, fmt.Errorf("trivy: report schema version %d, want 2", r.SchemaVersion)
	}
	var fs []Finding
	for _, res := range r.Results {
		for _, v := range res.Vulnerabilities {
			fs = append(fs, Finding{ID: v.VulnerabilityID, Package: v.PkgName, InstalledVersion: v.InstalledVersion, Severity: v.Severity,
				Aliases: v.VendorIDs, PkgPath: v.PkgPath})
		}
	}
	return fs, nil
}

// Summarize counts findings by severity.
func Summarize(fs []Finding) schemas.Summary {
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
	return s
}
