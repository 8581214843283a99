package schemas

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Protected-action job types: low-risk Vault changes made with CISS's powerful
// credentials on behalf of a tenant, inside guardrails. Their parameters travel in
// JobRequest.Params and are parsed by ParseVaultAction, the one parser both the
// gateway (guardrails, before anything reaches Vault) and the worker (the executor)
// use.
const (
	// JobTypeVaultAuthOnboard enables and configures an auth method for a tenant.
	JobTypeVaultAuthOnboard = "vault-auth-onboard"
	// JobTypeVaultNamespaceCreate creates a Vault Enterprise namespace for a tenant.
	JobTypeVaultNamespaceCreate = "vault-namespace-create"
	// JobTypeVaultPolicyApply creates or updates a tenant policy from the template.
	JobTypeVaultPolicyApply = "vault-policy-apply"
)

// VaultActionTypes lists the protected-action job types.
func VaultActionTypes() []string {
	return []string{JobTypeVaultAuthOnboard, JobTypeVaultNamespaceCreate, JobTypeVaultPolicyApply}
}

// IsVaultAction reports whether t is a protected-action job type.
func IsVaultAction(t string) bool { return slices.Contains(VaultActionTypes(), t) }

// Auth method types a tenant may onboard.
const (
	AuthAppRole    = "approle"
	AuthJWT        = "jwt"
	AuthOIDC       = "oidc"
	AuthKubernetes = "kubernetes"
)

// Policy capabilities a tenant policy may grant. sudo, deny and patch-free admin
// capabilities are never accepted.
var tenantCapabilities = []string{"create", "read", "update", "delete", "list"}

var (
	// actionNameRE is a short DNS-label-like name: it cannot contain '/', '.', or
	// anything that would let it climb out of the tenant's paths.
	actionNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)
	// pathSegRE is one segment of a tenant-relative secret path.
	pathSegRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	// claimKeyRE is a JWT claim name.
	claimKeyRE = regexp.MustCompile(`^[A-Za-z0-9_:/.-]{1,64}$`)
	// saNameRE is a Kubernetes service account or namespace name (or "*" is refused).
	saNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// VaultAction is a parsed, validated protected action. Every Vault path it leads to
// is derived from Tenant and Name; none comes from the requester verbatim.
type VaultAction struct {
	// Type is one of VaultActionTypes.
	Type string `json:"type"`
	// Tenant is the requester's tenant (from its certificate, never the body).
	Tenant string `json:"tenant"`
	// Name names the auth mount, policy or namespace within the tenant.
	Name string `json:"name"`
	// AuthType is the auth method (vault-auth-onboard only).
	AuthType string `json:"auth_type,omitempty"`
	// Role is the role created on the auth method; default "default".
	Role string `json:"role,omitempty"`
	// Paths are secret paths relative to the tenant prefix the generated policy
	// grants; a trailing "*" segment means everything below.
	Paths []string `json:"paths,omitempty"`
	// Capabilities are granted on Paths; default read, list.
	Capabilities []string `json:"capabilities,omitempty"`
	// TokenTTL and TokenMaxTTL bound tokens issued by the role; SecretIDTTL bounds
	// AppRole secret IDs.
	TokenTTL    time.Duration `json:"token_ttl,omitempty"`
	TokenMaxTTL time.Duration `json:"token_max_ttl,omitempty"`
	SecretIDTTL time.Duration `json:"secret_id_ttl,omitempty"`
	// BoundCIDRs restricts where tokens (and AppRole secret IDs) may be used from.
	BoundCIDRs []netip.Prefix `json:"bound_cidrs,omitempty"`
	// JWT/OIDC: the issuer's discovery URL or PEM public keys, the issuer and
	// audience to bind, the claim naming the user, and claims that must match.
	OIDCDiscoveryURL string            `json:"oidc_discovery_url,omitempty"`
	JWTPublicKeys    string            `json:"jwt_validation_pubkeys,omitempty"`
	BoundIssuer      string            `json:"bound_issuer,omitempty"`
	BoundAudiences   []string          `json:"bound_audiences,omitempty"`
	UserClaim        string            `json:"user_claim,omitempty"`
	BoundClaims      map[string]string `json:"bound_claims,omitempty"`
	// Kubernetes: the API server and the service accounts allowed to log in.
	KubernetesHost     string   `json:"kubernetes_host,omitempty"`
	KubernetesCACert   string   `json:"kubernetes_ca_cert,omitempty"`
	ServiceAccounts    []string `json:"bound_service_account_names,omitempty"`
	ServiceAccountNSes []string `json:"bound_service_account_namespaces,omitempty"`
	// DryRun asks for the plan only.
	DryRun bool `json:"dry_run,omitempty"`
}

