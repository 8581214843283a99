// Package policy decides which tenant a client identity acts for and what it
// may do there.
//
// A policy is a YAML document, decoded strictly (unknown fields and duplicate
// keys are errors), and denies by default:
//
//	version: 1
//	bindings:
//	  - name: acme-ci                  # required, unique; appears in logs
//	    match:                         # at least one field; all given must match
//	      spiffe_id: "spiffe://ciss.dev/tenant/acme/*"
//	      # cn: "ci-*"                 # subject common name
//	      # o: "Acme"                  # any subject organization
//	      # ou: "build"                # any subject organizational unit
//	    tenant: acme                   # schemas.ValidToken: [a-z][a-z0-9-]{0,62}
//	    roles: [submitter, reader]     # submitter, reader, approver, admin
//
// Patterns use path.Match syntax: "*" matches any run of characters except "/",
// "?" one character, "[...]" a class, "\\" escapes. So
// "spiffe://ciss.dev/tenant/acme/*" matches ".../acme/ci" but not
// ".../acme/ci/extra". Bindings are tried in order and the first match wins; an
// identity no binding matches is refused. A binding with an empty match is
// rejected because it would match everyone.
//
// Roles: submitter may submit and cancel jobs (POST, DELETE); reader may read
// jobs and results (GET); approver may read and approve protected actions
// waiting for approval (never its own); admin may do all of it.
package policy

import (
	"fmt"
	"os"
	"path"
	"sync/atomic"

	"ciss.dev/gateway/internal/mtls"
	"ciss.dev/schemas"
	"sigs.k8s.io/yaml"
)

// Version is the only policy document version understood.
const Version = 1

// Role is a named set of permitted actions.
type Role string

// Roles.
const (
	RoleSubmitter Role = "submitter"
	RoleReader    Role = "reader"
	RoleAdmin     Role = "admin"
	// RoleApprover may approve protected actions waiting for approval in its
	// tenant (never its own requests) and read jobs.
	RoleApprover Role = "approver"
)

// Action is what a request does, as far as authorization is concerned.
type Action int

// Actions.
const (
	// ActionRead is reading jobs and results.
	ActionRead Action = iota + 1
	// ActionSubmit is submitting and cancelling jobs.
	ActionSubmit
	// ActionAudit is reading audit records, which are not tenant-scoped; only
	// the admin role permits it.
	ActionAudit
	// ActionApprove is approving a protected action.
	ActionApprove
)

