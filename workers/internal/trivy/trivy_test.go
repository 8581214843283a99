package trivy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/workers/internal/runner"
)

func TestParseReport(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("testdata", "report.json"))
	require.NoError(t, err)
	fs, err := ParseReport(b)
	require.NoError(t, err)
	require.Equal(t, []Finding{
		{ID: "CVE-2024-5535", Package: "libcrypto3", InstalledVersion: "3.1.4-r5", Severity: "CRITICAL"},
		{ID: "CVE-2024-4741", Package: "libcrypto3", InstalledVersion: "3.1.4-r5", Severity: "HIGH"},
		{ID: "CVE-2024-2511", Package: "libssl3", InstalledVersion: "3.1.4-r5", Severity: "MEDIUM"},
		{ID: "CVE-2024-9143", Package: "libssl3", InstalledVersion: "3.1.4-r5", Severity: "LOW"},
		{ID: "CVE-2024-45337", Package: "golang.org/x/crypto", InstalledVersion: "v0.21.0", Severity: "HIGH"},
		{ID: "GHSA-xxxx-yyyy-zzzz", Package: "example.com/lib", InstalledVersion: "v1.0.0", Severity: "UNKNOWN"},
	}, fs)
	require.Equal(t, schemas.Summary{Critical: 1, High: 2, Medium: 1, Low: 1, Unknown: 1}, Summarize(fs))
}

func TestParseReportClean(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`{"SchemaVersion":2}`,
		`{"SchemaVersion":2,"Results":[]}`,
		`{"SchemaVersion":2,"Results":[{"Target":"alpine","Class":"os-pkgs","Type":"alpine"}]}`,
		`{"SchemaVersion":2,"Results":[{"Target":"x","Vulnerabilities":null}]}`,
	} {
		fs, err := ParseReport([]byte(in))
		require.NoError(t, err, in)
		require.Empty(t, fs, in)
		require.Zero(t, Summarize(fs).Total(), in)
	}
}

