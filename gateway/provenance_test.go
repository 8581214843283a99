package gateway_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/gateway/internal/api"
	"ciss.dev/schemas"
)

func TestProvenanceByImageDigest(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	digest := "sha256:" + strings.Repeat("ab", 32)
	other := "sha256:" + strings.Repeat("cd", 32)
	finish := func(body string, d string, signed bool) schemas.Job {
		j := acme.submit(body)
		e.js.setJob(t, j.Tenant, j.ID, func(j *schemas.Job) {
			now := time.Now().UTC()
			j.Status, j.Tool, j.ToolVersion, j.FinishedAt = schemas.StatusSucceeded, "trivy", "0.69.0", &now
			j.Result = &schemas.Result{ImageDigest: d, Reports: []schemas.Report{{Format: "sarif", MediaType: schemas.MediaTypeSARIF,
				Object: "sha256/" + strings.Repeat("0", 64), Digest: "sha256:" + strings.Repeat("0", 64), Size: 2}}}
			if signed {
				j.Result.Policy = &schemas.PolicyDecision{Passed: true, Threshold: "HIGH", Reason: "ok"}
				j.Result.ImageSignature = &schemas.ImageSignature{Signature: "registry.example:5000/app/web:sha256-ab.sig", KeyID: "sha256:k"}
				j.Result.Signature = &schemas.Envelope{PayloadType: schemas.PayloadTypeInToto, Payload: "e30=", Signatures: []schemas.EnvelopeSignature{{KeyID: "sha256:k", Sig: "AA=="}}}
			}
		})
		return j
	}
	byTag := finish(`{"type":"image-scan","target":{"image":"registry.example:5000/app/web:1.2"}}`, digest, true)
	byDigest := finish(`{"type":"image-scan","target":{"image":"registry.example:5000/app/web@`+digest+`"}}`, digest, false)
	finish(`{"type":"image-scan","target":{"image":"registry.example:5000/app/web:1.3"}}`, other, true)    // other digest
	finish(`{"type":"image-scan","target":{"image":"registry.example:5000/app/other:1.2"}}`, digest, true) // other repo
	globex := e.client(e.globex())
	globex.submit(`{"type":"image-scan","target":{"image":"registry.example:5000/app/web:1.2"}}`) // other tenant

	q := "/v1/provenance?image=" + url.QueryEscape("registry.example:5000/app/web@"+digest)
	r := acme.do(http.MethodGet, q, "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.body)
	var p api.ArtifactProvenance
	require.NoError(t, json.Unmarshal(r.body, &p))
	require.Equal(t, digest, p.Digest)
	require.Len(t, p.Records, 2)
	ids := []string{p.Records[0].JobID, p.Records[1].JobID}
	require.ElementsMatch(t, []string{byTag.ID, byDigest.ID}, ids)
	for _, rec := range p.Records {
		if rec.JobID == byTag.ID {
			require.Equal(t, []string{"sha256:k"}, rec.SignedBy)
			require.NotNil(t, rec.ImageSignature)
			require.True(t, rec.Policy.Passed)
		}
		require.Equal(t, "0.69.0", rec.ToolVersion)
		require.Len(t, rec.Reports, 1)
	}

	// Another tenant sees nothing about acme's image.
	r = globex.do(http.MethodGet, q, "")
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.NoError(t, json.Unmarshal(r.body, &p))
	require.Empty(t, p.Records)

	for _, bad := range []string{"", "?image=registry.example:5000/app/web:1.2", "?image=registry.example:5000/app/web@sha256:abc",
		"?image=" + url.QueryEscape("a b@"+digest), "?repo=https://git.example/x&commit=" + strings.Repeat("a", 39),
		"?repo=" + url.QueryEscape("https://u:p@git.example/x") + "&commit=" + strings.Repeat("a", 40), "?commit=" + strings.Repeat("a", 40),
		"?repo=https://git.example/x&commit=" + strings.Repeat("a", 40) + "&image=" + url.QueryEscape("registry.example:5000/app/web@"+digest)} {
		acme.do(http.MethodGet, "/v1/provenance"+bad, "").problem(t, http.StatusBadRequest, "invalid-parameter")
	}
	e.client(e.nobody()).do(http.MethodGet, q, "").problem(t, http.StatusForbidden, "forbidden")
}

// TestProvenanceByCommit lists the tenant's sast jobs of one commit with
// their signed tags.
func TestProvenanceByCommit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	acme := e.client(e.acme())
	commit := strings.Repeat("ab", 20)
	repo := "https://git.example.com/acme/app.git"
	finish := func(body string, tagged bool) schemas.Job {
		j := acme.submit(body)
		e.js.setJob(t, j.Tenant, j.ID, func(j *schemas.Job) {
			now := time.Now().UTC()
			j.Status, j.Tool, j.ToolVersion, j.FinishedAt = schemas.StatusSucceeded, "sast", "gosec-2.22.8+trivy-0.69.0", &now
			j.Result = &schemas.Result{Reports: []schemas.Report{{Format: "sarif", MediaType: schemas.MediaTypeSARIF,
				Object: "sha256/" + strings.Repeat("0", 64), Digest: "sha256:" + strings.Repeat("0", 64), Size: 2}}}
			if tagged {
				j.Result.Policy = &schemas.PolicyDecision{Passed: true, Threshold: "HIGH", Reason: "ok"}
				j.Result.GitTag = &schemas.GitTag{Name: "ciss/sast/" + commit[:12], Object: strings.Repeat("1", 40), Commit: commit, Repo: repo, KeyID: "SHA256:x"}
			}
		})
		return j
	}
	tagged := finish(`{"type":"sast","target":{"repo":"`+repo+`","commit":"`+commit+`"}}`, true)
	finish(`{"type":"sast","target":{"repo":"`+repo+`","commit":"`+strings.Repeat("cd", 20)+`"}}`, true) // other commit
	finish(`{"type":"sast","target":{"repo":"https://git.example.com/acme/other.git","commit":"`+commit+`"}}`, true)
	q := "/v1/provenance?repo=" + url.QueryEscape(repo) + "&commit=" + commit
	r := acme.do(http.MethodGet, q, "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.body)
	var p api.ArtifactProvenance
	require.NoError(t, json.Unmarshal(r.body, &p))
	require.Equal(t, repo, p.Repo)
	require.Equal(t, commit, p.Commit)
	require.Len(t, p.Records, 1)
	require.Equal(t, tagged.ID, p.Records[0].JobID)
	require.NotNil(t, p.Records[0].GitTag)
	require.Equal(t, "ciss/sast/"+commit[:12], p.Records[0].GitTag.Name)
	r = e.client(e.globex()).do(http.MethodGet, q, "")
	require.NoError(t, json.Unmarshal(r.body, &p))
	require.Empty(t, p.Records, "another tenant sees nothing")
}
