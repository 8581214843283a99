package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"ciss.dev/schemas"
)

// Parsed is what a verified payload means to CISS.
type Parsed struct {
	// Event is the normalised event to store; nil when the request is ignored.
	Event *schemas.WebhookEvent
	// Ignored says why the request is not acted on (a ping, another event, a
	// closed pull request, a deleted branch); empty when Event is set.
	Ignored string
	// Ping is set for GitHub's ping event, answered 200.
	Ping bool
	// Repo and Sender name the repository and user, for the audit record,
	// also when the request is ignored.
	Repo, Sender string
}

// Limits on values taken from payloads.
const (
	maxRefLen    = 255
	maxSenderLen = 255
	maxURLLen    = 2048
	maxActionLen = 64
)

// commitRE is a full SHA-1 or SHA-256 object name as git hosts write them.
var commitRE = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// zeroCommit reports an all-zero object name: the "after" of a deleted ref.
func zeroCommit(s string) bool { return s != "" && strings.Trim(s, "0") == "" }

// checkJSON requires one JSON object with no duplicate keys (compared as
// encoding/json matches names, case-insensitively), so that the fields read
// here are the fields any other parser would read.
func checkJSON(body []byte) error {
	var raw json.RawMessage
	if err := schemas.DecodeStrict(body, &raw); err != nil {
		return &PayloadError{Err: err}
	}
	if len(raw) == 0 || raw[0] != '{' {
		return &PayloadError{Err: errors.New("not a JSON object")}
	}
	return nil
}

// safeText reports whether s is valid UTF-8 of at most max bytes without
// control, format (bidi, zero-width) or line separator characters, so it can
// go into logs, keys and templates.
func safeText(s string, max int) bool {
	return len(s) <= max && utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
	})
}

// validRef reports whether s is a full git ref CISS can carry: "refs/…",
// safe text, no spaces.
func validRef(s string) bool {
	return strings.HasPrefix(s, "refs/") && len(s) > len("refs/") && safeText(s, maxRefLen) && !strings.ContainsRune(s, ' ')
}

// hostOf returns the lower-case host (with port) of an http(s) URL.
func hostOf(field, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(raw) > maxURLLen || !safeText(u.Host, 255) {
		return "", fmt.Errorf("%s %.100q is not an http(s) URL", field, raw)
	}
	return strings.ToLower(u.Host), nil
}

// optionalURL returns raw when it is a usable http(s) URL, else "".
func optionalURL(raw string) string {
	if _, err := hostOf("", raw); err != nil {
		return ""
	}
	return raw
}

// finish validates the fields every normalised event needs.
func finish(ev *schemas.WebhookEvent) (Parsed, error) {
	bad := func(format string, args ...any) (Parsed, error) {
		return Parsed{}, &PayloadError{Err: fmt.Errorf(format, args...)}
	}
	switch {
	case !validPath(ev.Repo, 2):
		return bad("repository path %.100q is missing or malformed", ev.Repo)
	case !validRef(ev.Ref):
		return bad("ref %.100q is missing or malformed", ev.Ref)
	case ev.BaseRef != "" && !validRef(ev.BaseRef):
		return bad("base ref %.100q is malformed", ev.BaseRef)
	case !commitRE.MatchString(ev.Commit):
		return bad("commit %.100q is not a full lower-case hex SHA", ev.Commit)
	case !safeText(ev.Sender, maxSenderLen):
		return bad("sender is longer than %d bytes or has control characters", maxSenderLen)
	case !safeText(ev.Action, maxActionLen):
		return bad("action is longer than %d bytes or has control characters", maxActionLen)
	case ev.Number < 0:
		return bad("pull request number %d is negative", ev.Number)
	}
	ev.URL = optionalURL(ev.URL)
	return Parsed{Event: ev, Repo: ev.Repo, Sender: ev.Sender}, nil
}

