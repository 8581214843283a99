package workers

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"ciss.dev/schemas"
)

// Policy decides, per tenant, whether a scanned image is good enough to be
// signed: no finding at or above the tenant's severity threshold, except the
// allowlisted ones (accepted risks, VEX'd findings).
//
// The file (YAML, unknown fields rejected):
//
//	version: 1
//	default: {threshold: HIGH}
//	tenants:
//	  acme: {threshold: CRITICAL, allow: [CVE-2024-0001]}
//
// A tenant without an entry gets the default; the zero Policy fails images
// with any HIGH or CRITICAL finding.
type Policy struct {
	Version int                     `json:"version"`
	Default TenantPolicy            `json:"default"`
	Tenants map[string]TenantPolicy `json:"tenants"`
}

// TenantPolicy is one tenant's rules.
type TenantPolicy struct {
	// Threshold is the lowest severity that fails: CRITICAL, HIGH, MEDIUM,
	// LOW or UNKNOWN (every finding fails). Empty means HIGH.
	Threshold string `json:"threshold"`
	// Allow lists finding ids (CVE-…, GHSA-…) that never fail.
	Allow []string `json:"allow"`
}

var severityRank = map[string]int{"UNKNOWN": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}

// DefaultThreshold is the threshold of tenants whose policy names none.
const DefaultThreshold = "HIGH"

// LoadPolicy reads and validates a policy file.
func LoadPolicy(path string) (Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Policy{}, fmt.Errorf("workers: policy: %w", err)
	}
	var p Policy
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return Policy{}, fmt.Errorf("workers: policy %s: %w", path, err)
	}
	if p.Version != 1 {
		return Policy{}, fmt.Errorf("workers: policy %s: version %d: want 1", path, p.Version)
	}
	if err := p.Default.validate("default"); err != nil {
		return Policy{}, fmt.Errorf("workers: policy %s: %w", path, err)
	}
	for name, tp := range p.Tenants {
		if !schemas.ValidToken(name) {
			return Policy{}, fmt.Errorf("workers: policy %s: tenant %q is not a valid tenant name", path, name)
		}
		if err := tp.validate("tenants." + name); err != nil {
			return Policy{}, fmt.Errorf("workers: policy %s: %w", path, err)
		}
	}
	return p, nil
}

func (tp TenantPolicy) validate(field string) error {
	if _, ok := severityRank[tp.threshold()]; !ok {
		return fmt.Errorf("%s.threshold %q: want CRITICAL, HIGH, MEDIUM, LOW or UNKNOWN", field, tp.Threshold)
	}
	return nil
}

func (tp TenantPolicy) threshold() string {
	if tp.Threshold == "" {
		return DefaultThreshold
	}
	return strings.ToUpper(tp.Threshold)
}

// For returns the rules of tenant.
func (p Policy) For(tenant string) TenantPolicy {
	if tp, ok := p.Tenants[tenant]; ok {
		return tp
	}
	return p.Default
}

// maxBlocking bounds PolicyDecision.Blocking, which travels in events.
const maxBlocking = 20

// EvaluateTrivy applies tenant's rules to a Trivy JSON report. A report
// that cannot be read fails closed (an error, never a pass).
func (p Policy) EvaluateTrivy(tenant string, report []byte) (schemas.PolicyDecision, error) {
	var r struct {
		Results []struct {
			Vulnerabilities []struct {
				VulnerabilityID string `json:"VulnerabilityID"`
				Severity        string `json:"Severity"`
			} `json:"Vulnerabilities"`
		} `json:"Results"`
	}
	if err := json.Unmarshal(report, &r); err != nil {
		return schemas.PolicyDecision{}, fmt.Errorf("policy: read Trivy report: %w", err)
	}
	tp := p.For(tenant)
	th := tp.threshold()
	floor := severityRank[th]
	var blocking []string
	for _, res := range r.Results {
		for _, v := range res.Vulnerabilities {
			rank, known := severityRank[strings.ToUpper(v.Severity)]
			if !known {
				rank = severityRank["UNKNOWN"]
			}
			if rank < floor || slices.Contains(tp.Allow, v.VulnerabilityID) || slices.Contains(blocking, v.VulnerabilityID) {
				continue
			}
			blocking = append(blocking, v.VulnerabilityID)
		}
	}
	slices.Sort(blocking)
	d := schemas.PolicyDecision{Passed: len(blocking) == 0, Threshold: th}
	if d.Passed {
		d.Reason = fmt.Sprintf("no findings at or above %s outside the allowlist", th)
		return d, nil
	}
	d.Reason = fmt.Sprintf("%d finding(s) at or above %s outside the allowlist; the image is not signed", len(blocking), th)
	d.Blocking = blocking[:min(len(blocking), maxBlocking)]
	return d, nil
}