// Vault action parameter names (keys of JobRequest.Params).
const (
	VaultParamName         = "name"
	VaultParamAuthType     = "auth_type"
	VaultParamRole         = "role"
	VaultParamPaths        = "paths"
	VaultParamCapabilities = "capabilities"
	VaultParamTokenTTL     = "token_ttl"
	VaultParamTokenMaxTTL  = "token_max_ttl"
	VaultParamSecretIDTTL  = "secret_id_ttl"
	VaultParamBoundCIDRs   = "bound_cidrs"
	VaultParamDiscoveryURL = "oidc_discovery_url"
	VaultParamPublicKeys   = "jwt_validation_pubkeys"
	VaultParamBoundIssuer  = "bound_issuer"
	VaultParamAudiences    = "bound_audiences"
	VaultParamUserClaim    = "user_claim"
	VaultParamBoundClaims  = "bound_claims"
	VaultParamK8sHost      = "kubernetes_host"
	VaultParamK8sCACert    = "kubernetes_ca_cert"
	VaultParamSANames      = "bound_service_account_names"
	VaultParamSANamespaces = "bound_service_account_namespaces"
	VaultParamDryRun       = "dry_run"
)

var vaultParams = map[string][]string{
	JobTypeVaultAuthOnboard: {VaultParamName, VaultParamAuthType, VaultParamRole, VaultParamPaths, VaultParamCapabilities,
		VaultParamTokenTTL, VaultParamTokenMaxTTL, VaultParamSecretIDTTL, VaultParamBoundCIDRs, VaultParamDiscoveryURL,
		VaultParamPublicKeys, VaultParamBoundIssuer, VaultParamAudiences, VaultParamUserClaim, VaultParamBoundClaims,
		VaultParamK8sHost, VaultParamK8sCACert, VaultParamSANames, VaultParamSANamespaces, VaultParamDryRun},
	JobTypeVaultNamespaceCreate: {VaultParamName, VaultParamPaths, VaultParamCapabilities, VaultParamTokenTTL,
		VaultParamTokenMaxTTL, VaultParamSecretIDTTL, VaultParamBoundCIDRs, VaultParamDryRun},
	JobTypeVaultPolicyApply: {VaultParamName, VaultParamPaths, VaultParamCapabilities, VaultParamDryRun},
}

// MaxVaultTTL is the hard ceiling on any TTL, whatever the guardrails say.
const MaxVaultTTL = 30 * 24 * time.Hour

// ParseVaultAction parses and validates a protected action's parameters for a
// tenant. Unknown parameters, names that could escape the tenant's paths, paths
// with "..", templates or absolute prefixes, and out-of-range values are refused
// with *FieldError values naming the parameter.
func ParseVaultAction(jobType, tenant string, params map[string]string) (*VaultAction, error) {
	if !actionNameRE.MatchString(tenant) {
		return nil, &FieldError{Field: "tenant", Reason: fmt.Sprintf("%q is not a valid tenant name", tenant)}
	}
	return parseVaultAction(jobType, tenant, params)
}

