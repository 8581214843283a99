// Package report reads security reports into one flat list of findings: SARIF
// 2.1.0 (any tool) and Trivy's native JSON. The CLI's tables and the Harbor
// adapter both build on it, so a tool swap behind the routing changes neither.
//
// Parsing is lenient about what it does not need (unknown fields are ignored:
// these are third-party documents) and strict about shape: a document that is
// not JSON of the expected kind is an error.
package report

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Severity orders findings; the zero value is Unknown, the lowest.
type Severity int

// Severities, lowest first.
const (
	SeverityUnknown Severity = iota
	SeverityLow
	SeverityMedium
	SeverityHigh
	SeverityCritical
)

// Severities lists every severity, highest first (the order of tables).
func Severities() []Severity {
	return []Severity{SeverityCritical, SeverityHigh, SeverityMedium, SeverityLow, SeverityUnknown}
}

// String is the upper-case name Trivy and the CISS summary use.
func (s Severity) String() string {
	switch s {
	case SeverityLow:
		return "LOW"
	case SeverityMedium:
		return "MEDIUM"
	case SeverityHigh:
		return "HIGH"
	case SeverityCritical:
		return "CRITICAL"
	}
	return "UNKNOWN"
}

// ParseSeverity reads a severity name in any case ("high", "HIGH", "High").
func ParseSeverity(s string) (Severity, bool) {
	for _, sev := range Severities() {
		if strings.EqualFold(s, sev.String()) {
			return sev, true
		}
	}
	return SeverityUnknown, false
}

// fromCVSS maps a CVSS v3 base score to a severity band (FIRST's qualitative
// scale, which GitHub also uses for SARIF "security-severity").
func fromCVSS(score float64) Severity {
	switch {
	case score >= 9:
		return SeverityCritical
	case score >= 7:
		return SeverityHigh
	case score >= 4:
		return SeverityMedium
	case score > 0:
		return SeverityLow
	}
	return SeverityUnknown
}

// Finding is one reported problem.
type Finding struct {
	// ID is the rule or vulnerability id, e.g. "CVE-2024-45491".
	ID string
	// Package, InstalledVersion and FixedVersion name the affected package,
	// when the report says.
	Package, InstalledVersion, FixedVersion string
	// Severity is normalised to the CISS scale.
	Severity Severity
	// Title is a one-line summary; Description the long text.
	Title, Description string
	// Links point to advisories; the primary one first.
	Links []string
	// Location is where the finding is (a file, or an image repository).
	Location string
	// CVSS3Score and CVSS3Vector are set when the report carries them.
	CVSS3Score  string
	CVSS3Vector string
}

// Sort orders findings for display: most severe first, then by id and package.
func Sort(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(b.Severity, a.Severity), cmp.Compare(a.ID, b.ID), cmp.Compare(a.Package, b.Package))
	})
}

// ErrNotSARIF means the document is not a SARIF log.
var ErrNotSARIF = errors.New("report: not a SARIF log")

// ErrNotTrivy means the document is not Trivy's JSON report.
var ErrNotTrivy = errors.New("report: not a Trivy JSON report")

type sarifLog struct {
	Version string `json:"version"`
	Runs    []struct {
		Tool struct {
			Driver struct {
				Rules []sarifRule `json:"rules"`
			} `json:"driver"`
		} `json:"tool"`
		Results []struct {
			RuleID    string       `json:"ruleId"`
			RuleIndex *int         `json:"ruleIndex"`
			Level     string       `json:"level"`
			Message   sarifMessage `json:"message"`
			Locations []struct {
				PhysicalLocation struct {
					ArtifactLocation struct {
						URI string `json:"uri"`
					} `json:"artifactLocation"`
				} `json:"physicalLocation"`
			} `json:"locations"`
		} `json:"results"`
	} `json:"runs"`
}

type sarifMessage struct {
	Text string `json:"text"`
}

type sarifRule struct {
	ID               string       `json:"id"`
	ShortDescription sarifMessage `json:"shortDescription"`
	FullDescription  sarifMessage `json:"fullDescription"`
	HelpURI          string       `json:"helpUri"`
	Help             sarifMessage `json:"help"`
	Default          struct {
		Level string `json:"level"`
	} `json:"defaultConfiguration"`
	Properties struct {
		Tags             []string `json:"tags"`
		SecuritySeverity string   `json:"security-severity"`
		CVSS3Score       *float64 `json:"cvssv3_baseScore"`
		CVSS3Vector      string   `json:"cvssv3_vector"`
	} `json:"properties"`
}

