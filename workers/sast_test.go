package workers_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/workers"
	"ciss.dev/workers/internal/gitsrc"
	"ciss.dev/workers/internal/gitsrc/gitsrctest"
	"ciss.dev/workers/internal/summary"
)

// sastEnv is a worker running the shipped sast tool (deploy/tekton: real
// gosec and Trivy) against a real git server on loopback.
type sastEnv struct {
	*env
	srv     *gitsrctest.GitServer
	repo    gitsrctest.SASTRepo
	allowed string
}

func sastTools(t *testing.T) (trivy, gosec string) {
	t.Helper()
	trivy, gosec = os.Getenv("CISS_TRIVY"), os.Getenv("CISS_GOSEC")
	if trivy == "" || gosec == "" {
		t.Skip("CISS_TRIVY and CISS_GOSEC are not set: run `make unit` (deploy/tools/install-trivy.sh, install-gosec.sh)")
	}
	return trivy, gosec
}

func setupSAST(t *testing.T, policy workers.Policy, signing bool) *sastEnv {
	t.Helper()
	trivy, gosec := sastTools(t)
	e := setup(t)
	dir := t.TempDir()
	srv, err := gitsrctest.NewGitServer(filepath.Join(dir, "srv"))
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	repo, err := srv.NewSASTRepo("app")
	require.NoError(t, err)
	creds, err := srv.CredentialsFile(dir)
	require.NoError(t, err)
	se := &sastEnv{env: e, srv: srv, repo: repo}
	g := &workers.GitConfig{AllowSchemes: []string{"http"}, CredentialsFile: creds, Policy: policy}
	if signing {
		g.SigningKey = filepath.Join(dir, "git-signing-key")
		se.allowed = filepath.Join(dir, "allowed_signers")
		require.NoError(t, gitsrc.GenerateKey(t.Context(), g.SigningKey, se.allowed, "ciss@localhost"))
	}
	tools, err := workers.LoadTools(t.Context(), workers.CatalogConfig{
		Dir:        filepath.Join("..", "deploy", "tekton"),
		Images:     map[string]string{"aquasec/trivy:*": trivy, "securego/gosec:*": gosec},
		Workspaces: map[string]string{"trivy-db": t.TempDir(), "go-cache": goCache(t)},
	})
	require.NoError(t, err)
	var tool workers.Tool
	for _, tl := range tools {
		if tl.Name() == "sast" {
			tool = tl
		}
	}
	require.NotNil(t, tool, "deploy/tekton has a sast tool")
	e.startWorker(t, tool, func(c *workers.Config) { c.Git = g })
	return se
}

func (se *sastEnv) sast(t *testing.T, commit string) schemas.TaskResult {
	t.Helper()
	task := se.newTask(t, schemas.StatusQueued)
	task.ID, task.Tool, task.Type = schemas.TaskID(task.JobID, "sast"), "sast", schemas.JobTypeSAST
	task.Target, task.Params = schemas.Target{Repo: se.repo.URL, Commit: commit}, nil
	se.publishTask(t, task)
	m := se.waitEvent(t, task.ID+".completed")
	var r schemas.TaskResult
	_, err := schemas.Unmarshal(m.Data, schemas.TypeTaskCompleted, &r)
	require.NoError(t, err)
	return r
}

func (se *sastEnv) verifyTag(t *testing.T, tag string) (string, error) {
	t.Helper()
	d := t.TempDir()
	u := strings.Replace(se.repo.URL, "http://", "http://"+se.srv.User+":"+se.srv.Password+"@", 1)
	git := func(dir string, args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "HOME="+d)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := git(d, "clone", "-q", u, "c")
	require.NoError(t, err, out)
	return git(filepath.Join(d, "c"), "-c", "gpg.ssh.allowedSignersFile="+se.allowed, "verify-tag", "-v", tag)
}

