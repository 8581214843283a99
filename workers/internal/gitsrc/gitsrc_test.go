package gitsrc_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/workers/internal/gitsrc"
	"ciss.dev/workers/internal/gitsrc/gitsrctest"
)

type env struct {
	srv     *gitsrctest.GitServer
	repo    gitsrctest.SASTRepo
	creds   string
	key     string
	allowed string
	dir     string
}

func setup(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	srv, err := gitsrctest.NewGitServer(filepath.Join(dir, "srv"))
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	repo, err := srv.NewSASTRepo("app")
	require.NoError(t, err)
	creds, err := srv.CredentialsFile(dir)
	require.NoError(t, err)
	key := filepath.Join(dir, "keys", "git-signing-key")
	allowed := filepath.Join(dir, "keys", "allowed_signers")
	require.NoError(t, gitsrc.GenerateKey(t.Context(), key, allowed, "ciss@localhost"))
	return &env{srv: srv, repo: repo, creds: creds, key: key, allowed: allowed, dir: dir}
}

func (e *env) client(t *testing.T, mod func(*gitsrc.Config)) *gitsrc.Client {
	t.Helper()
	cfg := gitsrc.Config{AllowSchemes: []string{"http"}, CredentialsFile: e.creds, SigningKey: e.key}
	if mod != nil {
		mod(&cfg)
	}
	c, err := gitsrc.New(cfg, t.TempDir())
	require.NoError(t, err)
	return c
}

// git runs plain git as a verifier would: its own config, no CISS code.
func git(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "HOME="+dir, "GIT_TERMINAL_PROMPT=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// clone makes a fresh clone that fetches the server's tags.
func (e *env) clone(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	u := strings.Replace(e.repo.URL, "http://", "http://"+e.srv.User+":"+e.srv.Password+"@", 1)
	out, err := git(t, d, "clone", "-q", u, "c")
	require.NoError(t, err, out)
	return filepath.Join(d, "c")
}

func TestFetchExactCommit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.client(t, nil)
	for _, tc := range []struct {
		commit, want, notWant string
	}{{e.repo.Vulnerable, "dbPassword", "Getenv"}, {e.repo.Clean, "Getenv", "dbPassword"}} {
		dir := filepath.Join(t.TempDir(), "src")
		require.NoError(t, c.Fetch(t.Context(), e.repo.URL, tc.commit, dir))
		b, err := os.ReadFile(filepath.Join(dir, "main.go"))
		require.NoError(t, err)
		require.Contains(t, string(b), tc.want)
		require.NotContains(t, string(b), tc.notWant)
	}
}

func TestFetchRefuses(t *testing.T) {
	t.Parallel()
	e := setup(t)
	httpsOnly := e.client(t, func(c *gitsrc.Config) { c.AllowSchemes = nil })
	noCreds := e.client(t, func(c *gitsrc.Config) { c.CredentialsFile = "" })
	c := e.client(t, nil)
	withCreds := strings.Replace(e.repo.URL, "http://", "http://"+e.srv.User+":"+e.srv.Password+"@", 1)
	for _, tc := range []struct {
		name         string
		c            *gitsrc.Client
		repo, commit string
		want         error
		msg          string
	}{
		{"scheme not allowed", httpsOnly, e.repo.URL, e.repo.Clean, gitsrc.ErrRefused, "not allowed"},
		{"credentials from the requester", c, withCreds, e.repo.Clean, gitsrc.ErrRefused, "credentials"},
		{"transport helper", c, "ext::sh -c touch% /tmp/pwned", e.repo.Clean, gitsrc.ErrRefused, ""},
		{"option injection", c, "--upload-pack=touch /tmp/pwned", e.repo.Clean, gitsrc.ErrRefused, ""},
		{"file scheme not allowed", c, "file:///etc", e.repo.Clean, gitsrc.ErrRefused, "not allowed"},
		{"short commit", c, e.repo.URL, e.repo.Clean[:12], gitsrc.ErrRefused, "full SHA"},
		{"unknown commit", c, e.repo.URL, strings.Repeat("ab", 20), gitsrc.ErrNotFound, ""},
		{"no worker credentials", noCreds, e.repo.URL, e.repo.Clean, nil, "could not read Username"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Fetch(t.Context(), tc.repo, tc.commit, filepath.Join(t.TempDir(), "src"))
			require.Error(t, err)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			}
			require.ErrorContains(t, err, tc.msg)
		})
	}
}