// GitHub payload shapes: only the fields CISS reads.
type (
	ghRepository struct {
		FullName string `json:"full_name"`
		HTMLURL  string `json:"html_url"`
	}
	ghUser struct {
		Login string `json:"login"`
	}
	ghPush struct {
		Ref        string `json:"ref"`
		After      string `json:"after"`
		Deleted    bool   `json:"deleted"`
		Compare    string `json:"compare"`
		HeadCommit *struct {
			ID  string `json:"id"`
			URL string `json:"url"`
		} `json:"head_commit"`
		Repository *ghRepository `json:"repository"`
		Sender     ghUser        `json:"sender"`
	}
	ghPullRequest struct {
		Action      string `json:"action"`
		Number      int    `json:"number"`
		PullRequest *struct {
			HTMLURL string `json:"html_url"`
			Head    struct {
				Ref string `json:"ref"`
				SHA string `json:"sha"`
			} `json:"head"`
			Base struct {
				Ref string `json:"ref"`
			} `json:"base"`
		} `json:"pull_request"`
		Repository *ghRepository `json:"repository"`
		Sender     ghUser        `json:"sender"`
	}
	// ghClaim is what the body says about its origin, read before the
	// signature is verified only to choose the secret.
	ghClaim struct {
		Repository *struct {
			FullName string `json:"full_name"`
		} `json:"repository"`
		Organization *ghUser `json:"organization"`
		Sender       *ghUser `json:"sender"`
	}
)

// GitHub pull request actions that mean "new code to look at".
var ghPRActions = map[string]bool{"opened": true, "synchronize": true, "reopened": true}

// claimGitHub reads the repository, organisation and sender a GitHub body
// names, without trusting it: the result only selects the secret to verify
// with (and is recorded as claimed). A body that does not decode claims nothing.
func claimGitHub(body []byte) (repo, org, sender string) {
	var c ghClaim
	if json.Unmarshal(body, &c) != nil {
		return "", "", ""
	}
	if c.Repository != nil {
		repo = c.Repository.FullName
	}
	if c.Organization != nil {
		org = c.Organization.Login
	}
	if c.Sender != nil {
		sender = c.Sender.Login
	}
	return repo, org, sender
}

// ParseGitHub interprets a verified GitHub payload of the given X-GitHub-Event.
// push (branches and tags), pull_request (opened, synchronize, reopened) and
// ping are understood; other events and actions are ignored. Errors are
// *PayloadError.
func ParseGitHub(event string, body []byte) (Parsed, error) {
	if err := checkJSON(body); err != nil {
		return Parsed{}, err
	}
	switch event {
	case "ping":
		repo, _, sender := claimGitHub(body)
		return Parsed{Ping: true, Ignored: "ping", Repo: repo, Sender: sender}, nil
	case "push":
		return parseGitHubPush(body)
	case "pull_request":
		return parseGitHubPR(body)
	}
	repo, _, sender := claimGitHub(body)
	return Parsed{Ignored: fmt.Sprintf("event %.64q is not handled", event), Repo: repo, Sender: sender}, nil
}

func parseGitHubPush(body []byte) (Parsed, error) {
	var p ghPush
	if err := json.Unmarshal(body, &p); err != nil {
		return Parsed{}, &PayloadError{Err: err}
	}
	if p.Repository == nil {
		return Parsed{}, &PayloadError{Err: errors.New("push without repository")}
	}
	ignored := func(reason string) (Parsed, error) {
		return Parsed{Ignored: reason, Repo: p.Repository.FullName, Sender: p.Sender.Login}, nil
	}
	if p.Deleted || zeroCommit(p.After) {
		return ignored("ref deleted")
	}
	ev := &schemas.WebhookEvent{
		Provider: schemas.ProviderGitHub, HostEvent: "push", Event: schemas.GitEventPush,
		Repo: p.Repository.FullName, Ref: p.Ref, Commit: p.After, Sender: p.Sender.Login, URL: p.Compare,
	}
	switch {
	case strings.HasPrefix(p.Ref, "refs/heads/"):
	case strings.HasPrefix(p.Ref, "refs/tags/"):
		ev.Event = schemas.GitEventTagPush
		if p.HeadCommit != nil && p.HeadCommit.URL != "" {
			ev.URL = p.HeadCommit.URL
		}
	case validRef(p.Ref):
		return ignored("ref is neither a branch nor a tag")
	}
	host, err := hostOf("repository.html_url", p.Repository.HTMLURL)
	if err != nil {
		return Parsed{}, &PayloadError{Err: err}
	}
	ev.Host = host
	return finish(ev)
}

