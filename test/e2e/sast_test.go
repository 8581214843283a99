package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

// gitVerifyTag clones repo afresh (fetching tags) and runs plain
// `git verify-tag` with the allowed-signers file; it returns the output.
func gitVerifyTag(t *testing.T, repoURL, user, password, allowed, tag string) (string, error) {
	t.Helper()
	d := t.TempDir()
	git := func(dir string, args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "HOME="+d, "GIT_TERMINAL_PROMPT=0")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	u := strings.Replace(repoURL, "http://", "http://"+user+":"+password+"@", 1)
	out, err := git(d, "clone", "-q", u, "c")
	require.NoError(t, err, out)
	return git(filepath.Join(d, "c"), "-c", "gpg.ssh.allowedSignersFile="+allowed, "verify-tag", "-v", tag)
}

// TestSAST runs sast jobs through the real stack (gateway → dispatcher →
// worker running gosec and Trivy) on the loopback git server's demo
// repository: the commit with a planted credential fails the policy and
// gets no tag; the clean commit gets a signed tag that plain git verifies
// with the allowed signers GET /v1/keys publishes, and the CLI submits sast
// jobs with --repo/--commit.
func TestSAST(t *testing.T) {
	if os.Getenv("CISS_GOSEC") == "" {
		t.Skip("CISS_GOSEC is not set: run `make e2e` (deploy/tools/install-gosec.sh)")
	}
	e := newEnv(t, nil)
	repo := e.s.SASTRepo
	pubs, err := schemas.ParsePublicKeys(must(os.ReadFile(e.s.SigningPublicKeyFile)))
	require.NoError(t, err)

	resp, b := e.admin.do(http.MethodGet, "/v1/keys", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	var keys schemas.Keys
	require.NoError(t, json.Unmarshal(b, &keys))
	require.Contains(t, keys.AllowedSigners, `namespaces="git"`)
	allowed := filepath.Join(t.TempDir(), "allowed_signers")
	require.NoError(t, os.WriteFile(allowed, []byte(keys.AllowedSigners), 0o600))

	bad := e.admin.submit(schemas.JobRequest{Type: schemas.JobTypeSAST, Target: schemas.Target{Repo: repo.URL, Commit: repo.Vulnerable}}, nil)
	done := e.admin.waitDone(bad.ID)
	require.Equal(t, schemas.StatusSucceeded, done.Status, "error: %+v", done.Error)
	require.Equal(t, "sast", done.Tool)
	require.GreaterOrEqual(t, done.Result.Summary.High, 1)
	require.NotNil(t, done.Result.Policy)
	require.False(t, done.Result.Policy.Passed)
	require.Contains(t, done.Result.Policy.Reason, "not tagged")
	require.Nil(t, done.Result.GitTag)
	resp, body := e.admin.result(bad.ID, schemas.MediaTypeSARIF)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.Equal(t, schemas.MediaTypeSARIF, resp.Header.Get("Content-Type"))
	require.Contains(t, string(body), `"ruleId": "G101"`)
	require.Contains(t, string(body), `"ruleId": "github-pat"`, "Trivy's secret scanner ran")
	out, err := gitVerifyTag(t, repo.URL, e.s.Git.User, e.s.Git.Password, allowed, "ciss/sast/"+repo.Vulnerable[:12])
	require.Error(t, err, "the failing commit has no tag: %s", out)

	good := e.admin.submit(schemas.JobRequest{Type: schemas.JobTypeSAST, Target: schemas.Target{Repo: repo.URL, Commit: repo.Clean}}, nil)
	done = e.admin.waitDone(good.ID)
	require.Equal(t, schemas.StatusSucceeded, done.Status, "error: %+v", done.Error)
	require.True(t, done.Result.Policy.Passed, done.Result.Policy.Reason)
	require.NotNil(t, done.Result.GitTag)
	tag := done.Result.GitTag
	rep, ok := done.Result.ReportFor(schemas.FormatSARIF)
	require.True(t, ok)
	out, err = gitVerifyTag(t, repo.URL, e.s.Git.User, e.s.Git.Password, allowed, tag.Name)
	require.NoError(t, err, "git verify-tag: %s", out)
	require.Contains(t, out, "report: "+rep.Digest)
	require.Contains(t, out, "job: "+good.ID)
	_, body = e.admin.result(good.ID, schemas.MediaTypeSARIF)
	require.NoError(t, schemas.VerifyReport(rep, body), "the served report is the one the tag names")
	ev := e.lastTaskResultOf("sast", done.Tasks[0].ID)
	require.NoError(t, schemas.VerifyTaskResult(&ev, pubs...))
	require.Equal(t, tag.Object, ev.Result.GitTag.Object, "the signed result names the tag")

	// Provenance by commit: who vouched for it, with what evidence.
	resp, b = e.admin.do(http.MethodGet, "/v1/provenance?repo="+url.QueryEscape(repo.URL)+"&commit="+repo.Clean, nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	require.Contains(t, string(b), `"name":"`+tag.Name+`"`)
	require.Contains(t, string(b), rep.Digest)

	// The CLI: --repo/--commit, waiting for the SARIF report; the re-run
	// finds the existing tag instead of pushing a second one.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := e.ciss(ctx, "submit", "sast", "--repo", repo.URL, "--commit", repo.Clean, "--no-cache", "--wait", "--output", "sarif")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"version": "2.1.0"`)
}
