package cli

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"ciss.dev/gateway/internal/report"
	"ciss.dev/schemas"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create it")
	require.Equal(t, string(want), string(got), "output differs from %s (go test -update rewrites it)", path)
}

func fixedJob() *schemas.Job {
	created := time.Date(2025, 1, 14, 9, 30, 0, 0, time.UTC)
	started, finished := created.Add(2*time.Second), created.Add(9*time.Second)
	return &schemas.Job{
		ID: "0194649e-5a10-7c3e-9b2a-6f1d2c3b4a59", Tenant: "acme", Type: schemas.JobTypeImageScan,
		Target: schemas.Target{Image: "registry.example.com/team/app@sha256:9a3b0f7f6f4a6a0c8f3f4b6c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e"},
		Lane:   schemas.LaneInteractive, Cache: true, Status: schemas.StatusSucceeded,
		Tool: "trivy", ToolVersion: "0.69.0", Attempts: 1,
		Result: &schemas.Result{
			Summary:   schemas.Summary{Critical: 1, High: 2, Medium: 1, Low: 1, Unknown: 1},
			DBVersion: "2@2026-11-01T00:00:00Z",
		},
		CreatedAt: created, UpdatedAt: finished, StartedAt: &started, FinishedAt: &finished,
	}
}

func sarifFindings(t *testing.T) []report.Finding {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "report", "testdata", "trivy.sarif.json"))
	require.NoError(t, err)
	fs, err := report.ParseSARIF(b)
	require.NoError(t, err)
	report.Sort(fs)
	return fs
}

func TestJobTableGolden(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, writeJobTable(&b, fixedJob(), sarifFindings(t), 20))
	golden(t, "job-table.golden", b.Bytes())

	b.Reset()
	require.NoError(t, writeJobTable(&b, fixedJob(), sarifFindings(t), 2))
	golden(t, "job-table-top2.golden", b.Bytes())

	b.Reset()
	clean := fixedJob()
	clean.Result.Summary = schemas.Summary{}
	clean.CacheHit = true
	require.NoError(t, writeJobTable(&b, clean, nil, 20))
	golden(t, "job-table-clean.golden", b.Bytes())
}

func TestStatusGolden(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, writeStatus(&b, fixedJob()))
	failed := fixedJob()
	failed.Status, failed.Result = schemas.StatusFailed, nil
	failed.Error = &schemas.Error{Code: schemas.CodeTargetNotFound, Message: "manifest unknown"}
	b.WriteString("--\n")
	require.NoError(t, writeStatus(&b, failed))
	golden(t, "status.golden", b.Bytes())
}

func TestJobsGolden(t *testing.T) {
	a, q := fixedJob(), fixedJob()
	q.ID, q.Status, q.Result, q.Tool, q.ToolVersion = "0194649e-6b21-7c3e-9b2a-6f1d2c3b4a5a", schemas.StatusQueued, nil, "", ""
	q.CreatedAt = q.CreatedAt.Add(time.Minute)
	var b bytes.Buffer
	require.NoError(t, writeJobsTable(&b, []schemas.Job{*q, *a}))
	golden(t, "jobs.golden", b.Bytes())
}

func TestSummaryGolden(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, writeSummary(&b, fixedJob()))
	golden(t, "summary.golden", b.Bytes())
}

func TestCountAtOrAbove(t *testing.T) {
	s := fixedJob().Result.Summary
	for sev, want := range map[report.Severity]int{
		report.SeverityCritical: 1, report.SeverityHigh: 3, report.SeverityMedium: 4,
		report.SeverityLow: 5, report.SeverityUnknown: 6,
	} {
		require.Equal(t, want, countAtOrAbove(s, sev), sev.String())
	}
}