func parseGitHubPR(body []byte) (Parsed, error) {
	var p ghPullRequest
	if err := json.Unmarshal(body, &p); err != nil {
		return Parsed{}, &PayloadError{Err: err}
	}
	if p.Repository == nil || p.PullRequest == nil {
		return Parsed{}, &PayloadError{Err: errors.New("pull_request without repository or pull_request")}
	}
	if !ghPRActions[p.Action] {
		return Parsed{Ignored: fmt.Sprintf("pull_request action %.64q is not handled", p.Action), Repo: p.Repository.FullName, Sender: p.Sender.Login}, nil
	}
	pr := p.PullRequest
	ev := &schemas.WebhookEvent{
		Provider: schemas.ProviderGitHub, HostEvent: "pull_request", Event: schemas.GitEventPullRequest, Action: p.Action,
		Repo: p.Repository.FullName, Ref: branchRef(pr.Head.Ref), Commit: pr.Head.SHA, BaseRef: branchRef(pr.Base.Ref),
		Number: p.Number, Sender: p.Sender.Login, URL: pr.HTMLURL,
	}
	if ev.BaseRef == "" {
		return Parsed{}, &PayloadError{Err: errors.New("pull_request.base.ref missing")}
	}
	host, err := hostOf("repository.html_url", p.Repository.HTMLURL)
	if err != nil {
		return Parsed{}, &PayloadError{Err: err}
	}
	ev.Host = host
	return finish(ev)
}

// branchRef turns a branch name into its full ref; "" stays "".
func branchRef(branch string) string {
	if branch == "" {
		return ""
	}
	return "refs/heads/" + branch
}

// GitLab payload shapes: only the fields CISS reads.
type (
	glProject struct {
		PathWithNamespace string `json:"path_with_namespace"`
		WebURL            string `json:"web_url"`
	}
	glPush struct {
		ObjectKind   string     `json:"object_kind"`
		Ref          string     `json:"ref"`
		After        string     `json:"after"`
		CheckoutSHA  *string    `json:"checkout_sha"`
		UserUsername string     `json:"user_username"`
		Project      *glProject `json:"project"`
	}
	glMergeRequest struct {
		ObjectKind string `json:"object_kind"`
		User       struct {
			Username string `json:"username"`
		} `json:"user"`
		Project          *glProject `json:"project"`
		ObjectAttributes *struct {
			IID          int    `json:"iid"`
			Action       string `json:"action"`
			SourceBranch string `json:"source_branch"`
			TargetBranch string `json:"target_branch"`
			URL          string `json:"url"`
			OldRev       string `json:"oldrev"`
			LastCommit   struct {
				ID string `json:"id"`
			} `json:"last_commit"`
		} `json:"object_attributes"`
	}
	// glClaim is what the body says about its origin, read before the token
	// is verified only to choose the secret.
	glClaim struct {
		Project *struct {
			PathWithNamespace string `json:"path_with_namespace"`
		} `json:"project"`
		UserUsername string `json:"user_username"`
		User         *struct {
			Username string `json:"username"`
		} `json:"user"`
	}
)

// GitLab event headers and the object_kind each must carry.
var glKinds = map[string]string{
	"Push Hook":          "push",
	"Tag Push Hook":      "tag_push",
	"Merge Request Hook": "merge_request",
}

// claimGitLab reads the project and user a GitLab body names, without
// trusting it: it only selects the secret.
func claimGitLab(body []byte) (repo, sender string) {
	var c glClaim
	if json.Unmarshal(body, &c) != nil {
		return "", ""
	}
	if c.Project != nil {
		repo = c.Project.PathWithNamespace
	}
	sender = c.UserUsername
	if sender == "" && c.User != nil {
		sender = c.User.Username
	}
	return repo, sender
}

