package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/test/stack"
)

// cosignPath is the cosign CLI the project installs (deploy/tools/install-cosign.sh).
func cosignPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("CISS_COSIGN")
	if p == "" {
		t.Skip("CISS_COSIGN is not set: run `make e2e` (it builds cosign with deploy/tools/install-cosign.sh)")
	}
	return p
}

// cosign runs the cosign CLI offline (no Rekor, no TUF) with a private HOME.
func cosign(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := cosignPath(t)
	home := t.TempDir()
	root := writeFile(t, home, "trusted_root.json", []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`))
	full := append([]string{args[0], "--insecure-ignore-tlog", "--allow-insecure-registry", "--trusted-root", root}, args[1:]...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Env = append(os.Environ(), "HOME="+home, "TUF_ROOT="+filepath.Join(home, "tuf"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// lastTaskResult reads the newest task-completed event of the trivy tool,
// as an event-stream consumer would.
func (e *env) lastTaskResult(taskID string) schemas.TaskResult {
	e.t.Helper()
	return e.lastTaskResultOf("trivy", taskID)
}

// lastTaskResultOf reads the newest task-completed event of a tool.
func (e *env) lastTaskResultOf(tool, taskID string) schemas.TaskResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.js.Stream(ctx, schemas.StreamResults)
	require.NoError(e.t, err)
	m, err := st.GetLastMsgForSubject(ctx, schemas.SubjectResultCompleted(tool))
	require.NoError(e.t, err)
	var r schemas.TaskResult
	_, err = schemas.Unmarshal(m.Data, schemas.TypeTaskCompleted, &r)
	require.NoError(e.t, err)
	require.Equal(e.t, taskID, r.TaskID)
	return r
}

// TestSignedOutcomes: a clean image passes the dev policy and ends with a
// cosign signature and vuln attestation the cosign CLI verifies with the key
// GET /v1/keys publishes; the vulnerable image is not signed and the result
// says why; every result event verifies, and tampered ones do not.
func TestSignedOutcomes(t *testing.T) {
	cosignPath(t)
	e := newEnv(t, nil)

	resp, b := e.admin.do(http.MethodGet, "/v1/keys", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	var keys schemas.Keys
	require.NoError(t, json.Unmarshal(b, &keys))
	require.Len(t, keys.Keys, 1)
	devPub, err := os.ReadFile(e.s.SigningPublicKeyFile)
	require.NoError(t, err)
	pubs, err := schemas.ParsePublicKeys(devPub)
	require.NoError(t, err)
	require.Equal(t, must(schemas.KeyIDOf(pubs[0])), keys.Keys[0].ID)
	pubFile := writeFile(t, t.TempDir(), "cosign.pub", []byte(keys.Keys[0].PEM))

	job := e.admin.submit(noCache(scan(e.s.Images.Clean)), nil)
	done := e.admin.waitDone(job.ID)
	require.Equal(t, schemas.StatusSucceeded, done.Status, "error: %+v", done.Error)
	res := done.Result
	require.NotNil(t, res.Policy)
	require.True(t, res.Policy.Passed, res.Policy.Reason)
	require.NotNil(t, res.ImageSignature, "a passing image is signed")
	require.Equal(t, keys.Keys[0].ID, res.ImageSignature.KeyID)
	require.NotNil(t, res.Signature, "the job's result document is signed")

	out, err := cosign(t, "verify", "--key", pubFile, e.s.Images.Clean)
	require.NoError(t, err, "cosign verify: %s", out)
	out, err = cosign(t, "verify-attestation", "--key", pubFile, "--type", "vuln", e.s.Images.Clean)
	require.NoError(t, err, "cosign verify-attestation: %s", out)

	ev := e.lastTaskResult(done.Tasks[0].ID)
	require.NoError(t, schemas.VerifyTaskResult(&ev, pubs...))
	for _, rep := range ev.Result.Reports {
		resp, body := e.admin.result(job.ID, rep.MediaType)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.NoError(t, schemas.VerifyReport(rep, body), rep.Format)
	}
	tampered := ev
	tr := *ev.Result
	tr.Summary.Critical++
	tampered.Result = &tr
	require.ErrorIs(t, schemas.VerifyTaskResult(&tampered, pubs...), schemas.ErrStatementMismatch)

	t.Run("provenance", func(t *testing.T) {
		resp, b := e.admin.do(http.MethodGet, "/v1/provenance?image="+url.QueryEscape(e.s.Images.Clean), nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
		var p struct {
			Records []struct {
				JobID          string                  `json:"job_id"`
				ToolVersion    string                  `json:"tool_version"`
				Reports        []schemas.Report        `json:"reports"`
				ImageSignature *schemas.ImageSignature `json:"image_signature"`
				SignedBy       []string                `json:"signed_by"`
			} `json:"records"`
		}
		require.NoError(t, json.Unmarshal(b, &p))
		require.NotEmpty(t, p.Records)
		var found bool
		for _, r := range p.Records {
			if r.JobID == job.ID {
				found = true
				require.Equal(t, "0.69.0", r.ToolVersion)
				require.Equal(t, done.Result.Reports, r.Reports)
				require.Equal(t, []string{keys.Keys[0].ID}, r.SignedBy)
				require.NotNil(t, r.ImageSignature)
			}
		}
		require.True(t, found, "the signing job is in the image's provenance: %s", b)
	})

	t.Run("vulnerable image is not signed", func(t *testing.T) {
		job := e.admin.submit(noCache(scan(e.s.Images.Vulnerable)), nil)
		done := e.admin.waitDone(job.ID)
		require.Equal(t, schemas.StatusSucceeded, done.Status, "error: %+v", done.Error)
		require.NotNil(t, done.Result.Policy)
		require.False(t, done.Result.Policy.Passed)
		require.NotEmpty(t, done.Result.Policy.Blocking)
		require.Contains(t, done.Result.Policy.Reason, "not signed")
		require.Nil(t, done.Result.ImageSignature)
		out, err := cosign(t, "verify", "--key", pubFile, e.s.Images.Vulnerable)
		require.Error(t, err, "an image above the threshold must carry no signature: %s", out)
		ev := e.lastTaskResult(done.Tasks[0].ID)
		require.NoError(t, schemas.VerifyTaskResult(&ev, pubs...), "the failing verdict is signed too")
	})

	t.Run("signing overhead", func(t *testing.T) {
		// Job time with signing vs the same jobs minus the time the worker
		// spent signing (its ciss_worker_sign_seconds histogram), same run.
		signedBefore := signSeconds(t, e.s)
		var total time.Duration
		const n = 5
		for range n {
			job := e.admin.submit(noCache(scan(e.s.Images.Clean)), nil)
			done := e.admin.waitDone(job.ID)
			require.Equal(t, schemas.StatusSucceeded, done.Status)
			require.NotNil(t, done.Result.ImageSignature)
			total += done.FinishedAt.Sub(*done.StartedAt)
		}
		signing := time.Duration((signSeconds(t, e.s) - signedBefore) * float64(time.Second))
		require.Positive(t, signing)
		t.Logf("signing overhead: %d clean-image scans, mean job %s, mean signing (image signature + vuln attestation + result envelope) %s, ratio signed/unsigned %.3f",
			n, total/n, signing/n, float64(total)/float64(total-signing))
	})
}

var signSumRE = regexp.MustCompile(`(?m)^ciss_worker_sign_seconds_sum\{what="(?:image|result)"\} ([0-9.e+-]+)$`)

// signSeconds is the worker's total time spent signing so far.
func signSeconds(t *testing.T, s *stack.Stack) float64 {
	t.Helper()
	resp, err := http.Get(s.AdminURL(stack.Worker) + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var sum float64
	for _, m := range signSumRE.FindAllStringSubmatch(string(b), -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		require.NoError(t, err)
		sum += v
	}
	return sum
}

// TestSBOM: an sbom job of the clean image yields a CycloneDX 1.5+ document,
// served as application/vnd.cyclonedx+json, whose digest is the signed
// result's, and attached to the image as a `cyclonedx` attestation the cosign
// CLI verifies.
func TestSBOM(t *testing.T) {
	cosignPath(t)
	e := newEnv(t, nil)
	pubFile := e.s.SigningPublicKeyFile
	pubs, err := schemas.ParsePublicKeys(must(os.ReadFile(pubFile)))
	require.NoError(t, err)

	job := e.admin.submit(schemas.JobRequest{Type: schemas.JobTypeSBOM, Target: schemas.Target{Image: e.s.Images.Clean}}, nil)
	done := e.admin.waitDone(job.ID)
	require.Equal(t, schemas.StatusSucceeded, done.Status, "error: %+v", done.Error)
	require.Equal(t, "trivy-sbom", done.Tool)
	rep, ok := done.Result.ReportFor(schemas.FormatCycloneDX)
	require.True(t, ok)

	resp, body := e.admin.result(job.ID, schemas.MediaTypeCycloneDX)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.Equal(t, schemas.MediaTypeCycloneDX, resp.Header.Get("Content-Type"))
	require.NoError(t, schemas.VerifyReport(rep, body))
	var bom struct {
		BOMFormat   string `json:"bomFormat"`
		SpecVersion string `json:"specVersion"`
		Metadata    struct {
			Component struct {
				Name string `json:"name"`
			} `json:"component"`
		} `json:"metadata"`
		Components []struct {
			Name    string `json:"name"`
			Version string `json:"version"`
			PURL    string `json:"purl"`
		} `json:"components"`
	}
	require.NoError(t, json.Unmarshal(body, &bom))
	require.Equal(t, "CycloneDX", bom.BOMFormat)
	require.Contains(t, []string{"1.5", "1.6", "1.7"}, bom.SpecVersion)
	var names []string
	for _, c := range bom.Components {
		names = append(names, c.Name)
	}
	require.Contains(t, names, "busybox", "the SBOM lists the image's packages: %v", names)

	ev := e.lastTaskResultOf("trivy-sbom", done.Tasks[0].ID)
	require.NoError(t, schemas.VerifyTaskResult(&ev, pubs...))
	require.NotNil(t, done.Result.ImageSignature)
	require.Equal(t, []string{schemas.PredicateTypeCycloneDX}, done.Result.ImageSignature.PredicateTypes)

	out, err := cosign(t, "verify-attestation", "--key", pubFile, "--type", "cyclonedx", e.s.Images.Clean)
	require.NoError(t, err, "cosign verify-attestation --type cyclonedx: %s", out)
	out, err = cosign(t, "verify-attestation", "--key", pubFile, "--type", "cyclonedx", e.s.Images.Vulnerable)
	require.Error(t, err, "no SBOM was attached to the other image: %s", out)
}