// parseVaultAction is ParseVaultAction without the tenant check, for
// JobRequest.Validate, which does not know the tenant.
func parseVaultAction(jobType, tenant string, params map[string]string) (*VaultAction, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	allowed, ok := vaultParams[jobType]
	if !ok {
		return nil, &FieldError{Field: "type", Reason: fmt.Sprintf("%q is not a protected action", jobType)}
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !slices.Contains(allowed, k) {
			bad("params."+k, "is not a parameter of %s", jobType)
		}
	}
	a := &VaultAction{Type: jobType, Tenant: tenant, Name: params[VaultParamName], Role: params[VaultParamRole]}
	p := "params."
	if !actionNameRE.MatchString(a.Name) {
		bad(p+VaultParamName, "must be 1-32 lower-case letters, digits or inner dashes (no '/', '.', or '..')")
	}
	if a.Role == "" {
		a.Role = "default"
	} else if !actionNameRE.MatchString(a.Role) {
		bad(p+VaultParamRole, "must be 1-32 lower-case letters, digits or inner dashes")
	}
	if v, ok := params[VaultParamDryRun]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(p+VaultParamDryRun, "must be true or false")
		}
		a.DryRun = b
	}
	for _, s := range splitList(params[VaultParamPaths]) {
		if reason := checkRelPath(s); reason != "" {
			bad(p+VaultParamPaths, "%.80q %s", s, reason)
			continue
		}
		a.Paths = append(a.Paths, s)
	}
	if len(a.Paths) == 0 && jobType != JobTypeVaultNamespaceCreate {
		a.Paths = []string{"*"}
	}
	for _, c := range splitList(params[VaultParamCapabilities]) {
		if !slices.Contains(tenantCapabilities, c) {
			bad(p+VaultParamCapabilities, "%.40q is not one of %s", c, strings.Join(tenantCapabilities, ", "))
			continue
		}
		if !slices.Contains(a.Capabilities, c) {
			a.Capabilities = append(a.Capabilities, c)
		}
	}
	if len(a.Capabilities) == 0 {
		a.Capabilities = []string{"read", "list"}
	}
	sort.Strings(a.Capabilities)
	dur := func(key string, dst *time.Duration) {
		v, ok := params[key]
		if !ok {
			return
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d%time.Second != 0 {
			bad(p+key, "must be a positive whole number of seconds as a Go duration (e.g. 1h)")
			return
		}
		if d > MaxVaultTTL {
			bad(p+key, "is longer than %s", MaxVaultTTL)
			return
		}
		*dst = d
	}
	dur(VaultParamTokenTTL, &a.TokenTTL)
	dur(VaultParamTokenMaxTTL, &a.TokenMaxTTL)
	dur(VaultParamSecretIDTTL, &a.SecretIDTTL)
	if a.TokenTTL > 0 && a.TokenMaxTTL > 0 && a.TokenTTL > a.TokenMaxTTL {
		bad(p+VaultParamTokenTTL, "is longer than token_max_ttl")
	}
	for _, c := range splitList(params[VaultParamBoundCIDRs]) {
		pf, err := netip.ParsePrefix(c)
		if err != nil || pf != pf.Masked() {
			bad(p+VaultParamBoundCIDRs, "%.50q is not a CIDR in canonical form (e.g. 10.0.0.0/8)", c)
			continue
		}
		a.BoundCIDRs = append(a.BoundCIDRs, pf)
	}
	if jobType == JobTypeVaultAuthOnboard {
		a.AuthType = params[VaultParamAuthType]
		a.parseAuth(params, bad)
	} else {
		for _, k := range []string{VaultParamAuthType} {
			if _, ok := params[k]; ok {
				bad(p+k, "is only for %s", JobTypeVaultAuthOnboard)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *VaultAction) parseAuth(params map[string]string, bad func(string, string, ...any)) {
	p := "params."
	only := func(types []string, keys ...string) {
		for _, k := range keys {
			if _, ok := params[k]; ok && !slices.Contains(types, a.AuthType) {
				bad(p+k, "is not a parameter of auth type %q", a.AuthType)
			}
		}
	}
	jwtish := []string{AuthJWT, AuthOIDC}
	only(jwtish, VaultParamDiscoveryURL, VaultParamPublicKeys, VaultParamBoundIssuer, VaultParamAudiences,
		VaultParamUserClaim, VaultParamBoundClaims)
	only([]string{AuthKubernetes}, VaultParamK8sHost, VaultParamK8sCACert, VaultParamSANames, VaultParamSANamespaces)
	only([]string{AuthAppRole}, VaultParamSecretIDTTL)
	switch a.AuthType {
	case AuthAppRole:
	case AuthJWT, AuthOIDC:
		a.OIDCDiscoveryURL = params[VaultParamDiscoveryURL]
		a.JWTPublicKeys = params[VaultParamPublicKeys]
		a.BoundIssuer = params[VaultParamBoundIssuer]
		a.UserClaim = params[VaultParamUserClaim]
		if a.UserClaim == "" {
			a.UserClaim = "sub"
		} else if !claimKeyRE.MatchString(a.UserClaim) {
			bad(p+VaultParamUserClaim, "is not a claim name")
		}
		switch {
		case (a.OIDCDiscoveryURL == "") == (a.JWTPublicKeys == ""):
			bad(p+VaultParamDiscoveryURL, "exactly one of oidc_discovery_url and jwt_validation_pubkeys is required")
		case a.OIDCDiscoveryURL != "" && !strings.HasPrefix(a.OIDCDiscoveryURL, "https://"):
			bad(p+VaultParamDiscoveryURL, "must be an https:// URL")
		case a.JWTPublicKeys != "" && !strings.HasPrefix(strings.TrimSpace(a.JWTPublicKeys), "-----BEGIN PUBLIC KEY-----"):
			bad(p+VaultParamPublicKeys, "must be PEM public keys")
		}
		a.BoundAudiences = splitList(params[VaultParamAudiences])
		if len(a.BoundAudiences) == 0 {
			bad(p+VaultParamAudiences, "is required: a role must be bound to at least one audience")
		}
		for _, kv := range splitList(params[VaultParamBoundClaims]) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || !claimKeyRE.MatchString(k) || v == "" || strings.ContainsAny(v, "*") {
				bad(p+VaultParamBoundClaims, "%.80q must be claim=value (no globs)", kv)
				continue
			}
			if a.BoundClaims == nil {
				a.BoundClaims = map[string]string{}
			}
			a.BoundClaims[k] = v
		}
		if len(a.BoundClaims) == 0 {
			bad(p+VaultParamBoundClaims, "is required: a CI role must be bound to at least one claim (e.g. project_path=group/repo)")
		}
	case AuthKubernetes:
		a.KubernetesHost = params[VaultParamK8sHost]
		a.KubernetesCACert = params[VaultParamK8sCACert]
		if !strings.HasPrefix(a.KubernetesHost, "https://") {
			bad(p+VaultParamK8sHost, "must be an https:// URL")
		}
		a.ServiceAccounts = splitList(params[VaultParamSANames])
		a.ServiceAccountNSes = splitList(params[VaultParamSANamespaces])
		for _, l := range [][]string{a.ServiceAccounts, a.ServiceAccountNSes} {
			for _, n := range l {
				if !saNameRE.MatchString(n) {
					bad(p+VaultParamSANames, "%.70q is not a Kubernetes name (globs are not allowed)", n)
				}
			}
		}
		if len(a.ServiceAccounts) == 0 || len(a.ServiceAccountNSes) == 0 {
			bad(p+VaultParamSANames, "bound_service_account_names and bound_service_account_namespaces are required")
		}
	case "":
		bad(p+VaultParamAuthType, "is required; one of approle, jwt, oidc, kubernetes")
	default:
		bad(p+VaultParamAuthType, "%.40q is not one of approle, jwt, oidc, kubernetes", a.AuthType)
	}
}

// checkRelPath explains why s is not a safe tenant-relative path, or returns "".
// Only plain segments and a final "*" are allowed, so no "..", no absolute or
// mount prefixes such as "sys/", no ACL templates ("{{identity...}}") and no "+".
func checkRelPath(s string) string {
	if len(s) > 256 {
		return "is longer than 256 characters"
	}
	segs := strings.Split(s, "/")
	for i, seg := range segs {
		if seg == "*" && i == len(segs)-1 {
			continue
		}
		if !pathSegRE.MatchString(seg) {
			return "must be '/'-separated segments of letters, digits, '_' or '-', optionally ending in '/*' (no '..', templates, globs or empty segments)"
		}
	}
	return ""
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Vault paths derived from a tenant and a name. They never include requester text
// other than names that matched actionNameRE.

// AuthMount is the auth method's mount path (without "auth/"): ciss/<tenant>/<name>.
func (a *VaultAction) AuthMount() string { return "ciss/" + a.Tenant + "/" + a.Name }

// PolicyName is the generated policy's name: ciss.<tenant>.<name>. The dot cannot
// occur in a tenant or a name, so two tenants never share a policy name.
func (a *VaultAction) PolicyName() string { return "ciss." + a.Tenant + "." + a.Name }

// SecretPrefixes are the tenant's prefixes on a KV v2 mount: data and metadata.
func SecretPrefixes(kvMount, tenant string) []string {
	return []string{kvMount + "/data/" + tenant + "/", kvMount + "/metadata/" + tenant + "/"}
}

// PolicyHCL renders the tenant policy from the fixed template: each path under
// the tenant's prefix on the KV v2 mount, with the granted capabilities (list only
// on metadata). Its output only ever names paths under SecretPrefixes; the tests
// (and the executor, before writing) check that.
func (a *VaultAction) PolicyHCL(kvMount string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Generated by CISS for tenant %s (%s). Do not edit: CISS overwrites it.\n", a.Tenant, a.Name)
	caps := func(cs []string) string {
		q := make([]string, len(cs))
		for i, c := range cs {
			q[i] = strconv.Quote(c)
		}
		return strings.Join(q, ", ")
	}
	var dataCaps, metaCaps []string
	for _, c := range a.Capabilities {
		if c == "list" {
			metaCaps = append(metaCaps, c)
		} else {
			dataCaps = append(dataCaps, c)
		}
		if c == "read" || c == "delete" {
			metaCaps = append(metaCaps, c)
		}
	}
	for _, rel := range a.Paths {
		pre := SecretPrefixes(kvMount, a.Tenant)
		if len(dataCaps) > 0 {
			fmt.Fprintf(&b, "path %q {\n  capabilities = [%s]\n}\n", pre[0]+rel, caps(dataCaps))
		}
		if len(metaCaps) > 0 {
			fmt.Fprintf(&b, "path %q {\n  capabilities = [%s]\n}\n", pre[1]+rel, caps(metaCaps))
		}
	}
	return b.String()
}

// SubjectAuditActionPrefix starts the subjects of protected-action audit records
// in the CISS_AUDIT stream: ciss.audit.action.<stage>.<verdict>.
const SubjectAuditActionPrefix = "ciss.audit.action"

// Audit stages of a protected action.
const (
	// AuditStageDecision is the gateway's guardrail decision on a request.
	AuditStageDecision = "decision"
	// AuditStageCall is one Vault API call made by the worker.
	AuditStageCall = "call"
	// AuditStageResult is the outcome of a run.
	AuditStageResult = "result"
)

// SubjectAuditAction is where a protected-action audit record of a stage with a
// verdict (allowed, denied, ok, error, ...) is stored.
func SubjectAuditAction(stage, verdict string) string {
	return SubjectAuditActionPrefix + "." + stage + "." + verdict
}

// ActionAudit is one audit record of a protected action. It never holds a Vault
// token or secret ID: request parameters carry none, and Vault call bodies are
// redacted before they get here.
type ActionAudit struct {
	// Time is when the record was made.
	Time time.Time `json:"time"`
	// Stage is one of the AuditStage constants; Verdict its outcome.
	Stage   string `json:"stage"`
	Verdict string `json:"verdict"`
	// JobID, Tenant, Type identify the action; Identity is the requester's
	// certificate identity (SPIFFE ID or subject).
	JobID    string `json:"job_id,omitempty"`
	Tenant   string `json:"tenant"`
	Type     string `json:"type"`
	Identity string `json:"identity,omitempty"`
	// Params are the request's parameters (decision stage).
	Params map[string]string `json:"params,omitempty"`
	// Rule and Reason explain a guardrail decision.
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Method, Path, Namespace and Body describe a Vault call (call stage).
	Method    string         `json:"method,omitempty"`
	Path      string         `json:"path,omitempty"`
	Namespace string         `json:"namespace,omitempty"`
	Body      map[string]any `json:"body,omitempty"`
	// Error is a failed call's or run's error.
	Error string `json:"error,omitempty"`
	// Summary is a run's plan summary (result stage).
	Summary string `json:"summary,omitempty"`
}