// ParseGitLab interprets a verified GitLab payload of the given X-Gitlab-Event.
// Push Hook, Tag Push Hook and Merge Request Hook (open, reopen, and update
// with new commits) are understood; other events and actions are ignored.
// Errors are *PayloadError.
func ParseGitLab(event string, body []byte) (Parsed, error) {
	if err := checkJSON(body); err != nil {
		return Parsed{}, err
	}
	kind, ok := glKinds[event]
	if !ok {
		repo, sender := claimGitLab(body)
		return Parsed{Ignored: fmt.Sprintf("event %.64q is not handled", event), Repo: repo, Sender: sender}, nil
	}
	if kind == "merge_request" {
		return parseGitLabMR(body)
	}
	var p glPush
	if err := json.Unmarshal(body, &p); err != nil {
		return Parsed{}, &PayloadError{Err: err}
	}
	if p.ObjectKind != kind {
		return Parsed{}, &PayloadError{Err: fmt.Errorf("object_kind %.64q does not match %s", p.ObjectKind, event)}
	}
	if p.Project == nil {
		return Parsed{}, &PayloadError{Err: errors.New("push without project")}
	}
	commit := p.After
	if p.CheckoutSHA != nil {
		commit = *p.CheckoutSHA
	}
	if p.CheckoutSHA == nil || zeroCommit(p.After) || commit == "" {
		return Parsed{Ignored: "ref deleted", Repo: p.Project.PathWithNamespace, Sender: p.UserUsername}, nil
	}
	ev := &schemas.WebhookEvent{
		Provider: schemas.ProviderGitLab, HostEvent: event, Event: schemas.GitEventPush,
		Repo: p.Project.PathWithNamespace, Ref: p.Ref, Commit: commit, Sender: p.UserUsername,
	}
	prefix := "refs/heads/"
	if kind == "tag_push" {
		ev.Event, prefix = schemas.GitEventTagPush, "refs/tags/"
	}
	if !strings.HasPrefix(p.Ref, prefix) {
		return Parsed{}, &PayloadError{Err: fmt.Errorf("%s with ref %.100q outside %s", event, p.Ref, prefix)}
	}
	host, err := hostOf("project.web_url", p.Project.WebURL)
	if err != nil {
		return Parsed{}, &PayloadError{Err: err}
	}
	ev.Host = host
	ev.URL = strings.TrimSuffix(p.Project.WebURL, "/") + "/-/commit/" + commit
	return finish(ev)
}

func parseGitLabMR(body []byte) (Parsed, error) {
	var p glMergeRequest
	if err := json.Unmarshal(body, &p); err != nil {
		return Parsed{}, &PayloadError{Err: err}
	}
	if p.ObjectKind != "merge_request" {
		return Parsed{}, &PayloadError{Err: fmt.Errorf("object_kind %.64q does not match Merge Request Hook", p.ObjectKind)}
	}
	if p.Project == nil || p.ObjectAttributes == nil {
		return Parsed{}, &PayloadError{Err: errors.New("merge request without project or object_attributes")}
	}
	oa := p.ObjectAttributes
	ignored := func(reason string) (Parsed, error) {
		return Parsed{Ignored: reason, Repo: p.Project.PathWithNamespace, Sender: p.User.Username}, nil
	}
	switch oa.Action {
	case "open", "reopen":
	case "update":
		if oa.OldRev == "" {
			return ignored("merge request updated without new commits")
		}
	default:
		return ignored(fmt.Sprintf("merge request action %.64q is not handled", oa.Action))
	}
	ev := &schemas.WebhookEvent{
		Provider: schemas.ProviderGitLab, HostEvent: "Merge Request Hook", Event: schemas.GitEventPullRequest, Action: oa.Action,
		Repo: p.Project.PathWithNamespace, Ref: branchRef(oa.SourceBranch), Commit: oa.LastCommit.ID,
		BaseRef: branchRef(oa.TargetBranch), Number: oa.IID, Sender: p.User.Username, URL: oa.URL,
	}
	if ev.BaseRef == "" {
		return Parsed{}, &PayloadError{Err: errors.New("object_attributes.target_branch missing")}
	}
	host, err := hostOf("project.web_url", p.Project.WebURL)
	if err != nil {
		return Parsed{}, &PayloadError{Err: err}
	}
	ev.Host = host
	return finish(ev)
}
