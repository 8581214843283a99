package webhook

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

// mutated decodes a fixture, applies edit and encodes it again.
func mutated(t testing.TB, name string, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(fixture(t, name), &m))
	edit(m)
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

func obj(m map[string]any, path ...string) map[string]any {
	for _, p := range path {
		m = m[p].(map[string]any)
	}
	return m
}

func TestParseFixtures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, event string
		parse       func(string, []byte) (Parsed, error)
		want        schemas.WebhookEvent
	}{
		{"github-push.json", "push", ParseGitHub, schemas.WebhookEvent{
			Provider: schemas.ProviderGitHub, HostEvent: "push", Event: schemas.GitEventPush, Host: "github.com",
			Repo: "acme/payments-api", Ref: "refs/heads/main", Commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
			Sender: "octocat", URL: "https://github.com/acme/payments-api/compare/9049f1265b7d...0d1a26e67d8f",
		}},
		{"github-push-tag.json", "push", ParseGitHub, schemas.WebhookEvent{
			Provider: schemas.ProviderGitHub, HostEvent: "push", Event: schemas.GitEventTagPush, Host: "github.com",
			Repo: "acme/payments-api", Ref: "refs/tags/v1.4.0", Commit: "5e3c9b1d7a2f4e6081c3b5d7f9a1c3e5b7d9f1a3",
			Sender: "acme-release[bot]", URL: "https://github.com/acme/payments-api/commit/5e3c9b1d7a2f4e6081c3b5d7f9a1c3e5b7d9f1a3",
		}},
		{"github-pull_request.json", "pull_request", ParseGitHub, schemas.WebhookEvent{
			Provider: schemas.ProviderGitHub, HostEvent: "pull_request", Event: schemas.GitEventPullRequest, Action: "synchronize",
			Host: "github.com", Repo: "acme/payments-api", Ref: "refs/heads/retry-authorisations",
			Commit: "c4295bd74fb0f4d11f1a2c7e3b8e4f0a9d6c5b2e", BaseRef: "refs/heads/main", Number: 42, Sender: "hubot",
			URL: "https://github.com/acme/payments-api/pull/42",
		}},
		{"gitlab-push.json", "Push Hook", ParseGitLab, schemas.WebhookEvent{
			Provider: schemas.ProviderGitLab, HostEvent: "Push Hook", Event: schemas.GitEventPush, Host: "gitlab.acme.example",
			Repo: "acme/platform/checkout", Ref: "refs/heads/main", Commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
			Sender: "jsmith", URL: "https://gitlab.acme.example/acme/platform/checkout/-/commit/da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
		}},
		{"gitlab-tag-push.json", "Tag Push Hook", ParseGitLab, schemas.WebhookEvent{
			Provider: schemas.ProviderGitLab, HostEvent: "Tag Push Hook", Event: schemas.GitEventTagPush, Host: "gitlab.acme.example",
			Repo: "acme/platform/checkout", Ref: "refs/tags/v2.0.0", Commit: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
			Sender: "jsmith", URL: "https://gitlab.acme.example/acme/platform/checkout/-/commit/82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
		}},
		{"gitlab-merge-request.json", "Merge Request Hook", ParseGitLab, schemas.WebhookEvent{
			Provider: schemas.ProviderGitLab, HostEvent: "Merge Request Hook", Event: schemas.GitEventPullRequest, Action: "open",
			Host: "gitlab.acme.example", Repo: "acme/platform/checkout", Ref: "refs/heads/ms-viewport",
			Commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", BaseRef: "refs/heads/main", Number: 7, Sender: "root",
			URL: "https://gitlab.acme.example/acme/platform/checkout/-/merge_requests/7",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := tc.parse(tc.event, fixture(t, tc.name))
			require.NoError(t, err)
			require.Empty(t, p.Ignored)
			require.NotNil(t, p.Event)
			require.Equal(t, tc.want, *p.Event)
			require.Equal(t, tc.want.Repo, p.Repo)
		})
	}
}

func TestParseGitHubPing(t *testing.T) {
	t.Parallel()
	p, err := ParseGitHub("ping", fixture(t, "github-ping.json"))
	require.NoError(t, err)
	require.True(t, p.Ping)
	require.Nil(t, p.Event)
	require.Equal(t, "acme/payments-api", p.Repo)
}

