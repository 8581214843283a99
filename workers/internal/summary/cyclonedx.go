package summary

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	cdx "github.com/CycloneDX/cyclonedx-go"

	"ciss.dev/schemas"
)

// ErrNotCycloneDX is a document that is not a CycloneDX 1.5+ JSON BOM.
var ErrNotCycloneDX = errors.New("not a CycloneDX 1.5+ JSON BOM")

// CycloneDX decodes a CycloneDX JSON BOM with cyclonedx-go, checks what the
// SBOM job promises (bomFormat CycloneDX, spec version 1.5 or later, a
// metadata component naming the scanned artifact, components with names and
// unique bom-refs), and counts its vulnerabilities by their highest rating.
func CycloneDX(b []byte) (schemas.Summary, error) {
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(bytes.NewReader(b), cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		return schemas.Summary{}, fmt.Errorf("%w: %w", ErrNotCycloneDX, err)
	}
	switch {
	case bom.BOMFormat != cdx.BOMFormat:
		return schemas.Summary{}, fmt.Errorf("%w: bomFormat %q", ErrNotCycloneDX, bom.BOMFormat)
	case bom.SpecVersion < cdx.SpecVersion1_5:
		return schemas.Summary{}, fmt.Errorf("%w: specVersion %s", ErrNotCycloneDX, bom.SpecVersion)
	case bom.Metadata == nil || bom.Metadata.Component == nil || bom.Metadata.Component.Name == "":
		return schemas.Summary{}, fmt.Errorf("%w: metadata.component (the scanned artifact) is missing", ErrNotCycloneDX)
	}
	refs := map[string]bool{}
	if bom.Components != nil {
		for i, c := range *bom.Components {
			if c.Name == "" {
				return schemas.Summary{}, fmt.Errorf("%w: components[%d] has no name", ErrNotCycloneDX, i)
			}
			if c.BOMRef != "" {
				if refs[c.BOMRef] {
					return schemas.Summary{}, fmt.Errorf("%w: bom-ref %q twice", ErrNotCycloneDX, c.BOMRef)
				}
				refs[c.BOMRef] = true
			}
		}
	}
	var s schemas.Summary
	if bom.Vulnerabilities != nil {
		for _, v := range *bom.Vulnerabilities {
			worst := ""
			if v.Ratings != nil {
				for _, r := range *v.Ratings {
					if rank(string(r.Severity)) > rank(worst) {
						worst = string(r.Severity)
					}
				}
			}
			switch strings.ToLower(worst) {
			case "critical":
				s.Critical++
			case "high":
				s.High++
			case "medium":
				s.Medium++
			case "low", "info":
				s.Low++
			default:
				s.Unknown++
			}
		}
	}
	return s, nil
}

func rank(sev string) int {
	switch strings.ToLower(sev) {
	case "critical":
		return 5
	case "high":
		return 4
	case "medium":
		return 3
	case "low":
		return 2
	case "info", "none":
		return 1
	}
	return 0
}

// cycloneDXFindings reads a BOM's vulnerabilities into the common model: one
// finding per affected component (by bom-ref), with the highest rating.
func cycloneDXFindings(b []byte) ([]schemas.Finding, error) {
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(bytes.NewReader(b), cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotCycloneDX, err)
	}
	if bom.Vulnerabilities == nil {
		return nil, nil
	}
	comps := map[string]cdx.Component{}
	if bom.Components != nil {
		for _, c := range *bom.Components {
			comps[c.BOMRef] = c
		}
	}
	var fs []schemas.Finding
	for _, v := range *bom.Vulnerabilities {
		worst := ""
		if v.Ratings != nil {
			for _, r := range *v.Ratings {
				if rank(string(r.Severity)) > rank(worst) {
					worst = string(r.Severity)
				}
			}
		}
		f := schemas.Finding{ID: v.ID, Severity: severity(worst)}
		if v.Affects == nil || len(*v.Affects) == 0 {
			fs = append(fs, f)
			continue
		}
		for _, a := range *v.Affects {
			g := f
			if c, ok := comps[a.Ref]; ok {
				g.Package, g.Version = c.Name, c.Version
			} else {
				g.Package = a.Ref
			}
			fs = append(fs, g)
		}
	}
	return fs, nil
}
