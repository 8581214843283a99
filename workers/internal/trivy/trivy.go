// Package trivy runs Aqua Security's Trivy CLI as the image-scan tool. The CLI
// runs as a subprocess (through a runner.Runner) rather than being linked in:
// linking Trivy needs GOEXPERIMENT=jsonv2 and ~400 modules in every importer,
// while the CLI is built once, cached, and swapped by configuration.
package trivy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"ciss.dev/schemas"
	"ciss.dev/workers/internal/runner"
)

// DefaultImage is the step image for Trivy; the local runner maps it to the
// installed binary.
const DefaultImage = "aquasec/trivy:0.69.0"

// Config configures the Trivy tool.
type Config struct {
	// Runner executes Trivy's steps. Required.
	Runner runner.Runner
	// Image is the step image; default DefaultImage.
	Image string
	// CacheDir holds Trivy's vulnerability DB (CacheDir/db/trivy.db and
	// metadata.json). Required: CISS never downloads a DB at scan time; the DB is
	// provisioned (mirrored) out of band.
	CacheDir string
	// Insecure allows registries with self-signed TLS certificates.
	Insecure bool
	// VersionTTL is how long a version probe is reused; default 30s.
	VersionTTL time.Duration
}

// Tool is the Trivy image scanner.
type Tool struct {
	cfg Config

	mu        sync.Mutex
	version   Version
	versionAt time.Time
}

// New validates cfg.
func New(cfg Config) (*Tool, error) {
	switch {
	case cfg.Runner == nil:
		return nil, errors.New("trivy: Config.Runner is required")
	case cfg.CacheDir == "":
		return nil, errors.New("trivy: Config.CacheDir is required")
	}
	cfg.Image = cmp.Or(cfg.Image, DefaultImage)
	cfg.VersionTTL = cmp.Or(cfg.VersionTTL, 30*time.Second)
	return &Tool{cfg: cfg}, nil
}

// Version is Trivy's version and its vulnerability DB's.
type Version struct {
	Tool string
	// DB is "<schema version>@<updated at, RFC 3339>", empty without a DB.
	DB string
}

// versionJSON is `trivy version --format json`.
type versionJSON struct {
	Version         string `json:"Version"`
	VulnerabilityDB *struct {
		Version   int       `json:"Version"`
		UpdatedAt time.Time `json:"UpdatedAt"`
	} `json:"VulnerabilityDB"`
}

// ErrNoDB means the cache directory holds no vulnerability DB.
var ErrNoDB = errors.New("trivy: no vulnerability DB in cache dir (provision db/trivy.db and db/metadata.json)")

// Version probes the binary and DB, reusing a probe for VersionTTL.
func (t *Tool) Version(ctx context.Context) (Version, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.versionAt.IsZero() && time.Since(t.versionAt) < t.cfg.VersionTTL {
		return t.version, nil
	}
	dir, err := os.MkdirTemp("", "ciss-trivy-version-")
	if err != nil {
		return Version{}, err
	}
	defer os.RemoveAll(dir)
	out, err := t.cfg.Runner.Run(ctx, runner.Spec{Dir: dir, Timeout: time.Minute, Steps: []runner.Step{{
		Name: "version", Image: t.cfg.Image, Command: []string{"trivy"},
		Args: []string{"version", "--format", "json", "--cache-dir", t.cfg.CacheDir},
	}}})
	if err != nil {
		return Version{}, fmt.Errorf("trivy version: %w", err)
	}
	var v versionJSON
	if err := json.Unmarshal(out.Steps[0].Stdout, &v); err != nil {
		return Version{}, fmt.Errorf("trivy version: decode: %w", err)
	}
	if v.VulnerabilityDB == nil {
		return Version{}, ErrNoDB
	}
	t.version = Version{Tool: v.Version, DB: fmt.Sprintf("%d@%s", v.VulnerabilityDB.Version, v.VulnerabilityDB.UpdatedAt.UTC().Format(time.RFC3339))}
	t.versionAt = time.Now()
	return t.version, nil
}

// ReportFile is a report the scan wrote into its working directory.
type ReportFile struct {
	Format    string
	MediaType string
	Path      string
}

// Scan is the outcome of scanning one image.
type Scan struct {
	Summary schemas.Summary
	Reports []ReportFile
	// Findings lists (id, package, version, severity) for each vulnerability.
	Findings []Finding
}

