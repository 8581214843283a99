package gateway_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ciss.dev/gateway/internal/harbor"
	"ciss.dev/schemas"
	"github.com/stretchr/testify/require"
)

const harborDigest = "sha256:4f1d5d3e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c"

// harborScan is a scan request shaped as Harbor sends it (spec v1.1).
const harborScan = `{
  "registry": {"url": "https://core.harbor.example:8443", "authorization": "Bearer robot-token-SECRET"},
  "artifact": {"repository": "library/app", "digest": "` + harborDigest + `", "tag": "1.2",
               "mime_type": "application/vnd.docker.distribution.manifest.v2+json"}
}`

// decodeStrict decodes an adapter document, refusing fields the spec lacks.
func decodeStrict(t *testing.T, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(v), "%s", b)
}

func harborError(t *testing.T, r *response, status int) string {
	t.Helper()
	require.Equal(t, status, r.StatusCode, "%s", r.body)
	require.Equal(t, harbor.MediaTypeError, r.Header.Get("Content-Type"))
	var doc harbor.ErrorResponse
	decodeStrict(t, r.body, &doc)
	require.NotEmpty(t, doc.Error.Message)
	return doc.Error.Message
}

// complete stores docs (format → document) as the job's reports and marks
// it succeeded, as the dispatcher would.
func (e *env) complete(t *testing.T, tenant, id string, summary schemas.Summary, docs map[string][]byte) {
	t.Helper()
	var reports []schemas.Report
	for _, f := range []struct{ format, mt string }{
		{schemas.FormatNative, schemas.MediaTypeJSON}, {schemas.FormatSARIF, schemas.MediaTypeSARIF},
	} {
		doc, ok := docs[f.format]
		if !ok {
			continue
		}
		sum := sha256.Sum256(doc)
		name := "sha256/" + hex.EncodeToString(sum[:])
		_, err := e.js.obj.PutBytes(context.Background(), name, doc)
		require.NoError(t, err)
		reports = append(reports, schemas.Report{Format: f.format, MediaType: f.mt, Object: name,
			Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(doc))})
	}
	e.js.setJob(t, tenant, id, func(j *schemas.Job) {
		now := time.Now().UTC()
		j.Status, j.Tool, j.ToolVersion, j.FinishedAt = schemas.StatusSucceeded, "trivy", "0.69.0", &now
		j.Result = &schemas.Result{Summary: summary, Reports: reports}
	})
}

