// Package guardrail decides whether a protected action (a Vault change CISS makes
// with its own powerful credentials) is within the safe operating parameters the
// operator set for the requester. It runs in the gateway at submit time, so an
// out-of-bounds request is refused with a problem+json naming the rule before
// anything reaches Vault; the gateway links no Vault client for it.
//
// The guardrail file is YAML, decoded strictly, and denies by default: a request
// no rule matches is refused.
//
//	version: 1
//	rules:
//	  - name: onboard-ci                 # required, unique; named in refusals
//	    tenants: ["acme", "team-*"]      # tenant globs (path.Match)
//	    roles: [submitter]               # the caller must hold one of them
//	    actions: [vault-auth-onboard, vault-policy-apply]
//	    names: ["ci-*"]                  # globs for the action's name
//	    auth_types: [approle, jwt]       # vault-auth-onboard only
//	    capabilities: [read, list]       # the most a generated policy may grant
//	    max_token_ttl: 1h
//	    max_token_max_ttl: 24h
//	    max_secret_id_ttl: 24h
//	    require_ttls: true               # token_ttl and token_max_ttl must be given
//	    allowed_cidrs: ["10.0.0.0/8"]    # bound_cidrs must lie inside these
//	    require_cidrs: false             # bound_cidrs must be given
//	    bound_claims:                    # claim -> allowed value globs ({tenant} is replaced)
//	      project_path: ["{tenant}/*"]
//	    require_approval: false          # the job waits for an approver
//
// A request is allowed when at least one rule matching its tenant, roles and
// action admits all its parameters. Otherwise the refusal names the first rule
// that matched and the first of its constraints that failed, or "default-deny".
package guardrail

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"ciss.dev/schemas"
	"sigs.k8s.io/yaml"
)

// Version is the only guardrail document version understood.
const Version = 1

// DefaultDeny is the rule name of a refusal no rule matched.
const DefaultDeny = "default-deny"

// ErrInvalid is wrapped by every error rejecting a guardrail document.
var ErrInvalid = errors.New("invalid guardrail document")

// Denied says which rule refused a request and why. The gateway answers it with
// 403 problem+json.
type Denied struct {
	// Rule is the rule's name (or DefaultDeny), and Field the constraint.
	Rule  string
	Field string
	// Reason explains the refusal.
	Reason string
}

// Error implements error.
func (d *Denied) Error() string {
	if d.Field == "" {
		return fmt.Sprintf("guardrail %q: %s", d.Rule, d.Reason)
	}
	return fmt.Sprintf("guardrail %q: %s: %s", d.Rule, d.Field, d.Reason)
}

// Duration is a time.Duration written as a Go duration string ("1h").
type Duration time.Duration

// UnmarshalJSON reads "1h30m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a non-negative duration", s)
	}
	*d = Duration(v)
	return nil
}

// Rules is a parsed, validated guardrail document.
type Rules struct {
	// Version must be 1.
	Version int `json:"version"`
	// Rules are tried in order.
	Rules []Rule `json:"rules"`
}

// Rule states what matching requesters may do.
type Rule struct {
	Name            string              `json:"name"`
	Tenants         []string            `json:"tenants"`
	Roles           []string            `json:"roles"`
	Actions         []string            `json:"actions"`
	Names           []string            `json:"names"`
	AuthTypes       []string            `json:"auth_types,omitempty"`
	Capabilities    []string            `json:"capabilities,omitempty"`
	MaxTokenTTL     Duration            `json:"max_token_ttl,omitempty"`
	MaxTokenMaxTTL  Duration            `json:"max_token_max_ttl,omitempty"`
	MaxSecretIDTTL  Duration            `json:"max_secret_id_ttl,omitempty"`
	RequireTTLs     bool                `json:"require_ttls,omitempty"`
	AllowedCIDRs    []string            `json:"allowed_cidrs,omitempty"`
	RequireCIDRs    bool                `json:"require_cidrs,omitempty"`
	BoundClaims     map[string][]string `json:"bound_claims,omitempty"`
	RequireApproval bool                `json:"require_approval,omitempty"`

	cidrs []netip.Prefix
}

// Parse decodes and validates a guardrail document.
func Parse(b []byte) (*Rules, error) {
	var r Rules
	if err := yaml.UnmarshalStrict(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return &r, nil
}

// Load reads and parses a guardrail file.
func Load(file string) (*Rules, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read guardrails: %w", err)
	}
	return Parse(b)
}

