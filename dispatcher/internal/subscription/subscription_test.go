package subscription

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

const example = `version: 1
subscriptions:
  - name: acme-main
    tenant: acme
    match:
      providers: [github]
      repos: ["acme/*"]
      events: [push]
      branches: [main, "release/*"]
    jobs:
      - type: image-scan
        target: {image: "registry.acme.example/{repo}:{short_commit}"}
        params: {severity: "HIGH,CRITICAL", ref: "{ref}"}
      - type: image-scan
        target: {image: "registry.acme.example/base/runtime:2"}
        lane: bulk
        cache: false
  - name: acme-releases
    tenant: acme
    match:
      repos: ["acme/**"]
      events: [tag_push]
      tags: ["v*"]
    jobs:
      - type: image-scan
        target: {image: "registry.acme.example/{repo}:{tag}"}
  - name: platform-prs
    tenant: platform
    match:
      providers: [gitlab]
      hosts: ["gitlab.acme.example"]
      owners: ["acme/platform/**", "acme/platform"]
      events: [pull_request]
      branches: [main]
    jobs:
      - type: image-scan
        target: {image: "registry.acme.example/{name}:mr-{number}"}
`

func event(p schemas.GitProvider, kind schemas.GitEvent, repo, ref string) *schemas.WebhookEvent {
	ev := &schemas.WebhookEvent{Provider: p, Event: kind, Host: "github.com", Repo: repo, Ref: ref,
		Commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", DeliveryID: "d"}
	if p == schemas.ProviderGitLab {
		ev.Host = "gitlab.acme.example"
	}
	if kind == schemas.GitEventPullRequest {
		ev.BaseRef, ev.Number = ref, 7
		ev.Ref = "refs/heads/feature"
	}
	return ev
}

func TestPlan(t *testing.T) {
	t.Parallel()
	set, err := Parse([]byte(example))
	require.NoError(t, err)
	require.Equal(t, 3, set.Len())
	names := func(ps []Planned) (out []string) {
		for _, p := range ps {
			out = append(out, p.Subscription)
		}
		return out
	}
	for _, tc := range []struct {
		what string
		ev   *schemas.WebhookEvent
		want []string
	}{
		{"push to main", event(schemas.ProviderGitHub, schemas.GitEventPush, "acme/payments-api", "refs/heads/main"), []string{"acme-main", "acme-main"}},
		{"push to a release branch", event(schemas.ProviderGitHub, schemas.GitEventPush, "acme/web", "refs/heads/release/2.1"), []string{"acme-main", "acme-main"}},
		{"repos match case-insensitively", event(schemas.ProviderGitHub, schemas.GitEventPush, "ACME/Web", "refs/heads/main"), []string{"acme-main", "acme-main"}},
		{"branches match case-sensitively", event(schemas.ProviderGitHub, schemas.GitEventPush, "acme/web", "refs/heads/Main"), nil},
		{"push to a feature branch", event(schemas.ProviderGitHub, schemas.GitEventPush, "acme/web", "refs/heads/feature/x"), nil},
		{"* does not cross /", event(schemas.ProviderGitHub, schemas.GitEventPush, "acme/sub/web", "refs/heads/main"), nil},
		{"other owner", event(schemas.ProviderGitHub, schemas.GitEventPush, "globex/web", "refs/heads/main"), nil},
		{"gitlab push: provider filter", event(schemas.ProviderGitLab, schemas.GitEventPush, "acme/web", "refs/heads/main"), nil},
		{"tag", event(schemas.ProviderGitLab, schemas.GitEventTagPush, "acme/platform/checkout", "refs/tags/v2.0.0"), []string{"acme-releases"}},
		{"tag not matching", event(schemas.ProviderGitHub, schemas.GitEventTagPush, "acme/web", "refs/tags/nightly"), nil},
		{"merge request into main", event(schemas.ProviderGitLab, schemas.GitEventPullRequest, "acme/platform/checkout", "refs/heads/main"), []string{"platform-prs"}},
		{"merge request in a subgroup", event(schemas.ProviderGitLab, schemas.GitEventPullRequest, "acme/platform/payments/api", "refs/heads/main"), []string{"platform-prs"}},
		{"merge request into develop", event(schemas.ProviderGitLab, schemas.GitEventPullRequest, "acme/platform/checkout", "refs/heads/develop"), nil},
	} {
		t.Run(tc.what, func(t *testing.T) {
			require.Equal(t, tc.want, names(set.Plan(tc.ev)))
		})
	}

	ps := set.Plan(event(schemas.ProviderGitHub, schemas.GitEventPush, "ACME/Payments-API", "refs/heads/main"))
	require.NoError(t, ps[0].Err)
	require.Equal(t, "acme", ps[0].Tenant)
	require.Equal(t, 0, ps[0].Index)
	require.Equal(t, "registry.acme.example/acme/payments-api:0d1a26e67d8f", ps[0].Request.Target.Image, "repo is lower-cased")
	require.Equal(t, map[string]string{"severity": "HIGH,CRITICAL", "ref": "refs/heads/main"}, ps[0].Request.Params)
	require.Equal(t, schemas.LaneInteractive, ps[0].Request.Lane, "the default lane")
	require.True(t, ps[0].Request.CacheEnabled())
	require.Equal(t, 1, ps[1].Index)
	require.Equal(t, schemas.LaneBulk, ps[1].Request.Lane)
	require.False(t, ps[1].Request.CacheEnabled())

	mr := set.Plan(event(schemas.ProviderGitLab, schemas.GitEventPullRequest, "acme/platform/checkout", "refs/heads/main"))
	require.Equal(t, "registry.acme.example/checkout:mr-7", mr[0].Request.Target.Image)
	tag := set.Plan(event(schemas.ProviderGitLab, schemas.GitEventTagPush, "acme/platform/checkout", "refs/tags/v2.0.0"))
	require.Equal(t, "registry.acme.example/acme/platform/checkout:v2.0.0", tag[0].Request.Target.Image)
}

// TestPlanInvalidExpansion keeps a job whose template gives an invalid
// request for this event, with the reason, rather than failing the event.
func TestPlanInvalidExpansion(t *testing.T) {
	t.Parallel()
	set, err := Parse([]byte(`version: 1
subscriptions:
  - name: by-branch
    tenant: acme
    match: {events: [push]}
    jobs:
      - type: image-scan
        target: {image: "registry.acme.example/app:{branch}"}
`))
	require.NoError(t, err)
	ps := set.Plan(event(schemas.ProviderGitHub, schemas.GitEventPush, "acme/app", "refs/heads/feature/slash"))
	require.Len(t, ps, 1)
	require.ErrorContains(t, ps[0].Err, "target.image")
	ps = set.Plan(event(schemas.ProviderGitHub, schemas.GitEventPush, "acme/app", "refs/heads/main"))
	require.NoError(t, ps[0].Err)
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	job := "\n    jobs: [{type: image-scan, target: {image: \"r.example/a:1\"}}]"
	sub := func(body string) string { return "version: 1\nsubscriptions:\n  - name: s\n    tenant: acme\n" + body }
	for _, tc := range []struct{ what, doc, want string }{
		{"sast needs a commit", sub("    match: {events: [push]}\n    jobs: [{type: sast, target: {repo: \"https://{host}/{repo}.git\"}}]"),
			`subscriptions[0].jobs[0].target.commit: is required for sast`},
		{"sast repo with credentials", sub("    match: {events: [push]}\n    jobs: [{type: sast, target: {repo: \"https://bot:pw@{host}/{repo}.git\", commit: \"{commit}\"}}]"),
			`credentials`},
		{"protected actions never come from webhooks", sub("    match: {events: [push]}\n    jobs: [{type: vault-auth-onboard, target: {}, params: {name: x, auth_type: approle}}]"),
			`subscriptions[0].jobs[0].type: "vault-auth-onboard" is a protected action`},
		{"wrong version", "version: 2\nsubscriptions: []", "version: must be 1"},
		{"unknown field", sub("    match: {events: [push], branch: main}" + job), "unknown field"},
		{"no events", sub("    match: {}" + job), "match.events: needs at least one"},
		{"unknown event", sub("    match: {events: [release]}" + job), `unknown event "release"`},
		{"unknown provider", sub("    match: {events: [push], providers: [bitbucket]}" + job), `unknown provider "bitbucket"`},
		{"bad tenant", strings.Replace(sub("    match: {events: [push]}"+job), "tenant: acme", "tenant: Acme", 1), "tenant"},
		{"no jobs", sub("    match: {events: [push]}\n    jobs: []"), "needs at least one job"},
		{"missing target", sub("    match: {events: [push]}\n    jobs: [{type: image-scan, target: {}}]"), "target.image: is required"},
		{"other target field", sub("    match: {events: [push]}\n    jobs: [{type: image-scan, target: {image: \"r.example/a:1\", repo: x}}]"), "target.repo: is not a target field"},
		{"unknown placeholder", sub("    match: {events: [push]}\n    jobs: [{type: image-scan, target: {image: \"r.example/{project}:1\"}}]"), "unknown placeholder {project}"},
		{"unmatched brace", sub("    match: {events: [push]}\n    jobs: [{type: image-scan, target: {image: \"r.example/{repo:1\"}}]"), "unmatched"},
		{"placeholder in params", sub("    match: {events: [push]}\n    jobs: [{type: image-scan, target: {image: \"r.example/a:1\"}, params: {x: \"{secret}\"}}]"), "params.x: unknown placeholder {secret}"},
		{"never a valid image", sub("    match: {events: [push]}\n    jobs: [{type: image-scan, target: {image: \"https://r.example/{repo}\"}}]"), "gives no valid request"},
		{"bad lane", sub("    match: {events: [push]}\n    jobs: [{type: image-scan, target: {image: \"r.example/a:1\"}, lane: urgent}]"), "lane"},
		{"empty glob", sub("    match: {events: [push], repos: [\"\"]}" + job), "match.repos[0]: empty pattern"},
		{"duplicate name", "version: 1\nsubscriptions:\n  - {name: s, tenant: a, match: {events: [push]}, jobs: [{type: image-scan, target: {image: \"r.example/a:1\"}}]}\n  - {name: s, tenant: a, match: {events: [push]}, jobs: [{type: image-scan, target: {image: \"r.example/a:1\"}}]}", "already used"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tc.doc))
			require.ErrorIs(t, err, ErrInvalid)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestGlob(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, s string
		fold, want bool
	}{
		{"acme/*", "acme/web", false, true},
		{"acme/*", "acme/web/x", false, false},
		{"acme/**", "acme/web/x", false, true},
		{"acme/**", "acme", false, false},
		{"release/v?", "release/v1", false, true},
		{"release/v?", "release/v/", false, false},
		{"a.b", "axb", false, false},
		{"(x)", "(x)", false, true},
		{"Acme/*", "acme/WEB", true, true},
		{"Acme/*", "acme/WEB", false, false},
		{"ünï/*", "ünï/x", false, true},
	} {
		re, err := Glob(tc.pattern, tc.fold)
		require.NoError(t, err)
		require.Equal(t, tc.want, re.MatchString(tc.s), "%q ~ %q", tc.pattern, tc.s)
	}
}

// TestExampleFile keeps deploy/subscriptions.example.yaml valid.
func TestExampleFile(t *testing.T) {
	t.Parallel()
	set, err := Load(filepath.Join("..", "..", "..", "deploy", "subscriptions.example.yaml"))
	require.NoError(t, err)
	require.Equal(t, 3, set.Len())
	ps := set.Plan(event(schemas.ProviderGitLab, schemas.GitEventPullRequest, "acme/platform/checkout", "refs/heads/main"))
	require.Len(t, ps, 1)
	require.Equal(t, "platform", ps[0].Tenant)
}
