// Package vaultaction executes protected actions against a real Vault: it reads
// the current state, computes a plan (the ordered Vault API calls with their
// bodies, secrets redacted), and either returns it (dry run) or applies it,
// idempotently (nothing to change → an empty plan and "no changes"), rolling back
// what it changed when a later step fails.
//
// Every path it touches is derived from the tenant and a validated name
// (schemas.VaultAction), under auth/ciss/<tenant>/, sys/auth/ciss/<tenant>/ and
// sys/policies/acl/ciss.<tenant>.*; the least-privilege CISS policy in
// deploy/vault/ciss-policy.hcl grants exactly that, and the tests run with it.
package vaultaction

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Step is one Vault API call of a plan.
type Step struct {
	// Method is the HTTP method sent: PUT (Vault treats it like the POST its
	// documentation lists) or DELETE.
	Method string `json:"method"`
	// Path is the API path after /v1/.
	Path string `json:"path"`
	// Namespace is the X-Vault-Namespace the call is made in, if any.
	Namespace string `json:"namespace,omitempty"`
	// Body is the request body, with secrets redacted in plans and results.
	Body map[string]any `json:"body,omitempty"`
	// Change says why: "create", or "update" with the changed fields.
	Change string `json:"change"`

	// undo reverts the step; nil when it cannot be reverted (never for a plan
	// that was applied: every kind of step has one).
	undo *Step
}

// Plan is what a run would do, in order.
type Plan struct {
	// Steps are the calls to make; empty when Vault already matches.
	Steps []Step `json:"steps"`
	// Summary is a one-line description ("no changes" for an empty plan).
	Summary string `json:"summary"`
}

// Result is what a run did.
type Result struct {
	// DryRun is true when nothing was changed on purpose.
	DryRun bool `json:"dry_run"`
	// Plan is the plan computed from Vault's state before the run.
	Plan Plan `json:"plan"`
	// Applied are the steps that were executed (all of them on success).
	Applied []Step `json:"applied,omitempty"`
	// RolledBack are the undo calls made after a failure.
	RolledBack []Step `json:"rolled_back,omitempty"`
	// Changed reports whether Vault was changed (and stays changed).
	Changed bool `json:"changed"`
}

// redactKeys are body fields never shown in a plan, a result, a log or an audit
// record.
var redactKeys = []string{"token", "secret_id", "password", "client_secret", "oidc_client_secret",
	"token_reviewer_jwt", "role_id", "client_token", "accessor"}

// Redacted returns a copy of s whose secret body fields read "<redacted>".
func (s Step) Redacted() Step {
	out := s
	out.undo = nil
	if s.Body != nil {
		out.Body = make(map[string]any, len(s.Body))
		for k, v := range s.Body {
			if slices.Contains(redactKeys, k) {
				v = "<redacted>"
			}
			out.Body[k] = v
		}
	}
	return out
}

func (p *Plan) summarize() {
	if len(p.Steps) == 0 {
		p.Summary = "no changes"
		return
	}
	var parts []string
	for _, s := range p.Steps {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", s.Method, s.Path, s.Change))
	}
	p.Summary = fmt.Sprintf("%d change(s): %s", len(p.Steps), strings.Join(parts, "; "))
}

// diff returns the keys of want whose values differ from have (nil have: all of
// them). Values are compared after a JSON round trip, with lists compared as sets
// and durations in seconds, which is how Vault reads them back.
func diff(want, have map[string]any) []string {
	var out []string
	for k, w := range want {
		if have == nil || !sameValue(w, have[k]) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func sameValue(a, b any) bool {
	na, nb := normalize(a), normalize(b)
	return na == nb
}

// normalize renders a value canonically: lists sorted, empty list == absent,
// strings trimmed, numbers as JSON numbers.
func normalize(v any) string {
	var x any
	raw, _ := json.Marshal(v)
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	_ = dec.Decode(&x)
	switch t := x.(type) {
	case nil:
		return ""
	case []any:
		items := make([]string, len(t))
		for i, e := range t {
			items[i] = normalize(e)
		}
		sort.Strings(items)
		if len(items) == 0 {
			return ""
		}
		return "[" + strings.Join(items, ",") + "]"
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			b.WriteString(k + "=" + normalize(t[k]) + ";")
		}
		return "{" + b.String() + "}"
	case string:
		return strings.TrimSpace(t)
	case json.Number:
		return t.String()
	default:
		return fmt.Sprint(t)
	}
}