func (r *Rules) validate() error {
	if r.Version != Version {
		return fmt.Errorf("version: must be %d", Version)
	}
	seen := map[string]bool{}
	for i := range r.Rules {
		ru := &r.Rules[i]
		at := fmt.Sprintf("rules[%d]", i)
		switch {
		case ru.Name == "" || ru.Name == DefaultDeny:
			return fmt.Errorf("%s.name: is required and may not be %q", at, DefaultDeny)
		case seen[ru.Name]:
			return fmt.Errorf("%s.name: %q is used twice", at, ru.Name)
		case len(ru.Tenants) == 0 || len(ru.Roles) == 0 || len(ru.Actions) == 0 || len(ru.Names) == 0:
			return fmt.Errorf("%s: tenants, roles, actions and names are required (deny by default)", at)
		}
		seen[ru.Name] = true
		for _, g := range slices.Concat(ru.Tenants, ru.Names) {
			if _, err := path.Match(g, ""); err != nil {
				return fmt.Errorf("%s: bad glob %q: %w", at, g, err)
			}
		}
		for _, a := range ru.Actions {
			if !schemas.IsVaultAction(a) {
				return fmt.Errorf("%s.actions: %q is not a protected action", at, a)
			}
		}
		for _, t := range ru.AuthTypes {
			if !slices.Contains([]string{schemas.AuthAppRole, schemas.AuthJWT, schemas.AuthOIDC, schemas.AuthKubernetes}, t) {
				return fmt.Errorf("%s.auth_types: unknown auth type %q", at, t)
			}
		}
		for _, c := range ru.AllowedCIDRs {
			p, err := netip.ParsePrefix(c)
			if err != nil || p != p.Masked() {
				return fmt.Errorf("%s.allowed_cidrs: %q is not a canonical CIDR", at, c)
			}
			ru.cidrs = append(ru.cidrs, p)
		}
		for _, d := range []Duration{ru.MaxTokenTTL, ru.MaxTokenMaxTTL, ru.MaxSecretIDTTL} {
			if time.Duration(d) > schemas.MaxVaultTTL {
				return fmt.Errorf("%s: a max TTL is above the hard ceiling %s", at, schemas.MaxVaultTTL)
			}
		}
	}
	return nil
}

// Decision is an allowed request: the rule that allowed it and whether it needs
// approval.
type Decision struct {
	Rule            string
	RequireApproval bool
}

// Evaluate decides a parsed action for a caller with the given roles. It returns
// a *Denied error when no rule admits it.
func (r *Rules) Evaluate(a *schemas.VaultAction, roles []string) (Decision, error) {
	var first *Denied
	for i := range r.Rules {
		ru := &r.Rules[i]
		if !globAny(ru.Tenants, a.Tenant) || !slices.Contains(ru.Actions, a.Type) || !overlap(ru.Roles, roles) {
			continue
		}
		if d := ru.admit(a); d != nil {
			if first == nil {
				first = d
			}
			continue
		}
		return Decision{Rule: ru.Name, RequireApproval: ru.RequireApproval}, nil
	}
	if first != nil {
		return Decision{}, first
	}
	return Decision{}, &Denied{Rule: DefaultDeny, Reason: fmt.Sprintf(
		"no guardrail rule lets tenant %q with roles [%s] request %s", a.Tenant, strings.Join(roles, ", "), a.Type)}
}

// admit checks a's parameters against the rule; nil means admitted.
func (ru *Rule) admit(a *schemas.VaultAction) *Denied {
	deny := func(field, format string, args ...any) *Denied {
		return &Denied{Rule: ru.Name, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if !globAny(ru.Names, a.Name) {
		return deny("names", "name %q matches none of %v", a.Name, ru.Names)
	}
	if a.Type == schemas.JobTypeVaultAuthOnboard && !slices.Contains(ru.AuthTypes, a.AuthType) {
		return deny("auth_types", "auth type %q is not one of %v", a.AuthType, ru.AuthTypes)
	}
	for _, c := range a.Capabilities {
		if !slices.Contains(ru.Capabilities, c) {
			return deny("capabilities", "capability %q is not one of %v", c, ru.Capabilities)
		}
	}
	ttl := func(field string, got time.Duration, limit Duration) *Denied {
		switch {
		case got == 0 && ru.RequireTTLs && field != "max_secret_id_ttl":
			return deny(field, "a %s is required", strings.TrimPrefix(field, "max_"))
		case got == 0 && limit > 0 && field == "max_secret_id_ttl" && a.AuthType == schemas.AuthAppRole:
			return deny(field, "secret_id_ttl is required (unlimited secret IDs are not allowed)")
		case limit > 0 && got > time.Duration(limit):
			return deny(field, "%s %s exceeds %s", strings.TrimPrefix(field, "max_"), got, time.Duration(limit))
		}
		return nil
	}
	if d := ttl("max_token_ttl", a.TokenTTL, ru.MaxTokenTTL); d != nil {
		return d
	}
	if d := ttl("max_token_max_ttl", a.TokenMaxTTL, ru.MaxTokenMaxTTL); d != nil {
		return d
	}
	if a.Type != schemas.JobTypeVaultPolicyApply {
		if d := ttl("max_secret_id_ttl", a.SecretIDTTL, ru.MaxSecretIDTTL); d != nil {
			return d
		}
	}
	if ru.RequireCIDRs && len(a.BoundCIDRs) == 0 && a.Type != schemas.JobTypeVaultPolicyApply {
		return deny("require_cidrs", "bound_cidrs are required")
	}
	for _, c := range a.BoundCIDRs {
		if !slices.ContainsFunc(ru.cidrs, func(p netip.Prefix) bool { return p.Bits() <= c.Bits() && p.Contains(c.Addr()) }) {
			return deny("allowed_cidrs", "%s is not inside %v", c, ru.AllowedCIDRs)
		}
	}
	for k, v := range a.BoundClaims {
		globs, ok := ru.BoundClaims[k]
		if !ok {
			return deny("bound_claims", "claim %q may not be bound", k)
		}
		ok = false
		for _, g := range globs {
			if m, _ := path.Match(strings.ReplaceAll(g, "{tenant}", a.Tenant), v); m {
				ok = true
			}
		}
		if !ok {
			return deny("bound_claims", "claim %s=%q matches none of %v", k, v, globs)
		}
	}
	return nil
}

func globAny(globs []string, s string) bool {
	for _, g := range globs {
		if m, _ := path.Match(g, s); m {
			return true
		}
	}
	return false
}

func overlap(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}