// TestParseIgnored covers events and actions that are verified but not acted on.
func TestParseIgnored(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		what, event, fixture string
		parse                func(string, []byte) (Parsed, error)
		edit                 func(map[string]any)
		reason               string
	}{
		{"github issues event", "issues", "github-pull_request.json", ParseGitHub, nil, `event "issues" is not handled`},
		{"github pull request closed", "pull_request", "github-pull_request.json", ParseGitHub,
			func(m map[string]any) { m["action"] = "closed" }, `action "closed"`},
		{"github pull request labeled", "pull_request", "github-pull_request.json", ParseGitHub,
			func(m map[string]any) { m["action"] = "labeled" }, `action "labeled"`},
		{"github branch deleted", "push", "github-push.json", ParseGitHub,
			func(m map[string]any) { m["deleted"] = true; m["after"] = strings.Repeat("0", 40) }, "ref deleted"},
		{"github push to a note ref", "push", "github-push.json", ParseGitHub,
			func(m map[string]any) { m["ref"] = "refs/notes/commits" }, "neither a branch nor a tag"},
		{"gitlab pipeline hook", "Pipeline Hook", "gitlab-push.json", ParseGitLab, nil, `event "Pipeline Hook"`},
		{"gitlab system hook", "System Hook", "gitlab-push.json", ParseGitLab, nil, `event "System Hook"`},
		{"gitlab branch deleted", "Push Hook", "gitlab-push.json", ParseGitLab,
			func(m map[string]any) { m["checkout_sha"] = nil; m["after"] = strings.Repeat("0", 40) }, "ref deleted"},
		{"gitlab tag deleted", "Tag Push Hook", "gitlab-tag-push.json", ParseGitLab,
			func(m map[string]any) { m["checkout_sha"] = nil; m["after"] = strings.Repeat("0", 40) }, "ref deleted"},
		{"gitlab merge request merged", "Merge Request Hook", "gitlab-merge-request.json", ParseGitLab,
			func(m map[string]any) { obj(m, "object_attributes")["action"] = "merge" }, `action "merge"`},
		{"gitlab merge request retitled", "Merge Request Hook", "gitlab-merge-request.json", ParseGitLab,
			func(m map[string]any) { obj(m, "object_attributes")["action"] = "update" }, "without new commits"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			t.Parallel()
			body := fixture(t, tc.fixture)
			if tc.edit != nil {
				body = mutated(t, tc.fixture, tc.edit)
			}
			p, err := tc.parse(tc.event, body)
			require.NoError(t, err)
			require.Nil(t, p.Event)
			require.Contains(t, p.Ignored, tc.reason)
			require.NotEmpty(t, p.Repo, "an ignored request still names its repository for the audit")
		})
	}
}

func TestParseGitLabMergeRequestWithNewCommits(t *testing.T) {
	t.Parallel()
	for action, oldrev := range map[string]string{"update": "a10867b14bb761a232cd80139fbd4c0d33264240", "reopen": ""} {
		body := mutated(t, "gitlab-merge-request.json", func(m map[string]any) {
			obj(m, "object_attributes")["action"] = action
			if oldrev != "" {
				obj(m, "object_attributes")["oldrev"] = oldrev
			}
		})
		p, err := ParseGitLab("Merge Request Hook", body)
		require.NoError(t, err, action)
		require.Equal(t, schemas.GitEventPullRequest, p.Event.Event)
		require.Equal(t, action, p.Event.Action)
	}
}

