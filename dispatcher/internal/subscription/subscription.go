// Package subscription decides which jobs a git webhook event starts. A
// subscription file maps repositories (by provider, host, owner or group,
// and full path, with globs) and events (push, tag_push, pull_request, on
// branch or tag globs) to job specifications, so wiring a repository to its
// scans is configuration, not code.
//
//	version: 1
//	subscriptions:
//	  - name: acme-main                  # unique; recorded in job provenance
//	    tenant: acme                     # the jobs' tenant (schemas.ValidToken)
//	    match:                           # every field given must match
//	      providers: [github]            # github, gitlab; default both
//	      hosts: ["github.com"]          # globs on the git host
//	      owners: ["acme"]               # globs on the owner or group path
//	      repos: ["acme/*"]              # globs on the full path
//	      events: [push, pull_request]   # required: push, tag_push, pull_request
//	      branches: [main, "release/*"]  # push: the branch; pull_request: the target branch
//	      tags: ["v*"]                   # tag_push: the tag
//	    jobs:
//	      - type: image-scan             # one of schemas.KnownJobTypes
//	        target:
//	          image: "registry.acme.example/{repo}:{short_commit}"
//	        params: {severity: "HIGH,CRITICAL"}
//	        lane: interactive            # default interactive
//	        cache: true                  # default true
//
// Globs: "*" matches within one path segment, "**" across segments, "?" one
// character. Hosts, owners and repositories match case-insensitively (the
// hosts treat them so), branches and tags case-sensitively (git does).
//
// Templates in target and params values expand {provider}, {host}, {repo},
// {owner}, {name} (these four lower-cased, as image references require),
// {ref}, {branch}, {tag}, {commit}, {short_commit} (12 characters), {event}
// and {number} (a pull request's). Every subscription that matches an event
// fires; each of its jobs is created once per delivery.
//
// Job types are checked against schemas.KnownJobTypes. A sast job names the
// repository to fetch and the commit, usually from the event:
//
//	jobs:
//	  - type: sast
//	    target: {repo: "https://{host}/{repo}.git", commit: "{commit}"}
package subscription

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"ciss.dev/schemas"
)

// Version is the only subscription file version understood.
const Version = 1

// ErrInvalid is wrapped by every error that rejects a subscription file.
var ErrInvalid = errors.New("invalid subscriptions")