// ParseSARIF reads the results of every run of a SARIF 2.1.0 log.
//
// The severity comes from the rule's tags (a severity word, as Trivy and
// others tag), else its "security-severity" score, else the result's or the
// rule's level (error → HIGH, warning → MEDIUM, note → LOW). Package and
// versions are read from "Package:", "Installed Version:" and "Fixed Version:"
// lines of the message or the rule's help text when present.
func ParseSARIF(b []byte) ([]Finding, error) {
	var log sarifLog
	if err := json.Unmarshal(b, &log); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotSARIF, err)
	}
	if !strings.HasPrefix(log.Version, "2.") {
		return nil, fmt.Errorf("%w: version %q", ErrNotSARIF, log.Version)
	}
	var out []Finding
	for _, run := range log.Runs {
		rules := run.Tool.Driver.Rules
		byID := make(map[string]*sarifRule, len(rules))
		for i := range rules {
			byID[rules[i].ID] = &rules[i]
		}
		for _, res := range run.Results {
			rule := byID[res.RuleID]
			if res.RuleIndex != nil && *res.RuleIndex >= 0 && *res.RuleIndex < len(rules) {
				rule = &rules[*res.RuleIndex]
			}
			if rule == nil {
				rule = &sarifRule{ID: res.RuleID}
			}
			f := Finding{ID: cmp.Or(res.RuleID, rule.ID), Severity: sarifSeverity(rule, res.Level)}
			f.Title = firstLine(rule.ShortDescription.Text)
			if msg := firstLine(res.Message.Text); f.Title == "" && !strings.HasPrefix(msg, "Package:") {
				// Tools without rule descriptions put the title in the message;
				// Trivy's message is a field list, already read below.
				f.Title = msg
			}
			f.Description = rule.FullDescription.Text
			if rule.HelpURI != "" {
				f.Links = []string{rule.HelpURI}
			}
			if len(res.Locations) > 0 {
				f.Location = res.Locations[0].PhysicalLocation.ArtifactLocation.URI
			}
			f.Package = field("Package", res.Message.Text, rule.Help.Text)
			f.InstalledVersion = field("Installed Version", res.Message.Text, rule.Help.Text)
			f.FixedVersion = field("Fixed Version", res.Message.Text, rule.Help.Text)
			if p := rule.Properties; p.CVSS3Score != nil {
				f.CVSS3Score = strconv.FormatFloat(*p.CVSS3Score, 'f', -1, 64)
				f.CVSS3Vector = p.CVSS3Vector
			}
			out = append(out, f)
		}
	}
	return out, nil
}

func sarifSeverity(rule *sarifRule, level string) Severity {
	for _, t := range rule.Properties.Tags {
		if s, ok := ParseSeverity(t); ok && !strings.EqualFold(t, "unknown") {
			return s
		}
	}
	if score, err := strconv.ParseFloat(rule.Properties.SecuritySeverity, 64); err == nil {
		return fromCVSS(score)
	}
	switch cmp.Or(level, rule.Default.Level) {
	case "error":
		return SeverityHigh
	case "warning":
		return SeverityMedium
	case "note":
		return SeverityLow
	}
	return SeverityUnknown
}

// field finds "Name: value" on a line of any of texts.
func field(name string, texts ...string) string {
	for _, t := range texts {
		for line := range strings.SplitSeq(t, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

type trivyReport struct {
	SchemaVersion int    `json:"SchemaVersion"`
	ArtifactName  string `json:"ArtifactName"`
	Results       []struct {
		Target          string `json:"Target"`
		Vulnerabilities []struct {
			VulnerabilityID  string   `json:"VulnerabilityID"`
			PkgName          string   `json:"PkgName"`
			InstalledVersion string   `json:"InstalledVersion"`
			FixedVersion     string   `json:"FixedVersion"`
			Severity         string   `json:"Severity"`
			Title            string   `json:"Title"`
			Description      string   `json:"Description"`
			PrimaryURL       string   `json:"PrimaryURL"`
			References       []string `json:"References"`
			CVSS             map[string]struct {
				V3Vector string   `json:"V3Vector"`
				V3Score  *float64 `json:"V3Score"`
			} `json:"CVSS"`
			SeveritySource string `json:"SeveritySource"`
		} `json:"Vulnerabilities"`
	} `json:"Results"`
}

// ParseTrivy reads the vulnerabilities of Trivy's JSON report (SchemaVersion 2).
// The CVSS v3 score is the one of the severity source when it has one, else
// NVD's.
func ParseTrivy(b []byte) ([]Finding, error) {
	var r trivyReport
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotTrivy, err)
	}
	if r.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: SchemaVersion %d, want 2", ErrNotTrivy, r.SchemaVersion)
	}
	var out []Finding
	for _, res := range r.Results {
		for _, v := range res.Vulnerabilities {
			sev, _ := ParseSeverity(v.Severity)
			f := Finding{
				ID: v.VulnerabilityID, Package: v.PkgName, InstalledVersion: v.InstalledVersion,
				FixedVersion: v.FixedVersion, Severity: sev, Title: v.Title, Description: v.Description,
				Location: res.Target,
			}
			if v.PrimaryURL != "" {
				f.Links = append(f.Links, v.PrimaryURL)
			}
			for _, ref := range v.References {
				if ref != v.PrimaryURL {
					f.Links = append(f.Links, ref)
				}
			}
			for _, src := range []string{v.SeveritySource, "nvd"} {
				if c, ok := v.CVSS[src]; ok && c.V3Score != nil {
					f.CVSS3Score = strconv.FormatFloat(*c.V3Score, 'f', -1, 64)
					f.CVSS3Vector = c.V3Vector
					break
				}
			}
			out = append(out, f)
		}
	}
	return out, nil
}
