package webhook

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"ciss.dev/schemas"
)

// checkParsed holds a parser's result to its contract: a *PayloadError or a
// result that is either ignored or a valid event whose every field is safe
// for keys, logs and templates, and that survives being stored as an event.
func checkParsed(t *testing.T, p schemas.GitProvider, body []byte, parsed Parsed, err error) {
	t.Helper()
	if err != nil {
		var pe *PayloadError
		if !errors.As(err, &pe) {
			t.Fatalf("error %T is not a *PayloadError: %v", err, err)
		}
		return
	}
	if (parsed.Event == nil) == (parsed.Ignored == "") {
		t.Fatalf("want exactly one of Event and Ignored: %+v", parsed)
	}
	ev := parsed.Event
	if ev == nil {
		return
	}
	switch {
	case ev.Provider != p || !ev.Event.Valid():
		t.Fatalf("provider %q event %q", ev.Provider, ev.Event)
	case !validPath(ev.Repo, 2) || !validRef(ev.Ref) || !commitRE.MatchString(ev.Commit):
		t.Fatalf("unsafe repo %q, ref %q or commit %q accepted", ev.Repo, ev.Ref, ev.Commit)
	case ev.BaseRef != "" && !validRef(ev.BaseRef), ev.Event == schemas.GitEventPullRequest && ev.BaseRef == "":
		t.Fatalf("base ref %q for %s", ev.BaseRef, ev.Event)
	case !safeText(ev.Sender, maxSenderLen) || !safeText(ev.Action, maxActionLen) || ev.Host == "" || !safeText(ev.Host, 255):
		t.Fatalf("unsafe sender %q, action %q or host %q accepted", ev.Sender, ev.Action, ev.Host)
	case ev.Event == schemas.GitEventTagPush && !strings.HasPrefix(ev.Ref, "refs/tags/"),
		ev.Event == schemas.GitEventPush && !strings.HasPrefix(ev.Ref, "refs/heads/"):
		t.Fatalf("%s of %q", ev.Event, ev.Ref)
	}
	ev.DeliveryID, ev.PayloadDigest = "d", "sha256:"+strings.Repeat("0", 64)
	ev.Payload = body
	b, err := schemas.Marshal(schemas.TypeWebhookReceived, "fuzz", ev.Repo, ev)
	if errors.Is(err, schemas.ErrEventTooLarge) {
		return
	} else if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var back schemas.WebhookEvent
	if _, err := schemas.Unmarshal(b, schemas.TypeWebhookReceived, &back); err != nil {
		t.Fatalf("a stored event does not decode strictly: %v", err)
	}
	if back.Repo != ev.Repo || back.Commit != ev.Commit || back.Ref != ev.Ref {
		t.Fatalf("round trip changed the event: %+v", back)
	}
}

// FuzzGitHubPayload parses arbitrary verified bodies as each GitHub event.
func FuzzGitHubPayload(f *testing.F) {
	for _, name := range []string{"github-push.json", "github-push-tag.json", "github-pull_request.json", "github-ping.json"} {
		for _, ev := range []string{"push", "pull_request", "ping"} {
			f.Add(ev, fixture(f, name))
		}
	}
	f.Add("push", []byte(`{"ref":"refs/heads/a","after":"`+strings.Repeat("a", 40)+`","repository":{"full_name":"a/b","html_url":"https://h"}}`))
	f.Add("push", []byte(`{"ref":"refs/heads/a","ref":"refs/heads/b"}`))
	f.Add("pull_request", []byte(`{"action":"opened","pull_request":{"head":{"ref":"x","sha":"`+strings.Repeat("b", 64)+`"},"base":{"ref":"main"}},"repository":{"full_name":"a/b","html_url":"http://h:1"}}`))
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		p, err := ParseGitHub(event, body)
		checkParsed(t, schemas.ProviderGitHub, body, p, err)
	})
}

// FuzzGitLabPayload parses arbitrary verified bodies as each GitLab event.
func FuzzGitLabPayload(f *testing.F) {
	for _, name := range []string{"gitlab-push.json", "gitlab-tag-push.json", "gitlab-merge-request.json"} {
		for _, ev := range []string{"Push Hook", "Tag Push Hook", "Merge Request Hook"} {
			f.Add(ev, fixture(f, name))
		}
	}
	f.Add("Push Hook", []byte(`{"object_kind":"push","ref":"refs/heads/a","checkout_sha":null,"project":{"path_with_namespace":"a/b","web_url":"https://h"}}`))
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		p, err := ParseGitLab(event, body)
		checkParsed(t, schemas.ProviderGitLab, body, p, err)
	})
}

// FuzzVerifyGitHub checks that only the exact HMAC of the body under the
// secret verifies, whatever the header holds.
func FuzzVerifyGitHub(f *testing.F) {
	body := fixture(f, "github-push.json")
	f.Add([]byte(testSecret), body, SignGitHub([]byte(testSecret), body))
	f.Add([]byte(testSecret), body, "sha1="+strings.Repeat("0", 40))
	f.Add([]byte("k"), []byte{}, "sha256=")
	f.Fuzz(func(t *testing.T, secret, body []byte, sig string) {
		err := VerifyGitHub(NewSecret(secret), http.Header{"X-Hub-Signature-256": {sig}}, body)
		want := SignGitHub(secret, body)
		if err == nil && strings.ToLower(sig) != want {
			t.Fatalf("accepted %q, the signature is %q", sig, want)
		}
		if err != nil && !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("error %T is not an AuthError", err)
		}
		if err := VerifyGitHub(NewSecret(secret), http.Header{"X-Hub-Signature-256": {want}}, body); err != nil {
			t.Fatalf("the genuine signature is refused: %v", err)
		}
	})
}