// String names the action for logs and problem details.
func (a Action) String() string {
	switch a {
	case ActionRead:
		return "read"
	case ActionSubmit:
		return "submit"
	case ActionAudit:
		return "audit"
	case ActionApprove:
		return "approve"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// allows reports whether r permits a; unknown roles permit nothing.
func (r Role) allows(a Action) bool {
	switch r {
	case RoleAdmin:
		return true
	case RoleSubmitter:
		return a == ActionSubmit
	case RoleReader:
		return a == ActionRead
	case RoleApprover:
		return a == ActionApprove || a == ActionRead
	}
	return false
}

// Policy is a parsed, validated policy document.
type Policy struct {
	// Version must be 1.
	Version int `json:"version"`
	// Bindings are tried in order.
	Bindings []Binding `json:"bindings"`
}

// Binding maps matching identities to a tenant and roles.
type Binding struct {
	// Name identifies the binding in logs and audit records.
	Name string `json:"name"`
	// Match selects identities.
	Match Match `json:"match"`
	// Tenant is the tenant matching identities act for.
	Tenant string `json:"tenant"`
	// Roles are what matching identities may do.
	Roles []Role `json:"roles"`
}

// Match holds glob patterns for identity attributes; empty fields are ignored.
type Match struct {
	SPIFFEID string `json:"spiffe_id,omitempty"`
	CN       string `json:"cn,omitempty"`
	O        string `json:"o,omitempty"`
	OU       string `json:"ou,omitempty"`
}

// Parse decodes and validates a policy document.
func Parse(b []byte) (*Policy, error) {
	var p Policy
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Load reads and parses a policy file.
func Load(file string) (*Policy, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", file, err)
	}
	return p, nil
}

func (p *Policy) validate() error {
	if p.Version != Version {
		return &FieldError{Field: "version", Reason: fmt.Sprintf("must be %d, got %d", Version, p.Version)}
	}
	names := make(map[string]int, len(p.Bindings))
	for i := range p.Bindings {
		b := &p.Bindings[i]
		bad := func(field, format string, args ...any) error {
			return &FieldError{Field: fmt.Sprintf("bindings[%d].%s", i, field), Reason: fmt.Sprintf(format, args...)}
		}
		if b.Name == "" {
			return bad("name", "is required")
		}
		if j, dup := names[b.Name]; dup {
			return bad("name", "%q is already used by bindings[%d]", b.Name, j)
		}
		names[b.Name] = i
		if b.Match == (Match{}) {
			return bad("match", "needs at least one of spiffe_id, cn, o, ou (an empty match would match everyone)")
		}
		for _, f := range [...]struct{ name, pattern string }{
			{"spiffe_id", b.Match.SPIFFEID}, {"cn", b.Match.CN}, {"o", b.Match.O}, {"ou", b.Match.OU},
		} {
			// path.Match checks the whole pattern even when the name does not match.
			if _, err := path.Match(f.pattern, ""); err != nil {
				return bad("match."+f.name, "bad pattern %q: %v", f.pattern, err)
			}
		}
		if !schemas.ValidToken(b.Tenant) {
			return bad("tenant", "%q must be lower-case letters, digits and dashes, starting with a letter, at most %d long", b.Tenant, schemas.MaxTokenLen)
		}
		if len(b.Roles) == 0 {
			return bad("roles", "needs at least one of submitter, reader, admin")
		}
		for k, r := range b.Roles {
			if r != RoleSubmitter && r != RoleReader && r != RoleAdmin && r != RoleApprover {
				return bad(fmt.Sprintf("roles[%d]", k), "unknown role %q; one of submitter, reader, approver, admin", r)
			}
		}
	}
	return nil
}

// Match returns the first binding that matches id.
func (p *Policy) Match(id mtls.Identity) (*Binding, bool) {
	for i := range p.Bindings {
		if p.Bindings[i].Match.matches(id) {
			return &p.Bindings[i], true
		}
	}
	return nil, false
}

// Can reports whether the binding's roles permit a.
func (b *Binding) Can(a Action) bool {
	for _, r := range b.Roles {
		if r.allows(a) {
			return true
		}
	}
	return false
}

// matches requires every non-empty pattern to match. Patterns were validated,
// so path.Match cannot fail here. An empty Match matches nothing, as a second
// line of defence behind validate.
func (m Match) matches(id mtls.Identity) bool {
	if m == (Match{}) {
		return false
	}
	if m.SPIFFEID != "" && (id.SPIFFEID == "" || !glob(m.SPIFFEID, id.SPIFFEID)) {
		return false
	}
	if m.CN != "" && (id.CommonName == "" || !glob(m.CN, id.CommonName)) {
		return false
	}
	if m.O != "" && !anyGlob(m.O, id.Organization) {
		return false
	}
	if m.OU != "" && !anyGlob(m.OU, id.OrganizationalUnit) {
		return false
	}
	return true
}

func glob(pattern, s string) bool {
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}

func anyGlob(pattern string, values []string) bool {
	for _, v := range values {
		if v != "" && glob(pattern, v) {
			return true
		}
	}
	return false
}

// File is a policy loaded from a file that can be reloaded while requests are
// being authorized.
type File struct {
	path string
	cur  atomic.Pointer[Policy]
}

// OpenFile loads the policy file; it fails when the file is missing or invalid.
func OpenFile(file string) (*File, error) {
	f := &File{path: file}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Reload reads the file again. On error the previous policy stays in force.
func (f *File) Reload() error {
	p, err := Load(f.path)
	if err != nil {
		return err
	}
	f.cur.Store(p)
	return nil
}

// Policy returns the policy in force.
func (f *File) Policy() *Policy { return f.cur.Load() }

// Match matches id against the policy in force.
func (f *File) Match(id mtls.Identity) (*Binding, bool) { return f.cur.Load().Match(id) }