// FieldError says which part of a subscription file is wrong.
type FieldError struct {
	// Field is a path such as "subscriptions[1].jobs[0].type".
	Field string
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Is makes every FieldError match ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// File is the subscription file's format.
type File struct {
	// Version must be 1.
	Version int `json:"version"`
	// Subscriptions are all tried for every event.
	Subscriptions []Subscription `json:"subscriptions"`
}

// Subscription maps matching events to jobs of one tenant.
type Subscription struct {
	// Name identifies the subscription in provenance and logs.
	Name string `json:"name"`
	// Tenant owns the jobs.
	Tenant string `json:"tenant"`
	// Match selects events.
	Match Match `json:"match"`
	// Jobs are created for every matching event.
	Jobs []JobSpec `json:"jobs"`
}

// Match selects events. Empty lists match anything, except Events, which is
// required.
type Match struct {
	// Providers are github and/or gitlab.
	Providers []schemas.GitProvider `json:"providers,omitempty"`
	// Hosts are globs on the git host ("github.com").
	Hosts []string `json:"hosts,omitempty"`
	// Owners are globs on the owner: a GitHub user or organisation, a GitLab
	// group path.
	Owners []string `json:"owners,omitempty"`
	// Repos are globs on the repository's full path.
	Repos []string `json:"repos,omitempty"`
	// Events are the normalised events that match; required.
	Events []schemas.GitEvent `json:"events"`
	// Branches are globs on the pushed branch (push) or the target branch
	// (pull_request).
	Branches []string `json:"branches,omitempty"`
	// Tags are globs on the pushed tag (tag_push).
	Tags []string `json:"tags,omitempty"`
}

// JobSpec is one job to create, with templates in Target and Params values.
type JobSpec struct {
	// Type is one of schemas.KnownJobTypes.
	Type string `json:"type"`
	// Target holds exactly the type's target fields (image-scan: image), as
	// templates.
	Target map[string]string `json:"target"`
	// Params are the job's parameters, values as templates.
	Params map[string]string `json:"params,omitempty"`
	// Lane is the priority lane; default interactive.
	Lane schemas.Lane `json:"lane,omitempty"`
	// Cache, when false, bypasses the result cache; default true.
	Cache *bool `json:"cache,omitempty"`
}

// targetFields lists each job type's target fields: all required, no others.
var targetFields = map[string][]string{
	schemas.JobTypeImageScan: {"image"},
	schemas.JobTypeSBOM:      {"image"},
	schemas.JobTypeSAST:      {"repo", "commit"},
}

// placeholderRE finds template placeholders.
var placeholderRE = regexp.MustCompile(`\{[^{}]*\}`)

// placeholders are the template variables, each taken from an event.
var placeholders = map[string]func(*schemas.WebhookEvent) string{
	"provider": func(e *schemas.WebhookEvent) string { return string(e.Provider) },
	"host":     func(e *schemas.WebhookEvent) string { return strings.ToLower(e.Host) },
	"repo":     func(e *schemas.WebhookEvent) string { return strings.ToLower(e.Repo) },
	"owner":    func(e *schemas.WebhookEvent) string { return strings.ToLower(e.Owner()) },
	"name": func(e *schemas.WebhookEvent) string {
		_, n := schemas.SplitRepo(e.Repo)
		return strings.ToLower(n)
	},
	"ref":          func(e *schemas.WebhookEvent) string { return e.Ref },
	"branch":       func(e *schemas.WebhookEvent) string { return e.Branch() },
	"tag":          func(e *schemas.WebhookEvent) string { return e.Tag() },
	"commit":       func(e *schemas.WebhookEvent) string { return e.Commit },
	"short_commit": func(e *schemas.WebhookEvent) string { return e.Commit[:min(12, len(e.Commit))] },
	"event":        func(e *schemas.WebhookEvent) string { return string(e.Event) },
	"number": func(e *schemas.WebhookEvent) string {
		if e.Number == 0 {
			return ""
		}
		return strconv.Itoa(e.Number)
	},
}

// sampleEvents are what templates are tried on at load time: a template
// that gives no valid request for any of them is refused up front.
var sampleEvents = []schemas.WebhookEvent{
	{Provider: schemas.ProviderGitHub, Event: schemas.GitEventPush, Host: "github.com", Repo: "acme/app",
		Ref: "refs/heads/main", Commit: strings.Repeat("0a", 20)},
	{Provider: schemas.ProviderGitLab, Event: schemas.GitEventTagPush, Host: "gitlab.com", Repo: "acme/group/app",
		Ref: "refs/tags/v1.0.0", Commit: strings.Repeat("0b", 20)},
	{Provider: schemas.ProviderGitHub, Event: schemas.GitEventPullRequest, Host: "github.com", Repo: "acme/app",
		Ref: "refs/heads/fix", BaseRef: "refs/heads/main", Commit: strings.Repeat("0c", 20), Number: 7},
}

// compiled is a validated subscription with its globs compiled.
type compiled struct {
	Subscription
	hosts, owners, repos, branches, tags []*regexp.Regexp
}

// Set is a validated subscription file.
type Set struct {
	subs []compiled
}

// Parse decodes and validates a subscription file strictly.
func Parse(b []byte) (*Set, error) {
	var f File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if f.Version != Version {
		return nil, &FieldError{Field: "version", Reason: fmt.Sprintf("must be %d, got %d", Version, f.Version)}
	}
	set := &Set{}
	names := map[string]int{}
	for i, s := range f.Subscriptions {
		c, err := compile(i, s, names)
		if err != nil {
			return nil, err
		}
		set.subs = append(set.subs, c)
	}
	return set, nil
}

// Load reads and parses a subscription file.
func Load(path string) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("subscriptions: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("subscriptions %s: %w", path, err)
	}
	return s, nil
}

// Len is the number of subscriptions.
func (s *Set) Len() int { return len(s.subs) }