func TestHarborMetadata(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.client(e.acmeReader()).do(http.MethodGet, "/api/v1/metadata", "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.body)
	require.Equal(t, harbor.MediaTypeMetadata, r.Header.Get("Content-Type"))
	var md struct {
		Scanner struct {
			Name    string `json:"name"`
			Vendor  string `json:"vendor"`
			Version string `json:"version"`
		} `json:"scanner"`
		Capabilities []struct {
			Consumes []string `json:"consumes_mime_types"`
			Produces []string `json:"produces_mime_types"`
		} `json:"capabilities"`
		Properties map[string]string `json:"properties"`
	}
	decodeStrict(t, r.body, &md)
	require.Equal(t, "CISS", md.Scanner.Name)
	require.NotEmpty(t, md.Scanner.Vendor)
	require.NotEmpty(t, md.Scanner.Version)
	require.Len(t, md.Capabilities, 1)
	require.ElementsMatch(t, []string{"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"},
		md.Capabilities[0].Consumes)
	require.Contains(t, md.Capabilities[0].Produces, "application/vnd.security.vulnerability.report; version=1.1")
	require.Contains(t, md.Capabilities[0].Produces, "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0")
	require.Equal(t, "os-package-vulnerability", md.Properties["harbor.scanner-adapter/scanner-type"])

	harborError(t, e.client(e.nobody()).do(http.MethodGet, "/api/v1/metadata", ""), http.StatusForbidden)
	harborError(t, e.client(e.acme()).do(http.MethodGet, "/api/v1/nope", ""), http.StatusNotFound)
	_, err := e.client(nil).try(http.MethodGet, "/api/v1/metadata", "")
	require.ErrorContains(t, err, "certificate required", "the adapter is behind the same mTLS as the job API")
}

func TestHarborScanToReport(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	r := acme.do(http.MethodPost, "/api/v1/scan", harborScan, "Content-Type", harbor.MediaTypeScanRequest)
	require.Equal(t, http.StatusAccepted, r.StatusCode, "%s", r.body)
	require.Equal(t, harbor.MediaTypeScanResponse, r.Header.Get("Content-Type"))
	var sr struct {
		ID string `json:"id"`
	}
	decodeStrict(t, r.body, &sr)
	require.True(t, schemas.ValidJobID(sr.ID), sr.ID)

	// The scan is an ordinary image-scan job of the caller's tenant, by digest,
	// in the bulk lane, and the registry token went nowhere.
	job, _ := e.js.getJob(t, "acme", sr.ID)
	require.Equal(t, schemas.JobTypeImageScan, job.Type)
	require.Equal(t, "core.harbor.example:8443/library/app@"+harborDigest, job.Target.Image)
	require.Equal(t, schemas.LaneBulk, job.Lane)
	require.Equal(t, schemas.StatusQueued, job.Status)
	require.Equal(t, acmeSPIFFE, job.RequestedBy)
	raw, err := json.Marshal(job)
	require.NoError(t, err)
	require.NotContains(t, string(raw), "SECRET")
	msg, err := e.js.stream.GetLastMsgForSubject(context.Background(), schemas.SubjectJobRequested(schemas.LaneBulk))
	require.NoError(t, err)
	require.Contains(t, string(msg.Data), sr.ID)
	require.NotContains(t, string(msg.Data), "SECRET")

	// The same job through the job API.
	got := acme.do(http.MethodGet, "/v1/jobs/"+sr.ID, "")
	require.Equal(t, http.StatusOK, got.StatusCode)

	report := "/api/v1/scan/" + sr.ID + "/report"
	for _, status := range []schemas.Status{schemas.StatusQueued, schemas.StatusRunning} {
		if status != schemas.StatusQueued {
			e.js.setJob(t, "acme", sr.ID, func(j *schemas.Job) { j.Status = status })
		}
		r = acme.do(http.MethodGet, report, "", "Accept", harbor.MediaTypeVulnReport)
		require.Equal(t, http.StatusFound, r.StatusCode, "%s: %s", status, r.body)
		require.Equal(t, "5", r.Header.Get("Refresh-After"))
		require.Empty(t, r.Header.Get("Location"))
	}

	native, err := os.ReadFile(filepath.Join("internal", "report", "testdata", "trivy.json"))
	require.NoError(t, err)
	e.complete(t, "acme", sr.ID, schemas.Summary{Critical: 1, High: 2, Medium: 1, Low: 1, Unknown: 1},
		map[string][]byte{schemas.FormatNative: native, schemas.FormatSARIF: []byte(`{"version":"2.1.0","runs":[]}`)})

	for _, tc := range []struct{ accept, contentType string }{
		{harbor.MediaTypeVulnReport, harbor.MediaTypeVulnReport},
		{"", harbor.MediaTypeVulnReport},
		{"application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0", harbor.MediaTypeHarborReport},
		{"application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.1", "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.1"},
	} {
		r = acme.do(http.MethodGet, report, "", "Accept", tc.accept)
		require.Equal(t, http.StatusOK, r.StatusCode, "Accept %q: %s", tc.accept, r.body)
		require.Equal(t, tc.contentType, r.Header.Get("Content-Type"))
		var rep struct {
			GeneratedAt time.Time `json:"generated_at"`
			Artifact    struct {
				Repository string `json:"repository"`
				Digest     string `json:"digest"`
			} `json:"artifact"`
			Scanner struct {
				Name, Vendor, Version string
			} `json:"scanner"`
			Severity        string `json:"severity"`
			Vulnerabilities []struct {
				ID          string   `json:"id"`
				Package     string   `json:"package"`
				Version     string   `json:"version"`
				FixVersion  string   `json:"fix_version"`
				Severity    string   `json:"severity"`
				Description string   `json:"description"`
				Links       []string `json:"links"`
				CVSS3Score  string   `json:"cve3_score"`
				CVSS3Vector string   `json:"cvss3_vector"`
			} `json:"vulnerabilities"`
		}
		decodeStrict(t, r.body, &rep)
		require.False(t, rep.GeneratedAt.IsZero())
		require.Equal(t, "library/app", rep.Artifact.Repository)
		require.Equal(t, harborDigest, rep.Artifact.Digest)
		require.Equal(t, "CISS", rep.Scanner.Name)
		require.Equal(t, "Critical", rep.Severity)
		require.Len(t, rep.Vulnerabilities, 6)
		v := rep.Vulnerabilities[0]
		require.Equal(t, "CVE-2024-5535", v.ID)
		require.Equal(t, "libcrypto3", v.Package)
		require.Equal(t, "3.1.4-r5", v.Version)
		require.Equal(t, "3.1.6-r0", v.FixVersion)
		require.Equal(t, "Critical", v.Severity)
		require.Equal(t, "9.1", v.CVSS3Score)
		require.Equal(t, "https://avd.aquasec.com/nvd/cve-2024-5535", v.Links[0])
		var sevs []string
		for _, v := range rep.Vulnerabilities {
			require.Contains(t, []string{"Unknown", "Negligible", "Low", "Medium", "High", "Critical"}, v.Severity)
			sevs = append(sevs, v.Severity)
		}
		require.Equal(t, []string{"Critical", "High", "High", "Medium", "Low", "Unknown"}, sevs)
	}

	r = acme.do(http.MethodGet, report, "", "Accept", harbor.MediaTypeRawReport)
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.Equal(t, harbor.MediaTypeRawReport, r.Header.Get("Content-Type"))
	require.Equal(t, native, r.body)

	harborError(t, acme.do(http.MethodGet, report, "", "Accept", "text/html"), http.StatusBadRequest)
	// Another tenant's scan is as absent as a missing one.
	harborError(t, e.client(e.globex()).do(http.MethodGet, report, ""), http.StatusNotFound)
	harborError(t, acme.do(http.MethodGet, "/api/v1/scan/not-an-id/report", ""), http.StatusNotFound)
}

func TestHarborFailedScan(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	r := acme.do(http.MethodPost, "/api/v1/scan", harborScan, "Content-Type", harbor.MediaTypeScanRequest)
	require.Equal(t, http.StatusAccepted, r.StatusCode, "%s", r.body)
	var sr harbor.ScanResponse
	decodeStrict(t, r.body, &sr)
	e.js.setJob(t, "acme", sr.ID, func(j *schemas.Job) {
		j.Status = schemas.StatusFailed
		j.Error = &schemas.Error{Code: schemas.CodeTargetNotFound, Message: "manifest unknown"}
	})
	msg := harborError(t, acme.do(http.MethodGet, "/api/v1/scan/"+sr.ID+"/report", ""), http.StatusInternalServerError)
	require.Contains(t, msg, "target_not_found")
}

func TestHarborScanRefusals(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	post := func(c *client, body, contentType string) *response {
		return c.do(http.MethodPost, "/api/v1/scan", body, "Content-Type", contentType)
	}
	msg := harborError(t, post(e.client(e.acmeReader()), harborScan, harbor.MediaTypeScanRequest), http.StatusForbidden)
	require.Contains(t, msg, "does not allow submit")
	harborError(t, post(e.client(e.nobody()), harborScan, harbor.MediaTypeScanRequest), http.StatusForbidden)
	harborError(t, post(acme, harborScan, "text/plain"), http.StatusBadRequest)
	harborError(t, post(acme, `{"registry":`, harbor.MediaTypeScanRequest), http.StatusBadRequest)
	for _, tc := range []struct{ body, want string }{
		{strings.Replace(harborScan, `"digest": "`+harborDigest+`", `, "", 1), "artifact.digest is required"},
		{strings.Replace(harborScan, "https://core.harbor.example:8443", "", 1), "registry.url is required"},
		{strings.Replace(harborScan, "https://core.harbor.example:8443", "ftp://x", 1), "not an http(s) URL"},
		{strings.Replace(harborScan, "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.cncf.helm.config.v1+json", 1), "not supported"},
		{strings.Replace(harborScan, harborDigest, "sha256:short", 1), "target.image"},
	} {
		msg := harborError(t, post(acme, tc.body, harbor.MediaTypeScanRequest), http.StatusUnprocessableEntity)
		require.Contains(t, msg, tc.want)
	}
	require.EqualValues(t, 0, e.js.streamMsgs(t), "refused scans publish nothing")
	// Plain application/json is accepted too (curl, tests).
	r := post(acme, harborScan, "application/json")
	require.Equal(t, http.StatusAccepted, r.StatusCode, "%s", r.body)
}
