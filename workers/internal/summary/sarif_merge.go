package summary

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// SARIFSchema is the SARIF 2.1.0 schema URI written into merged logs.
const SARIFSchema = "https://json.schemastore.org/sarif-2.1.0.json"

// MergeSARIF concatenates the runs of SARIF 2.1.0 logs into one log, in
// order: one report from several tools, each keeping its own run (tool,
// rules, results). A log that is not SARIF 2.1.0 is an error.
func MergeSARIF(logs ...[]byte) ([]byte, error) {
	runs := []json.RawMessage{}
	for i, b := range logs {
		var l struct {
			Version string            `json:"version"`
			Runs    []json.RawMessage `json:"runs"`
		}
		if err := json.Unmarshal(b, &l); err != nil {
			return nil, fmt.Errorf("sarif log %d: %w", i, err)
		}
		if l.Version != "2.1.0" {
			return nil, fmt.Errorf("sarif log %d: version %q, want 2.1.0", i, l.Version)
		}
		runs = append(runs, l.Runs...)
	}
	return json.MarshalIndent(struct {
		Version string            `json:"version"`
		Schema  string            `json:"$schema"`
		Runs    []json.RawMessage `json:"runs"`
	}{"2.1.0", SARIFSchema, runs}, "", "  ")
}

// SARIFFinding is one SARIF result with the severity CISS gives it.
type SARIFFinding struct {
	// Tool is the run's driver name; RuleID the result's rule.
	Tool, RuleID string
	// Severity is CRITICAL, HIGH, MEDIUM, LOW or UNKNOWN.
	Severity string
	// Location is the first location's file:line, when given.
	Location string
}

// SARIFFindings lists the results of a SARIF 2.1.0 log with their severity,
// mapped as SARIF does: the rule's security-severity score where present
// (≥9 CRITICAL, ≥7 HIGH, ≥4 MEDIUM, >0 LOW), else the result's level, else
// the rule's default level (error HIGH, warning MEDIUM, note LOW, none or
// anything else UNKNOWN).
func SARIFFindings(b []byte) ([]SARIFFinding, error) {
	var l struct {
		Version string `json:"version"`
		Runs    []struct {
			Tool struct {
				Driver struct {
					Name  string `json:"name"`
					Rules []struct {
						ID         string `json:"id"`
						Properties struct {
							SecuritySeverity any `json:"security-severity"`
						} `json:"properties"`
						DefaultConfiguration struct {
							Level string `json:"level"`
						} `json:"defaultConfiguration"`
					} `json:"rules"`
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
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("sarif: %w", err)
	}
	if l.Version != "2.1.0" {
		return nil, fmt.Errorf("sarif: version %q, want 2.1.0", l.Version)
	}
	var out []SARIFFinding
	for _, run := range l.Runs {
		rules := run.Tool.Driver.Rules
		for _, res := range run.Results {
			idx := -1
			for i := range rules {
				if rules[i].ID == res.RuleID {
					idx = i
					break
				}
			}
			if idx < 0 && res.RuleIndex != nil && *res.RuleIndex >= 0 && *res.RuleIndex < len(rules) {
				idx = *res.RuleIndex
			}
			level, score, scored := res.Level, 0.0, false
			if idx >= 0 {
				if level == "" {
					level = rules[idx].DefaultConfiguration.Level
				}
				switch v := rules[idx].Properties.SecuritySeverity.(type) {
				case string:
					f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
					score, scored = f, err == nil
				case float64:
					score, scored = v, true
				}
			}
			f := SARIFFinding{Tool: run.Tool.Driver.Name, RuleID: res.RuleID, Severity: severityOf(scored, score, level)}
			if len(res.Locations) > 0 {
				pl := res.Locations[0].PhysicalLocation
				f.Location = pl.ArtifactLocation.URI
				if pl.Region.StartLine > 0 {
					f.Location += ":" + strconv.Itoa(pl.Region.StartLine)
				}
			}
			out = append(out, f)
		}
	}
	return out, nil
}

func severityOf(scored bool, score float64, level string) string {
	switch {
	case scored && score >= 9:
		return "CRITICAL"
	case scored && score >= 7:
		return "HIGH"
	case scored && score >= 4:
		return "MEDIUM"
	case scored && score > 0:
		return "LOW"
	case level == "error":
		return "HIGH"
	case level == "warning":
		return "MEDIUM"
	case level == "note":
		return "LOW"
	}
	return "UNKNOWN"
}