func TestSignedTagVerifiesWithGit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.client(t, nil)
	ctx := t.Context()
	src := filepath.Join(t.TempDir(), "src")
	require.NoError(t, c.Fetch(ctx, e.repo.URL, e.repo.Clean, src))
	msg := "CISS SAST passed\n\njob: j1\nreport: sha256:" + strings.Repeat("1", 64) + "\n"
	tag, err := c.TagAndPush(ctx, src, e.repo.Clean, msg, reportLine(msg))
	require.NoError(t, err)
	require.Equal(t, "ciss/sast/"+e.repo.Clean[:12], tag.Name)
	require.False(t, tag.Existing)

	clone := e.clone(t)
	out, err := git(t, clone, "-c", "gpg.ssh.allowedSignersFile="+e.allowed, "verify-tag", "-v", tag.Name)
	require.NoError(t, err, out)
	require.Contains(t, out, `Good "git" signature for ciss@localhost`)
	out, err = git(t, clone, "rev-parse", tag.Name+"^{commit}")
	require.NoError(t, err)
	require.Equal(t, e.repo.Clean, strings.TrimSpace(out))
	out, err = git(t, clone, "cat-file", "tag", tag.Name)
	require.NoError(t, err)
	require.Contains(t, out, "report: sha256:"+strings.Repeat("1", 64))

	t.Run("re-run is idempotent", func(t *testing.T) {
		src2 := filepath.Join(t.TempDir(), "src")
		require.NoError(t, c.Fetch(ctx, e.repo.URL, e.repo.Clean, src2))
		again, err := c.TagAndPush(ctx, src2, e.repo.Clean, strings.Replace(msg, "job: j1", "job: j2", 1), reportLine(msg))
		require.NoError(t, err)
		require.True(t, again.Existing)
		require.Equal(t, tag.Object, again.Object)
		other := strings.Replace(msg, "1111", "2222", 1)
		_, err = c.TagAndPush(ctx, src2, e.repo.Clean, other, reportLine(other))
		require.ErrorIs(t, err, gitsrc.ErrTagConflict, "another report for the same commit never replaces the tag")
	})

	t.Run("a wrong key fails verification", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other-key")
		require.NoError(t, gitsrc.GenerateKey(ctx, other, other+".allowed", "ciss@localhost"))
		out, err := git(t, clone, "-c", "gpg.ssh.allowedSignersFile="+other+".allowed", "verify-tag", tag.Name)
		require.Error(t, err, out)
	})
}

// TestTamperedTagsFailVerification forges tags on the server the way an
// attacker with push access could: re-signed with another key, or with the
// message changed and the old signature kept. Plain git must reject both.
func TestTamperedTagsFailVerification(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.client(t, nil)
	ctx := t.Context()
	src := filepath.Join(t.TempDir(), "src")
	require.NoError(t, c.Fetch(ctx, e.repo.URL, e.repo.Clean, src))
	msg := "CISS SAST passed\n\nreport: sha256:" + strings.Repeat("3", 64) + "\n"
	tag, err := c.TagAndPush(ctx, src, e.repo.Clean, msg, reportLine(msg))
	require.NoError(t, err)
	bare := filepath.Join(e.srv.Root, "app.git")

	// Changed message, signature kept.
	body, err := git(t, bare, "cat-file", "tag", tag.Name)
	require.NoError(t, err)
	forged := strings.Replace(body, strings.Repeat("3", 64), strings.Repeat("4", 64), 1)
	cmd := exec.Command("git", "mktag")
	cmd.Dir, cmd.Stdin = bare, strings.NewReader(forged)
	obj, err := cmd.Output()
	require.NoError(t, err)
	out, err := git(t, bare, "update-ref", "refs/tags/"+tag.Name, strings.TrimSpace(string(obj)))
	require.NoError(t, err, out)
	clone := e.clone(t)
	out, err = git(t, clone, "cat-file", "tag", tag.Name)
	require.NoError(t, err)
	require.Contains(t, out, strings.Repeat("4", 64), "the clone got the forged tag")
	out, err = git(t, clone, "-c", "gpg.ssh.allowedSignersFile="+e.allowed, "verify-tag", tag.Name)
	require.Error(t, err, "a changed message must not verify: %s", out)

	// Re-pushed, signed with another key.
	other := filepath.Join(t.TempDir(), "other-key")
	require.NoError(t, gitsrc.GenerateKey(ctx, other, other+".allowed", "ciss@localhost"))
	out, err = git(t, clone, "-c", "gpg.format=ssh", "-c", "user.signingkey="+other, "-c", "user.name=CISS", "-c", "user.email=ciss@localhost",
		"tag", "-f", "-s", "-m", msg, tag.Name, e.repo.Clean)
	require.NoError(t, err, out)
	out, err = git(t, clone, "push", "-f", "origin", "refs/tags/"+tag.Name)
	require.NoError(t, err, out)
	clone2 := e.clone(t)
	out, err = git(t, clone2, "-c", "gpg.ssh.allowedSignersFile="+e.allowed, "verify-tag", tag.Name)
	require.Error(t, err, "a tag signed with another key must not verify: %s", out)

	// CISS itself refuses to overwrite or accept the forged tag on a re-run.
	_, err = c.TagAndPush(ctx, src, e.repo.Clean, msg, reportLine(msg))
	require.ErrorIs(t, err, gitsrc.ErrTagConflict, "a tag naming the same report but signed with another key is not taken for CISS's")
	_, err = c.TagAndPush(ctx, src, e.repo.Clean, "CISS SAST passed\n\nreport: sha256:"+strings.Repeat("5", 64)+"\n", "report: sha256:"+strings.Repeat("5", 64))
	require.ErrorIs(t, err, gitsrc.ErrTagConflict)
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []gitsrc.Config{{AllowSchemes: []string{"ssh"}}, {TagPrefix: "ciss/../x/"}, {TagPrefix: "-x"}, {TagPrefix: "a b/"}} {
		_, err := gitsrc.New(cfg, t.TempDir())
		require.Error(t, err, "%+v", cfg)
	}
}

func reportLine(msg string) string {
	for _, l := range strings.Split(msg, "\n") {
		if strings.HasPrefix(l, "report: ") {
			return l
		}
	}
	return ""
}
