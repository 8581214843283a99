package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"ciss.dev/schemas"
)

// jobTiming is one job timed from the client's side.
type jobTiming struct {
	// Done is POST until GET shows the job succeeded; Result the GET of the
	// SARIF report after that; Total both.
	Done, Result, Total time.Duration
	CacheHit            bool
}

// e2eJob submits an interactive image scan, long-polls it to a terminal
// status and fetches its SARIF report.
func e2eJob(ctx context.Context, hc *http.Client, base, image string, cache bool) (jobTiming, error) {
	var t jobTiming
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	body, err := json.Marshal(schemas.JobRequest{
		Type: schemas.JobTypeImageScan, Target: schemas.Target{Image: image}, Lane: schemas.LaneInteractive, Cache: &cache,
	})
	if err != nil {
		return t, err
	}
	t0 := time.Now()
	var job schemas.Job
	code, b, err := call(ctx, hc, http.MethodPost, base+"/v1/jobs", body, "")
	switch {
	case err != nil:
		return t, fmt.Errorf("submit: %w", err)
	case code != http.StatusAccepted:
		return t, fmt.Errorf("submit: HTTP %d: %s", code, b)
	}
	if err := json.Unmarshal(b, &job); err != nil {
		return t, fmt.Errorf("submit: %w", err)
	}
	for !job.Status.Terminal() {
		code, b, err := call(ctx, hc, http.MethodGet, base+"/v1/jobs/"+job.ID+"?wait=30s", nil, "")
		switch {
		case err != nil:
			return t, fmt.Errorf("job %s: %w", job.ID, err)
		case code != http.StatusOK:
			return t, fmt.Errorf("job %s: HTTP %d: %s", job.ID, code, b)
		}
		if err := json.Unmarshal(b, &job); err != nil {
			return t, fmt.Errorf("job %s: %w", job.ID, err)
		}
	}
	t.Done = time.Since(t0)
	if job.Status != schemas.StatusSucceeded {
		return t, fmt.Errorf("job %s %s: %+v", job.ID, job.Status, job.Error)
	}
	t.CacheHit = job.CacheHit
	t1 := time.Now()
	code, b, err = call(ctx, hc, http.MethodGet, base+"/v1/jobs/"+job.ID+"/result", nil, schemas.MediaTypeSARIF)
	t.Result = time.Since(t1)
	t.Total = time.Since(t0)
	switch {
	case err != nil:
		return t, fmt.Errorf("job %s result: %w", job.ID, err)
	case code != http.StatusOK:
		return t, fmt.Errorf("job %s result: HTTP %d: %s", job.ID, code, b)
	case !bytes.Contains(b, []byte(`"2.1.0"`)):
		return t, fmt.Errorf("job %s result: not SARIF 2.1.0 (%d bytes)", job.ID, len(b))
	}
	return t, nil
}

// call does one request and reads the whole response.
func call(ctx context.Context, hc *http.Client, method, url string, body []byte, accept string) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// trivyDirect runs what the worker's Trivy tool runs for one scan (see
// workers/internal/trivy Scan and the local runner): the scan with the same
// flags and the worker's default task timeout, then the SARIF and CycloneDX
// conversions, in a fresh directory that is also HOME and TMPDIR.
func trivyDirect(ctx context.Context, trivy, cacheDir, image, workRoot string) (time.Duration, error) {
	dir, err := os.MkdirTemp(workRoot, "direct-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	native := filepath.Join(dir, "report.json")
	steps := [][]string{
		{"image", "--cache-dir", cacheDir, "--skip-db-update", "--skip-java-db-update", "--offline-scan",
			"--cache-backend", "memory", "--image-src", "remote", "--scanners", "vuln", "--list-all-pkgs",
			"--format", "json", "--output", native, "--quiet", "--timeout", (10 * time.Minute).String(), "--", image},
		{"convert", "--format", "sarif", "--output", filepath.Join(dir, "report.sarif.json"), "--quiet", native},
		{"convert", "--format", "cyclonedx", "--output", filepath.Join(dir, "report.cdx.json"), "--quiet", native},
	}
	t0 := time.Now()
	for _, args := range steps {
		cmd := exec.CommandContext(ctx, trivy, args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("trivy %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
		}
	}
	el := time.Since(t0)
	b, err := os.ReadFile(filepath.Join(dir, "report.sarif.json"))
	if err != nil {
		return 0, err
	}
	if !bytes.Contains(b, []byte(`"2.1.0"`)) {
		return 0, errors.New("trivy convert: not SARIF 2.1.0")
	}
	return el, nil
}

// trivyVersion is the first line of `trivy --version`, for the report.
func trivyVersion(ctx context.Context, trivy string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, trivy, "--version").Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(strings.TrimPrefix(line, "Version:"))
}