func TestParseReportRejects(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"schema version 1":        `{"SchemaVersion":1,"Results":[]}`,
		"schema version 3":        `{"SchemaVersion":3,"Results":[]}`,
		"schema version missing":  `{"Results":[]}`,
		"schema version a string": `{"SchemaVersion":"2"}`,
		"not json":                `FATAL error`,
		"empty":                   ``,
		"array":                   `[]`,
		"truncated":               `{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"VulnerabilityID":"CVE-1"`,
		"results not a list":      `{"SchemaVersion":2,"Results":{}}`,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fs, err := ParseReport([]byte(in))
			require.Error(t, err)
			require.ErrorContains(t, err, "trivy: ")
			require.Nil(t, fs)
		})
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	f := func(sev ...string) []Finding {
		var fs []Finding
		for i, s := range sev {
			fs = append(fs, Finding{ID: "CVE-" + string(rune('a'+i)), Severity: s})
		}
		return fs
	}
	tests := []struct {
		name string
		in   []Finding
		want schemas.Summary
	}{
		{"none", nil, schemas.Summary{}},
		{"each once", f("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"), schemas.Summary{Critical: 1, High: 1, Medium: 1, Low: 1, Unknown: 1}},
		{"many critical", f("CRITICAL", "CRITICAL", "CRITICAL", "LOW"), schemas.Summary{Critical: 3, Low: 1}},
		{"unrecognised is unknown", f("", "NEGLIGIBLE", "high"), schemas.Summary{Unknown: 3}},
	}
	for _, tt := range tests {
		got := Summarize(tt.in)
		require.Equal(t, tt.want, got, tt.name)
		require.Equal(t, len(tt.in), got.Total(), tt.name)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	stepErr := func(stderr string) error {
		return &runner.StepError{Step: "scan", ExitCode: 1, Stderr: stderr}
	}
	tests := []struct {
		name     string
		err      error
		notFound bool
	}{
		{"manifest unknown", stepErr("2025-01-14T09:31:02Z\tFATAL\tFatal error\timage scan error: ... GET https://registry.example.com/v2/team/app/manifests/sha256:9a3b: MANIFEST_UNKNOWN: manifest unknown; unknown tag=1.0\n"), true},
		{"name unknown", stepErr("FATAL unable to inspect the image: NAME_UNKNOWN: repository name not known to registry"), true},
		{"unauthorized", stepErr("FATAL ... UNAUTHORIZED: authentication required"), true},
		{"access denied", stepErr("FATAL ... DENIED: requested access to the resource is denied"), true},
		{"not found", stepErr("FATAL ... 404 Not Found"), true},
		{"wrapped step error", errors.Join(errors.New("spec"), stepErr("MANIFEST_UNKNOWN")), true},
		{"first run without DB", stepErr("FATAL\tFatal error\trun error: init error: DB error: database error: --skip-db-update cannot be specified on the first run"), false},
		{"connection refused", stepErr("FATAL ... dial tcp 127.0.0.1:5000: connect: connection refused"), false},
		{"exit without stderr", stepErr(""), false},
		{"timeout", errors.Join(runner.ErrTimeout), false},
		{"unmapped image", runner.ErrUnmappedImage, false},
		{"cache dir not readable", stepErr("FATAL\tFatal error\tinit error: DB error: failed to open db: open /var/cache/trivy/db/trivy.db: permission denied"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := classify(tt.err)
			require.ErrorIs(t, got, tt.err, "the original error stays in the chain")
			require.Equal(t, tt.notFound, errors.Is(got, ErrImageNotFound))
			var se *runner.StepError
			require.Equal(t, errors.As(tt.err, &se), errors.As(got, &se))
		})
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := New(Config{CacheDir: "/x"})
	require.ErrorContains(t, err, "Config.Runner")
	_, err = New(Config{Runner: &fakeRunner{}})
	require.ErrorContains(t, err, "Config.CacheDir")
	tool, err := New(Config{Runner: &fakeRunner{}, CacheDir: "/x"})
	require.NoError(t, err)
	require.Equal(t, DefaultImage, tool.cfg.Image)
}

// fakeRunner records specs and answers with run. It stands in for the runner
// so the argument and output handling of Scan and Version can be checked
// without a vulnerability DB; the real binary runs in TestRealBinary and in
// test/e2e.
type fakeRunner struct {
	mu    sync.Mutex
	specs []runner.Spec
	run   func(runner.Spec) (runner.Outcome, error)
}

var _ runner.Runner = (*fakeRunner)(nil)

func (f *fakeRunner) Run(_ context.Context, spec runner.Spec) (runner.Outcome, error) {
	f.mu.Lock()
	f.specs = append(f.specs, spec)
	f.mu.Unlock()
	return f.run(spec)
}

func (f *fakeRunner) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.specs)
}

// argAfter returns the argument following flag.
func argAfter(args []string, flag string) string {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}

