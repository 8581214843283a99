package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

// secrets writes one secret file per name into a temporary directory; the
// content is the name repeated to a valid length.
func secrets(t *testing.T, names ...string) (dir string, values map[string]string) {
	t.Helper()
	dir = t.TempDir()
	values = map[string]string{}
	for _, n := range names {
		v := fmt.Sprintf("%s-secret-%032d", n, len(n))
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte(v+"\n"), 0o600))
		values[n] = v
	}
	return dir, values
}

func TestConfigLookup(t *testing.T) {
	t.Parallel()
	dir, v := secrets(t, "gh-default", "gh-acme", "gh-repo", "gl-default", "gl-acme", "gl-platform", "gl-project")
	env := map[string]string{"GL_PROJECT": v["gl-project"]}
	doc := fmt.Sprintf(`version: 1
github:
  default: {secret_file: %[1]s/gh-default}
  owners:
    Acme: {secret_file: %[1]s/gh-acme}
  repos:
    acme/payments-api: {secret_file: %[1]s/gh-repo}
gitlab:
  default: {secret_file: %[1]s/gl-default}
  groups:
    acme: {secret_file: %[1]s/gl-acme}
    acme/platform: {secret_file: %[1]s/gl-platform}
  projects:
    acme/platform/checkout: {secret_env: GL_PROJECT}
`, dir)
	s, err := ParseConfig([]byte(doc), func(k string) (string, bool) { x, ok := env[k]; return x, ok })
	require.NoError(t, err)
	for _, tc := range []struct {
		p               schemas.GitProvider
		repo, org, want string
		scope           string
	}{
		{schemas.ProviderGitHub, "acme/payments-api", "", "gh-repo", "repo acme/payments-api"},
		{schemas.ProviderGitHub, "ACME/Payments-API", "", "gh-repo", "repo acme/payments-api"},
		{schemas.ProviderGitHub, "acme/other", "", "gh-acme", "owner acme"},
		{schemas.ProviderGitHub, "", "acme", "gh-acme", "owner acme"},
		{schemas.ProviderGitHub, "globex/app", "", "gh-default", "default"},
		{schemas.ProviderGitHub, "", "", "gh-default", "default"},
		{schemas.ProviderGitLab, "acme/platform/checkout", "", "gl-project", "project acme/platform/checkout"},
		{schemas.ProviderGitLab, "acme/platform/billing", "", "gl-platform", "group acme/platform"},
		{schemas.ProviderGitLab, "acme/platform/sub/deep", "", "gl-platform", "group acme/platform"},
		{schemas.ProviderGitLab, "acme/web", "", "gl-acme", "group acme"},
		{schemas.ProviderGitLab, "acmeco/web", "", "gl-default", "default"},
	} {
		sec, scope, ok := s.Lookup(tc.p, tc.repo, tc.org)
		require.True(t, ok, "%s %s", tc.p, tc.repo)
		require.Equal(t, v[tc.want], string(sec.bytes()), "%s %s", tc.p, tc.repo)
		require.Equal(t, tc.scope, scope)
	}
	require.ElementsMatch(t, []string{"gh-default", "gh-acme", "gh-repo", "gl-default", "gl-acme", "gl-platform"},
		func() (out []string) {
			for _, f := range s.Files() {
				out = append(out, filepath.Base(f))
			}
			return out
		}())

	only, err := ParseConfig(fmt.Appendf(nil, "version: 1\ngithub:\n  repos:\n    acme/app: {secret_file: %s/gh-repo}\n", dir), nil)
	require.NoError(t, err)
	_, _, ok := only.Lookup(schemas.ProviderGitHub, "acme/other", "")
	require.False(t, ok, "no default: an unconfigured repository has no secret")
	_, _, ok = only.Lookup(schemas.ProviderGitLab, "acme/app", "")
	require.False(t, ok, "no gitlab section: no secret")
}

