package schemas

import (
	"strings"
	"testing"
)

func TestWebhookEventHelpers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ev                 WebhookEvent
		owner, branch, tag string
	}{
		{WebhookEvent{Repo: "acme/app", Event: GitEventPush, Ref: "refs/heads/release/1.x"}, "acme", "release/1.x", ""},
		{WebhookEvent{Repo: "acme/platform/app", Event: GitEventTagPush, Ref: "refs/tags/v1.2.0"}, "acme/platform", "", "v1.2.0"},
		{WebhookEvent{Repo: "acme/app", Event: GitEventPullRequest, Ref: "refs/heads/feature", BaseRef: "refs/heads/main"}, "acme", "main", ""},
		{WebhookEvent{Repo: "app", Event: GitEventPush, Ref: "refs/notes/x"}, "", "", ""},
	} {
		if got := tc.ev.Owner(); got != tc.owner {
			t.Errorf("%s: Owner() = %q, want %q", tc.ev.Repo, got, tc.owner)
		}
		if got := tc.ev.Branch(); got != tc.branch {
			t.Errorf("%s: Branch() = %q, want %q", tc.ev.Ref, got, tc.branch)
		}
		if got := tc.ev.Tag(); got != tc.tag {
			t.Errorf("%s: Tag() = %q, want %q", tc.ev.Ref, got, tc.tag)
		}
	}
}

func TestWebhookDeliveryKey(t *testing.T) {
	t.Parallel()
	a := WebhookDeliveryKey(ProviderGitHub, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
	if a != WebhookDeliveryKey(ProviderGitHub, "72d3162e-cc78-11e3-81ab-4c9367dc0958") {
		t.Error("the key is not deterministic")
	}
	if a == WebhookDeliveryKey(ProviderGitLab, "72d3162e-cc78-11e3-81ab-4c9367dc0958") {
		t.Error("the same delivery id on another provider must be another key")
	}
	if !strings.HasPrefix(a, "github.") || len(a) != len("github.")+64 || strings.ContainsAny(a, " *>/") {
		t.Errorf("key %q is not provider.<sha256 hex>", a)
	}
	for _, v := range WebhookVerdicts() {
		if s := SubjectAuditWebhook(ProviderGitLab, v); s != "ciss.audit.webhook.gitlab."+string(v) || !v.Valid() {
			t.Errorf("audit subject %q", s)
		}
	}
	if SubjectWebhook(ProviderGitHub) != "ciss.webhooks.github" {
		t.Error(SubjectWebhook(ProviderGitHub))
	}
}