func TestScan(t *testing.T) {
	t.Parallel()
	report, err := os.ReadFile(filepath.Join("testdata", "report.json"))
	require.NoError(t, err)
	fr := &fakeRunner{run: func(spec runner.Spec) (runner.Outcome, error) {
		var out runner.Outcome
		for _, st := range spec.Steps {
			var content []byte
			switch st.Name {
			case "scan":
				content = report
			default:
				content = []byte(`{"converted":"` + st.Name + `"}`)
			}
			if err := os.WriteFile(argAfter(st.Args, "--output"), content, 0o600); err != nil {
				return out, err
			}
			out.Steps = append(out.Steps, runner.StepResult{Name: st.Name})
		}
		return out, nil
	}}
	tool, err := New(Config{Runner: fr, CacheDir: "/var/cache/trivy", Insecure: true})
	require.NoError(t, err)
	dir := t.TempDir()
	image := "registry.example.com/team/app@sha256:9a3b0f7f6f4a6a0c8f3f4b6c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e"
	scan, err := tool.Scan(t.Context(), image, dir, 2*time.Minute)
	require.NoError(t, err)

	require.Equal(t, schemas.Summary{Critical: 1, High: 2, Medium: 1, Low: 1, Unknown: 1}, scan.Summary)
	require.Len(t, scan.Findings, 6)
	require.Equal(t, []ReportFile{
		{Format: schemas.FormatNative, MediaType: schemas.MediaTypeJSON, Path: filepath.Join(dir, "report.json")},
		{Format: schemas.FormatSARIF, MediaType: schemas.MediaTypeSARIF, Path: filepath.Join(dir, "report.sarif.json")},
		{Format: schemas.FormatCycloneDX, MediaType: schemas.MediaTypeCycloneDX, Path: filepath.Join(dir, "report.cdx.json")},
	}, scan.Reports)

	require.Equal(t, 1, fr.calls())
	spec := fr.specs[0]
	require.Equal(t, dir, spec.Dir)
	require.Equal(t, 2*time.Minute, spec.Timeout)
	require.Len(t, spec.Steps, 3)
	scanStep := spec.Steps[0]
	require.Equal(t, DefaultImage, scanStep.Image)
	require.Equal(t, []string{"trivy"}, scanStep.Command)
	args := scanStep.Args
	require.Equal(t, "image", args[0])
	require.Equal(t, "/var/cache/trivy", argAfter(args, "--cache-dir"))
	require.Equal(t, "2m0s", argAfter(args, "--timeout"))
	require.Equal(t, "json", argAfter(args, "--format"))
	for _, flag := range []string{"--skip-db-update", "--skip-java-db-update", "--offline-scan", "--insecure"} {
		require.Contains(t, args, flag)
	}
	require.Equal(t, []string{"--", image}, args[len(args)-2:], "the image comes last, after --")
	for _, st := range spec.Steps[1:] {
		require.Equal(t, "convert", st.Args[0], st.Name)
		require.Equal(t, filepath.Join(dir, "report.json"), st.Args[len(st.Args)-1], st.Name)
	}
	require.Equal(t, "sarif", argAfter(spec.Steps[1].Args, "--format"))
	require.Equal(t, "cyclonedx", argAfter(spec.Steps[2].Args, "--format"))
}

func TestScanErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		run    func(runner.Spec) (runner.Outcome, error)
		is     error
		isNot  error
		substr string
	}{
		{"image not found", func(runner.Spec) (runner.Outcome, error) {
			return runner.Outcome{}, &runner.StepError{Step: "scan", ExitCode: 1, Stderr: "MANIFEST_UNKNOWN: manifest unknown"}
		}, ErrImageNotFound, nil, "MANIFEST_UNKNOWN"},
		{"timeout", func(runner.Spec) (runner.Outcome, error) {
			return runner.Outcome{}, runner.ErrTimeout
		}, runner.ErrTimeout, ErrImageNotFound, "timed out"},
		{"no report written", func(runner.Spec) (runner.Outcome, error) {
			return runner.Outcome{}, nil
		}, os.ErrNotExist, ErrImageNotFound, "read report"},
		{"report of another schema", func(spec runner.Spec) (runner.Outcome, error) {
			return runner.Outcome{}, os.WriteFile(filepath.Join(spec.Dir, "report.json"), []byte(`{"SchemaVersion":1}`), 0o600)
		}, nil, ErrImageNotFound, "schema version 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tool, err := New(Config{Runner: &fakeRunner{run: tt.run}, CacheDir: "/c"})
			require.NoError(t, err)
			_, err = tool.Scan(t.Context(), "r.example/app@sha256:00", t.TempDir(), 0)
			require.ErrorContains(t, err, tt.substr)
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
			}
			if tt.isNot != nil {
				require.NotErrorIs(t, err, tt.isNot)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	stdout := func(s string) func(runner.Spec) (runner.Outcome, error) {
		return func(spec runner.Spec) (runner.Outcome, error) {
			return runner.Outcome{Steps: []runner.StepResult{{Name: spec.Steps[0].Name, Stdout: []byte(s)}}}, nil
		}
	}
	t.Run("with DB, probed once within the TTL", func(t *testing.T) {
		t.Parallel()
		fr := &fakeRunner{run: stdout(`{"Version":"0.69.0","VulnerabilityDB":{"Version":2,"NextUpdate":"2025-01-15T06:12:34Z","UpdatedAt":"2025-01-14T08:12:34.123+02:00","DownloadedAt":"2025-01-14T07:00:00Z"}}`)}
		tool, err := New(Config{Runner: fr, CacheDir: "/var/cache/trivy"})
		require.NoError(t, err)
		for range 3 {
			v, err := tool.Version(t.Context())
			require.NoError(t, err)
			require.Equal(t, Version{Tool: "0.69.0", DB: "2@2025-01-14T06:12:34Z"}, v)
		}
		require.Equal(t, 1, fr.calls())
		args := fr.specs[0].Steps[0].Args
		require.Equal(t, []string{"version", "--format", "json", "--cache-dir", "/var/cache/trivy"}, args)
	})
	t.Run("probed again after the TTL", func(t *testing.T) {
		t.Parallel()
		fr := &fakeRunner{run: stdout(`{"Version":"0.69.0","VulnerabilityDB":{"Version":2,"UpdatedAt":"2025-01-14T06:12:34Z"}}`)}
		tool, err := New(Config{Runner: fr, CacheDir: "/c", VersionTTL: time.Nanosecond})
		require.NoError(t, err)
		_, err = tool.Version(t.Context())
		require.NoError(t, err)
		_, err = tool.Version(t.Context())
		require.NoError(t, err)
		require.Equal(t, 2, fr.calls())
	})
	t.Run("no DB", func(t *testing.T) {
		t.Parallel()
		fr := &fakeRunner{run: stdout(`{"Version":"0.69.0"}`)}
		tool, err := New(Config{Runner: fr, CacheDir: "/c"})
		require.NoError(t, err)
		_, err = tool.Version(t.Context())
		require.ErrorIs(t, err, ErrNoDB)
		_, err = tool.Version(t.Context())
		require.ErrorIs(t, err, ErrNoDB)
		require.Equal(t, 2, fr.calls(), "a missing DB is not cached: a provisioned DB is seen at once")
	})
	t.Run("undecodable output", func(t *testing.T) {
		t.Parallel()
		tool, err := New(Config{Runner: &fakeRunner{run: stdout(`Version: 0.69.0`)}, CacheDir: "/c"})
		require.NoError(t, err)
		_, err = tool.Version(t.Context())
		require.ErrorContains(t, err, "decode")
	})
	t.Run("runner error", func(t *testing.T) {
		t.Parallel()
		tool, err := New(Config{Runner: &fakeRunner{run: func(runner.Spec) (runner.Outcome, error) {
			return runner.Outcome{}, runner.ErrUnmappedImage
		}}, CacheDir: "/c"})
		require.NoError(t, err)
		_, err = tool.Version(t.Context())
		require.ErrorIs(t, err, runner.ErrUnmappedImage)
	})
}

// TestRealBinary runs the Trivy CLI named by CISS_TRIVY (make unit sets it)
// against an empty cache directory. Scans with a real DB are covered by the
// e2e tests in test/e2e.
func TestRealBinary(t *testing.T) {
	bin := os.Getenv("CISS_TRIVY")
	if bin == "" {
		t.Skip("CISS_TRIVY is not set")
	}
	t.Parallel()
	tool, err := New(Config{
		Runner:   &runner.Local{Images: map[string]string{"aquasec/trivy:*": bin}},
		CacheDir: t.TempDir(),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err = tool.Version(ctx)
	require.ErrorIs(t, err, ErrNoDB)
}