func compile(i int, s Subscription, names map[string]int) (compiled, error) {
	bad := func(field, format string, args ...any) (compiled, error) {
		return compiled{}, &FieldError{Field: fmt.Sprintf("subscriptions[%d].%s", i, field), Reason: fmt.Sprintf(format, args...)}
	}
	c := compiled{Subscription: s}
	switch j, dup := names[s.Name]; {
	case s.Name == "" || len(s.Name) > 64 || strings.ContainsFunc(s.Name, func(r rune) bool { return r <= ' ' || r > '~' }):
		return bad("name", "is required: 1 to 64 printable ASCII characters without spaces")
	case dup:
		return bad("name", "%q is already used by subscriptions[%d]", s.Name, j)
	}
	names[s.Name] = i
	if !schemas.ValidToken(s.Tenant) {
		return bad("tenant", "%q must be lower-case letters, digits and dashes, starting with a letter, at most %d long", s.Tenant, schemas.MaxTokenLen)
	}
	m := s.Match
	for k, p := range m.Providers {
		if !p.Valid() {
			return bad(fmt.Sprintf("match.providers[%d]", k), "unknown provider %q; github or gitlab", p)
		}
	}
	if len(m.Events) == 0 {
		return bad("match.events", "needs at least one of push, tag_push, pull_request")
	}
	for k, e := range m.Events {
		if !e.Valid() {
			return bad(fmt.Sprintf("match.events[%d]", k), "unknown event %q; one of push, tag_push, pull_request", e)
		}
	}
	for _, g := range []struct {
		name     string
		patterns []string
		fold     bool
		into     *[]*regexp.Regexp
	}{
		{"hosts", m.Hosts, true, &c.hosts}, {"owners", m.Owners, true, &c.owners}, {"repos", m.Repos, true, &c.repos},
		{"branches", m.Branches, false, &c.branches}, {"tags", m.Tags, false, &c.tags},
	} {
		for k, p := range g.patterns {
			re, err := Glob(p, g.fold)
			if err != nil {
				return bad(fmt.Sprintf("match.%s[%d]", g.name, k), "%v", err)
			}
			*g.into = append(*g.into, re)
		}
	}
	if len(s.Jobs) == 0 {
		return bad("jobs", "needs at least one job")
	}
	for k, j := range s.Jobs {
		if err := checkJob(j); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				return bad(fmt.Sprintf("jobs[%d].%s", k, fe.Field), "%s", fe.Reason)
			}
			return bad(fmt.Sprintf("jobs[%d]", k), "%v", err)
		}
	}
	return c, nil
}

// checkJob validates a job specification: a known type, exactly its target
// fields, known placeholders, and a request that validates when expanded
// for a sample event.
func checkJob(j JobSpec) error {
	if schemas.IsVaultAction(j.Type) {
		// Protected actions need a requester's certificate identity and the
		// gateway's guardrails: a webhook carries neither.
		return &FieldError{Field: "type", Reason: fmt.Sprintf("%q is a protected action, which only a certificate holder can request through the API", j.Type)}
	}
	fields, ok := targetFields[j.Type]
	if !ok {
		var known []string
		for _, t := range schemas.KnownJobTypes() {
			if !schemas.IsVaultAction(t) {
				known = append(known, t)
			}
		}
		return &FieldError{Field: "type", Reason: fmt.Sprintf("unknown job type %q; this CISS knows %s", j.Type, strings.Join(known, ", "))}
	}
	for _, f := range fields {
		if j.Target[f] == "" {
			return &FieldError{Field: "target." + f, Reason: "is required for " + j.Type}
		}
	}
	for k := range j.Target {
		if !slices.Contains(fields, k) {
			return &FieldError{Field: "target." + k, Reason: fmt.Sprintf("is not a target field of %s (%s)", j.Type, strings.Join(fields, ", "))}
		}
	}
	for _, t := range []struct {
		field string
		m     map[string]string
	}{{"target", j.Target}, {"params", j.Params}} {
		for k, v := range t.m {
			if err := checkTemplate(v); err != nil {
				return &FieldError{Field: t.field + "." + k, Reason: err.Error()}
			}
		}
	}
	var first error
	for i := range sampleEvents {
		_, err := j.Expand(&sampleEvents[i])
		if err == nil {
			return nil
		}
		first = cmp.Or(first, err)
	}
	return &FieldError{Field: "target", Reason: "gives no valid request for a push, tag or pull request: " + first.Error()}
}

