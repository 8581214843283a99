package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/test/fixture"
	"ciss.dev/test/stack"
)

// TestAddToolByDroppingTaskAndManifest adds a second tool with no code
// change: a Tekton Task and a tool manifest dropped into the catalog
// directory, and a routing line making it the image-scan primary. The new tool
// (Trivy limited to HIGH and CRITICAL, summarised from its SARIF) answers the
// next job.
func TestAddToolByDroppingTaskAndManifest(t *testing.T) {
	root, err := stack.RepoRoot()
	require.NoError(t, err)
	catalog := t.TempDir()
	shipped, err := filepath.Glob(filepath.Join(root, "deploy", "tekton", "*.yaml"))
	require.NoError(t, err)
	for _, f := range shipped {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		writeFile(t, catalog, filepath.Base(f), b)
	}
	scanTask, err := os.ReadFile(filepath.Join(root, "deploy", "tekton", "trivy-image-scan.yaml"))
	require.NoError(t, err)
	severe := strings.Replace(string(scanTask), "name: ciss-trivy-image-scan", "name: ciss-trivy-severe-scan", 1)
	severe = strings.Replace(severe, "        - --scanners=vuln\n", "        - --scanners=vuln\n        - --severity=HIGH,CRITICAL\n", 1)
	require.Contains(t, severe, "--severity=HIGH,CRITICAL")
	writeFile(t, catalog, "trivy-severe-scan.yaml", []byte(severe))
	writeFile(t, catalog, "trivy-severe.tool.yaml", []byte(`apiVersion: ciss.dev/v1
kind: Tool
name: trivy-severe
task: ciss-trivy-severe-scan
versionTask: ciss-trivy-version
jobTypes: [image-scan]
params:
  image: $(target.image)
workspaces:
  reports: {output: true}
  trivy-db: {from: trivy-db}
reports:
  - {format: sarif, mediaType: application/sarif+json, path: report.sarif.json, summary: sarif}
  - {format: native, mediaType: application/json, path: report.json}
`))
	routing := writeFile(t, t.TempDir(), "routing.yaml", []byte(`version: 1
tools:
  - {name: trivy, job_types: [image-scan]}
  - {name: trivy-severe, job_types: [image-scan]}
routes:
  - {job_type: image-scan, primary: trivy-severe}
`))
	e := newEnvConfig(t, stack.Config{TasksDir: catalog, RoutingFile: routing})

	j := e.admin.waitDone(e.admin.submit(scan(e.s.Images.Vulnerable), nil).ID)
	require.Equal(t, schemas.StatusSucceeded, j.Status, "%+v", j.Error)
	require.Equal(t, "trivy-severe", j.Tool)
	var severeCount int
	for _, f := range fixture.VulnerableFindings() {
		if f.Severity == "HIGH" || f.Severity == "CRITICAL" {
			severeCount++
		}
	}
	require.Equal(t, schemas.Summary{Critical: 1, High: 1}, j.Result.Summary)
	require.Equal(t, severeCount, j.Result.Summary.Total())
	resp, b := e.admin.result(j.ID, schemas.MediaTypeSARIF)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var doc struct {
		Runs []struct {
			Results []struct {
				RuleID string `json:"ruleId"`
			} `json:"results"`
		} `json:"runs"`
	}
	require.NoError(t, json.Unmarshal(b, &doc))
	require.Len(t, doc.Runs[0].Results, severeCount)
	resp, _ = e.admin.result(j.ID, schemas.MediaTypeCycloneDX)
	require.Equal(t, http.StatusNotAcceptable, resp.StatusCode, "the new tool's manifest offers no CycloneDX")
}