// TestSASTTagsOnlyTheCleanCommit runs real gosec and Trivy on a fixture
// repository: the commit with a hard-coded credential fails the policy and
// gets no tag; the clean commit gets a signed tag that plain git verifies,
// whose message carries the SARIF report's digest; a re-run finds the tag.
func TestSASTTagsOnlyTheCleanCommit(t *testing.T) {
	t.Parallel()
	se := setupSAST(t, workers.Policy{}, true)

	bad := se.sast(t, se.repo.Vulnerable)
	require.Equal(t, schemas.OutcomeSucceeded, bad.Outcome, "%+v", bad.Error)
	res := bad.Result
	require.GreaterOrEqual(t, res.Summary.High, 1, "gosec G101 is HIGH")
	require.NotNil(t, res.Policy)
	require.False(t, res.Policy.Passed)
	require.Contains(t, res.Policy.Reason, "not tagged")
	require.Contains(t, strings.Join(res.Policy.Blocking, ","), "G101@main.go:6")
	require.Contains(t, strings.Join(res.Policy.Blocking, ","), "github-pat@token.go:4", "Trivy's secret scanner ran")
	require.GreaterOrEqual(t, res.Summary.Critical, 1, "Trivy rates a GitHub token CRITICAL")
	require.Nil(t, res.GitTag)
	rep, ok := res.ReportFor(schemas.FormatSARIF)
	require.True(t, ok)
	require.Equal(t, schemas.MediaTypeSARIF, rep.MediaType)
	b, err := se.reports.GetBytes(t.Context(), rep.Object)
	require.NoError(t, err)
	fs, err := summary.SARIFFindings(b)
	require.NoError(t, err)
	require.Contains(t, string(b), `"name": "Trivy"`, "the merged report holds Trivy's run too")
	require.NotEmpty(t, fs)
	out, err := se.verifyTag(t, "ciss/sast/"+se.repo.Vulnerable[:12])
	require.Error(t, err, "no tag for the failing commit: %s", out)

	good := se.sast(t, se.repo.Clean)
	require.Equal(t, schemas.OutcomeSucceeded, good.Outcome, "%+v", good.Error)
	require.True(t, good.Result.Policy.Passed, good.Result.Policy.Reason)
	require.NotNil(t, good.Result.GitTag)
	tag := good.Result.GitTag
	require.Equal(t, "ciss/sast/"+se.repo.Clean[:12], tag.Name)
	require.Equal(t, se.repo.Clean, tag.Commit)
	require.True(t, strings.HasPrefix(tag.KeyID, "SHA256:"), tag.KeyID)
	out, err = se.verifyTag(t, tag.Name)
	require.NoError(t, err, out)
	grep, _ := good.Result.ReportFor(schemas.FormatSARIF)
	require.Contains(t, out, "report: "+grep.Digest)
	require.Contains(t, out, "job: "+good.JobID)

	again := se.sast(t, se.repo.Clean)
	require.Equal(t, schemas.OutcomeSucceeded, again.Outcome, "%+v", again.Error)
	require.NotNil(t, again.Result.GitTag)
	require.True(t, again.Result.GitTag.Existing, "a re-run finds the same tag")
	require.Equal(t, tag.Object, again.Result.GitTag.Object)
}

// TestSASTRefusesHostileTargets: targets a worker must not fetch fail the
// job permanently with the reason, before git runs.
func TestSASTRefusesHostileTargets(t *testing.T) {
	t.Parallel()
	se := setupSAST(t, workers.Policy{}, false)
	for _, repo := range []string{"file:///etc", strings.Replace(se.repo.URL, "http://", "http://u:p@", 1), "ext::sh -c id"} {
		task := se.newTask(t, schemas.StatusQueued)
		task.ID, task.Tool, task.Type = schemas.TaskID(task.JobID, "sast"), "sast", schemas.JobTypeSAST
		task.Target, task.Params = schemas.Target{Repo: repo, Commit: se.repo.Clean}, nil
		se.publishTask(t, task)
		m := se.waitEvent(t, task.ID+".completed")
		var r schemas.TaskResult
		_, err := schemas.Unmarshal(m.Data, schemas.TypeTaskCompleted, &r)
		require.NoError(t, err)
		require.Equal(t, schemas.OutcomeFailed, r.Outcome, repo)
		require.Equal(t, schemas.CodeInvalidTarget, r.Error.Code, "%s: %s", repo, r.Error.Message)
	}
}

// goCache is the Go build cache of the toolchain running the tests (warm):
// the sast Task's gosec step shares it as its go-cache workspace.
func goCache(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOCACHE").Output()
	require.NoError(t, err)
	return strings.TrimSpace(string(out))
}