func checkTemplate(s string) error {
	rest := placeholderRE.ReplaceAllStringFunc(s, func(p string) string {
		if _, ok := placeholders[p[1:len(p)-1]]; !ok {
			return "\x00" + p
		}
		return ""
	})
	if i := strings.IndexByte(rest, 0); i >= 0 {
		p := rest[i+1:]
		p = p[:strings.IndexByte(p, '}')+1]
		return fmt.Errorf("unknown placeholder %s; known: %s", p, strings.Join(slices.Sorted(maps.Keys(placeholders)), ", "))
	}
	if strings.ContainsAny(rest, "{}") {
		return errors.New("has an unmatched { or }")
	}
	return nil
}

func expand(s string, ev *schemas.WebhookEvent) string {
	return placeholderRE.ReplaceAllStringFunc(s, func(p string) string {
		if f, ok := placeholders[p[1:len(p)-1]]; ok {
			return f(ev)
		}
		return p
	})
}

// Expand turns the specification into a validated job request for ev.
func (j JobSpec) Expand(ev *schemas.WebhookEvent) (schemas.JobRequest, error) {
	req := schemas.JobRequest{Type: j.Type, Lane: j.Lane, Cache: j.Cache}
	if img, ok := j.Target["image"]; ok {
		req.Target.Image = expand(img, ev)
	}
	if repo, ok := j.Target["repo"]; ok {
		req.Target.Repo = expand(repo, ev)
	}
	if c, ok := j.Target["commit"]; ok {
		req.Target.Commit = expand(c, ev)
	}
	if len(j.Params) > 0 {
		req.Params = make(map[string]string, len(j.Params))
		for k, v := range j.Params {
			req.Params[k] = expand(v, ev)
		}
	}
	if err := req.Validate(); err != nil {
		return req, err
	}
	return req, nil
}

// matches reports whether the subscription selects ev.
func (c *compiled) matches(ev *schemas.WebhookEvent) bool {
	m := c.Match
	if !slices.Contains(m.Events, ev.Event) || (len(m.Providers) > 0 && !slices.Contains(m.Providers, ev.Provider)) {
		return false
	}
	if !anyMatch(c.hosts, ev.Host) || !anyMatch(c.owners, ev.Owner()) || !anyMatch(c.repos, ev.Repo) {
		return false
	}
	switch ev.Event {
	case schemas.GitEventTagPush:
		return anyMatch(c.tags, ev.Tag())
	default:
		return anyMatch(c.branches, ev.Branch())
	}
}

// anyMatch is true for no patterns, else when one matches s.
func anyMatch(res []*regexp.Regexp, s string) bool {
	if len(res) == 0 {
		return true
	}
	return slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(s) })
}

// Planned is one job a subscription asks for.
type Planned struct {
	// Subscription and Tenant are the subscription's.
	Subscription, Tenant string
	// Index is the job's position in the subscription's jobs, part of its
	// identity.
	Index int
	// Request is the expanded request; valid unless Err is set.
	Request schemas.JobRequest
	// Err says why the expanded request is invalid for this event (say, a
	// {tag} template on a push); such a job is skipped.
	Err error
}

// Plan lists the jobs ev starts, subscription by subscription in file order.
func (s *Set) Plan(ev *schemas.WebhookEvent) []Planned {
	var out []Planned
	for i := range s.subs {
		c := &s.subs[i]
		if !c.matches(ev) {
			continue
		}
		for k, j := range c.Jobs {
			req, err := j.Expand(ev)
			out = append(out, Planned{Subscription: c.Name, Tenant: c.Tenant, Index: k, Request: req, Err: err})
		}
	}
	return out
}

// Glob compiles a pattern: "**" matches any run of characters, "*" any run
// without "/", "?" one character other than "/"; everything else is literal.
// fold makes it case-insensitive.
func Glob(pattern string, fold bool) (*regexp.Regexp, error) {
	if pattern == "" {
		return nil, errors.New("empty pattern")
	}
	var b strings.Builder
	if fold {
		b.WriteString("(?i)")
	}
	b.WriteString("^")
	rs := []rune(pattern)
	for i := 0; i < len(rs); i++ {
		switch c := rs[i]; {
		case c == '*' && i+1 < len(rs) && rs[i+1] == '*':
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}