// TestParseMalformed feeds verified but broken bodies: each is a *PayloadError.
func TestParseMalformed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		what, event string
		parse       func(string, []byte) (Parsed, error)
		body        []byte
	}{
		{"not JSON", "push", ParseGitHub, []byte(`{"ref":`)},
		{"empty", "push", ParseGitHub, nil},
		{"array", "push", ParseGitHub, []byte(`[]`)},
		{"trailing data", "push", ParseGitHub, append(fixture(t, "github-push.json"), []byte(` {}`)...)},
		{"duplicate key", "push", ParseGitHub, []byte(`{"ref":"refs/heads/main","ref":"refs/heads/evil"}`)},
		{"duplicate key in other case", "push", ParseGitHub, []byte(`{"after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","AFTER":"x"}`)},
		{"duplicate key on an ignored event", "issues", ParseGitHub, []byte(`{"a":1,"a":2}`)},
		{"wrong type", "push", ParseGitHub, mutated(t, "github-push.json", func(m map[string]any) { m["ref"] = 7 })},
		{"no repository", "push", ParseGitHub, mutated(t, "github-push.json", func(m map[string]any) { delete(m, "repository") })},
		{"short commit", "push", ParseGitHub, mutated(t, "github-push.json", func(m map[string]any) { m["after"] = "0d1a26e" })},
		{"upper-case commit", "push", ParseGitHub, mutated(t, "github-push.json", func(m map[string]any) {
			m["after"] = strings.ToUpper("0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c")
		})},
		{"ref without refs/", "push", ParseGitHub, mutated(t, "github-push.json", func(m map[string]any) { m["ref"] = "main" })},
		{"ref with newline", "push", ParseGitHub, mutated(t, "github-push.json", func(m map[string]any) { m["ref"] = "refs/heads/main\nINFO forged" })},
		{"repository path traversal", "push", ParseGitHub, mutated(t, "github-push.json", func(m map[string]any) {
			obj(m, "repository")["full_name"] = "../../etc"
		})},
		{"repository without owner", "push", ParseGitHub, mutated(t, "github-push.json", func(m map[string]any) {
			obj(m, "repository")["full_name"] = "payments-api"
		})},
		{"html_url not http", "push", ParseGitHub, mutated(t, "github-push.json", func(m map[string]any) {
			obj(m, "repository")["html_url"] = "javascript:alert(1)"
		})},
		{"sender with bidi override", "push", ParseGitHub, mutated(t, "github-push.json", func(m map[string]any) {
			obj(m, "sender")["login"] = "octo\u202ecat"
		})},
		{"pull request without base", "pull_request", ParseGitHub, mutated(t, "github-pull_request.json", func(m map[string]any) {
			obj(m, "pull_request", "base")["ref"] = ""
		})},
		{"gitlab kind mismatch", "Push Hook", ParseGitLab, fixture(t, "gitlab-tag-push.json")},
		{"gitlab merge request as push", "Push Hook", ParseGitLab, fixture(t, "gitlab-merge-request.json")},
		{"gitlab push of a tag ref", "Push Hook", ParseGitLab, mutated(t, "gitlab-push.json", func(m map[string]any) { m["ref"] = "refs/tags/v1" })},
		{"gitlab no project", "Push Hook", ParseGitLab, mutated(t, "gitlab-push.json", func(m map[string]any) { delete(m, "project") })},
		{"gitlab merge request without attributes", "Merge Request Hook", ParseGitLab, mutated(t, "gitlab-merge-request.json", func(m map[string]any) {
			delete(m, "object_attributes")
		})},
		{"gitlab merge request bad commit", "Merge Request Hook", ParseGitLab, mutated(t, "gitlab-merge-request.json", func(m map[string]any) {
			obj(m, "object_attributes", "last_commit")["id"] = "main"
		})},
	} {
		t.Run(tc.what, func(t *testing.T) {
			t.Parallel()
			_, err := tc.parse(tc.event, tc.body)
			var pe *PayloadError
			require.ErrorAs(t, err, &pe, "%.200s", tc.body)
		})
	}
}

func TestClaims(t *testing.T) {
	t.Parallel()
	repo, org, sender := claimGitHub(fixture(t, "github-push.json"))
	require.Equal(t, []string{"acme/payments-api", "acme", "octocat"}, []string{repo, org, sender})
	repo, sender = claimGitLab(fixture(t, "gitlab-merge-request.json"))
	require.Equal(t, []string{"acme/platform/checkout", "root"}, []string{repo, sender})
	repo, org, sender = claimGitHub([]byte(`not json`))
	require.Empty(t, repo+org+sender)
}

func TestErrorsAreTyped(t *testing.T) {
	t.Parallel()
	require.ErrorIs(t, &AuthError{Reason: "x"}, ErrUnauthenticated)
	require.ErrorIs(t, &ConfigError{Field: "f", Reason: "r"}, ErrInvalidConfig)
	cause := errors.New("boom")
	require.ErrorIs(t, &PayloadError{Err: cause}, cause)
}