// Finding is one vulnerability in the report.
type Finding struct {
	ID, Package, InstalledVersion, Severity string
}

// Scan scans image (a digest-pinned reference) in dir and writes the native
// JSON, SARIF and CycloneDX reports there.
func (t *Tool) Scan(ctx context.Context, image, dir string, timeout time.Duration) (Scan, error) {
	native := filepath.Join(dir, "report.json")
	sarif := filepath.Join(dir, "report.sarif.json")
	cdx := filepath.Join(dir, "report.cdx.json")
	scanArgs := []string{
		"image", "--cache-dir", t.cfg.CacheDir,
		"--skip-db-update", "--skip-java-db-update", "--offline-scan",
		// The layer cache in memory: Trivy's file cache (fanal.db) is locked for a
		// whole scan, so concurrent scans sharing CacheDir would time out. The
		// vulnerability DB itself is opened read-only and shared.
		"--cache-backend", "memory",
		"--image-src", "remote", "--scanners", "vuln", "--list-all-pkgs",
		"--format", "json", "--output", native, "--quiet",
	}
	if timeout > 0 {
		scanArgs = append(scanArgs, "--timeout", timeout.String())
	}
	if t.cfg.Insecure {
		scanArgs = append(scanArgs, "--insecure")
	}
	// Scanning a "--" separated argument keeps a hostile reference from being
	// read as a flag (references are validated upstream too).
	scanArgs = append(scanArgs, "--", image)
	step := func(name string, args ...string) runner.Step {
		return runner.Step{Name: name, Image: t.cfg.Image, Command: []string{"trivy"}, Args: args}
	}
	_, err := t.cfg.Runner.Run(ctx, runner.Spec{Dir: dir, Timeout: timeout, Steps: []runner.Step{
		step("scan", scanArgs...),
		step("sarif", "convert", "--format", "sarif", "--output", sarif, "--quiet", native),
		step("cyclonedx", "convert", "--format", "cyclonedx", "--output", cdx, "--quiet", native),
	}})
	if err != nil {
		return Scan{}, classify(err)
	}
	b, err := os.ReadFile(native)
	if err != nil {
		return Scan{}, fmt.Errorf("trivy: read report: %w", err)
	}
	findings, err := ParseReport(b)
	if err != nil {
		return Scan{}, err
	}
	return Scan{
		Summary:  Summarize(findings),
		Findings: findings,
		Reports: []ReportFile{
			{Format: schemas.FormatNative, MediaType: schemas.MediaTypeJSON, Path: native},
			{Format: schemas.FormatSARIF, MediaType: schemas.MediaTypeSARIF, Path: sarif},
			{Format: schemas.FormatCycloneDX, MediaType: schemas.MediaTypeCycloneDX, Path: cdx},
		},
	}, nil
}

// ErrImageNotFound means the registry has no such image (or denies it).
var ErrImageNotFound = errors.New("trivy: image not found or access denied")

// classify turns Trivy's failure output into a sentinel where it is clear.
func classify(err error) error {
	var se *runner.StepError
	if errors.As(err, &se) {
		// Registry error codes of the OCI distribution spec, as Trivy prints
		// them (upper case), and registry HTTP status lines. Plain "denied"/"not found" would also match local
		// failures (an unreadable DB), which must be retried, not blamed on
		// the image.
		for _, code := range []string{"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "UNAUTHORIZED", "DENIED",
			"404 Not Found", "401 Unauthorized", "403 Forbidden"} {
			if strings.Contains(se.Stderr, code) {
				return fmt.Errorf("%w: %w", ErrImageNotFound, err)
			}
		}
	}
	return fmt.Errorf("trivy: %w", err)
}

// report is the part of Trivy's JSON report CISS reads.
type report struct {
	SchemaVersion int `json:"SchemaVersion"`
	Results       []struct {
		Vulnerabilities []struct {
			VulnerabilityID  string `json:"VulnerabilityID"`
			PkgName          string `json:"PkgName"`
			InstalledVersion string `json:"InstalledVersion"`
			Severity         string `json:"Severity"`
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
			fs = append(fs, Finding{ID: v.VulnerabilityID, Package: v.PkgName, InstalledVersion: v.InstalledVersion, Severity: v.Severity})
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