func TestConfigRejected(t *testing.T) {
	t.Parallel()
	dir, v := secrets(t, "ok")
	short := filepath.Join(dir, "short")
	require.NoError(t, os.WriteFile(short, []byte("tooshort\n"), 0o600))
	ok := fmt.Sprintf("{secret_file: %s/ok}", dir)
	for _, tc := range []struct{ what, doc, want string }{
		{"wrong version", "version: 2\ngithub:\n  default: " + ok, "version"},
		{"unknown field", "version: 1\ngithub:\n  default: " + ok + "\n  orgs: {}", "unknown field"},
		{"unknown provider", "version: 1\nbitbucket:\n  default: " + ok, "unknown field"},
		{"no provider", "version: 1", "at least one provider"},
		{"empty section", "version: 1\ngithub: {}", "has no secret"},
		{"both file and env", "version: 1\ngithub:\n  default: {secret_file: x, secret_env: Y}", "exactly one"},
		{"neither", "version: 1\ngithub:\n  default: {}", "exactly one"},
		{"missing file", "version: 1\ngithub:\n  default: {secret_file: " + dir + "/nope}", "no such file"},
		{"unset env", "version: 1\ngithub:\n  default: {secret_env: CISS_NOT_SET}", "CISS_NOT_SET is not set"},
		{"short secret", "version: 1\ngithub:\n  default: {secret_file: " + short + "}", "16 to 4096 bytes"},
		{"repo without owner", "version: 1\ngithub:\n  repos:\n    app: " + ok, "owner and a name"},
		{"bad owner", "version: 1\ngithub:\n  owners:\n    'ac me': " + ok, "is not a path"},
		{"dot-dot group", "version: 1\ngitlab:\n  groups:\n    'acme/..': " + ok, "is not a path"},
		{"case-insensitive duplicate", "version: 1\ngithub:\n  repos:\n    acme/app: " + ok + "\n    ACME/app: " + ok, "repeats"},
		{"duplicate key", "version: 1\ngithub:\n  default: " + ok + "\n  default: " + ok, "already set"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			t.Parallel()
			_, err := ParseConfig([]byte(tc.doc), nil)
			require.ErrorIs(t, err, ErrInvalidConfig)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), v["ok"])
			require.NotContains(t, err.Error(), "tooshort")
		})
	}
}

// TestSecretNeverPrints formats a secret every way code might by mistake.
func TestSecretNeverPrints(t *testing.T) {
	t.Parallel()
	s := NewSecret([]byte(testSecret))
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("secret", "s", s, "ptr", &s, "group", slog.GroupValue(slog.Any("s", s)))
	slog.New(slog.NewTextHandler(&buf, nil)).Info("secret", "s", s)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		fmt.Fprintf(&buf, verb+"\n", s)
	}
	fmt.Fprintln(&buf, s, []Secret{s}, map[string]Secret{"k": s}, struct{ S Secret }{s})
	b, err := json.Marshal(map[string]any{"s": s})
	require.NoError(t, err)
	buf.Write(b)
	require.NotContains(t, buf.String(), testSecret)
	require.NotContains(t, buf.String(), fmt.Sprintf("%x", testSecret))
	require.Contains(t, buf.String(), redacted)
}

func TestFileReload(t *testing.T) {
	t.Parallel()
	dir, _ := secrets(t, "a")
	cfg := filepath.Join(dir, "webhooks.yaml")
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, "version: 1\ngithub:\n  default: {secret_file: %s/a}\n", dir), 0o600))
	f, err := OpenFile(cfg, nil)
	require.NoError(t, err)
	require.Equal(t, []string{cfg, filepath.Join(dir, "a")}, f.Paths())
	before := f.Secrets()

	require.NoError(t, os.WriteFile(cfg, []byte("version: 1\ngithub: {}\n"), 0o600))
	require.ErrorIs(t, f.Reload(), ErrInvalidConfig)
	require.Same(t, before, f.Secrets(), "a failed reload keeps the configuration in force")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "a"), []byte("rotated-secret-0123456789abcdef"), 0o600))
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, "version: 1\ngithub:\n  default: {secret_file: %s/a}\n", dir), 0o600))
	require.NoError(t, f.Reload())
	sec, _, _ := f.Secrets().Lookup(schemas.ProviderGitHub, "x/y", "")
	require.Equal(t, "rotated-secret-0123456789abcdef", string(sec.bytes()))

	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("loaded", "secrets", f.Secrets(), "ref", SecretRef{File: "/x"})
	require.Contains(t, buf.String(), "github.default=true")
	require.Contains(t, buf.String(), "ref=file:/x")
	require.NotContains(t, buf.String(), "rotated-secret")
}

// TestExampleFile keeps deploy/webhooks.example.yaml valid, with its secret
// files and variables provided.
func TestExampleFile(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "webhooks.example.yaml"))
	require.NoError(t, err)
	dir := t.TempDir()
	for _, name := range []string{"github-webhook", "acme-payments-api", "gitlab-webhook", "gitlab-platform"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(name+"-secret-0123456789\n"), 0o600))
	}
	env := func(k string) (string, bool) {
		return k + "-value-0123456789", strings.HasPrefix(k, "CISS_WEBHOOK_SECRET_")
	}
	s, err := ParseConfig(bytes.ReplaceAll(b, []byte("/run/secrets/ciss"), []byte(dir)), env)
	require.NoError(t, err)
	sec, scope, ok := s.Lookup(schemas.ProviderGitLab, "acme/platform/billing", "")
	require.True(t, ok)
	require.Equal(t, "group acme/platform", scope)
	require.Equal(t, "gitlab-platform-secret-0123456789", string(sec.bytes()))
}
