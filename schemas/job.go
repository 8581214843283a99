// Package schemas holds the versioned wire types that every CISS component shares:
// the public job API (request, job status, result document), the internal task and
// task-result messages, the CloudEvents envelope they travel in, and the NATS
// subject and JetStream names that connect the components.
//
// It depends on the standard library only, so that any component (and any
// third-party consumer of the event stream) can import it without pulling in a
// scanner, a signer or a broker client. The JSON Schema files under jsonschema/
// and the OpenAPI description in openapi.yaml describe the same types; the tests
// in this package fail when the two drift apart.
package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Job types known to CISS. A job type names an outcome ("scan this image"); which
// tool produces it is the dispatcher's routing decision, never the requester's.
const (
	// JobTypeImageScan scans a container image for known vulnerabilities.
	JobTypeImageScan = "image-scan"
	// JobTypeSBOM produces a CycloneDX (1.5+) SBOM of a container image.
	JobTypeSBOM = "sbom"
	// JobTypeSAST runs static analysis (SAST) on a git commit's source tree.
	JobTypeSAST = "sast"
)

// KnownJobTypes lists the job types the API accepts, in a stable order.
func KnownJobTypes() []string {
	return []string{JobTypeImageScan, JobTypeSBOM, JobTypeSAST, JobTypeVaultAuthOnboard, JobTypeVaultNamespaceCreate, JobTypeVaultPolicyApply}
}

// Lane is a priority lane. Each lane has its own subjects, consumers and worker
// concurrency, so a backlog in one lane never delays work in the other.
type Lane string

// Priority lanes.
const (
	// LaneInteractive is for pipelines and webhooks: someone is waiting.
	LaneInteractive Lane = "interactive"
	// LaneBulk is for scheduled rescans and backfills.
	LaneBulk Lane = "bulk"
)

// Lanes lists every lane, interactive first.
func Lanes() []Lane { return []Lane{LaneInteractive, LaneBulk} }

// Valid reports whether l is a known lane.
func (l Lane) Valid() bool { return l == LaneInteractive || l == LaneBulk }

// Status is the state of a job.
type Status string

// Job states. Queued and running are the only non-terminal ones.
const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
	// StatusPendingApproval is a protected action waiting for an approver; it is
	// not dispatched until approved (POST /v1/jobs/{id}/approve).
	StatusPendingApproval Status = "pending-approval"
)

// Terminal reports whether no further transition can happen from s.
func (s Status) Terminal() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCancelled
}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	switch s {
	case StatusQueued, StatusRunning, StatusSucceeded, StatusFailed, StatusCancelled, StatusPendingApproval:
		return true
	}
	return false
}

// JobRequest is the body of POST /v1/jobs.
type JobRequest struct {
	// Type is the outcome asked for, one of KnownJobTypes.
	Type string `json:"type"`
	// Target is what the job is about.
	Target Target `json:"target"`
	// Params are type-specific options, passed to the tool's parameter mapping.
	Params map[string]string `json:"params,omitempty"`
	// Lane is the priority lane; empty means interactive.
	Lane Lane `json:"lane,omitempty"`
	// Cache, when false, bypasses the result cache for this job. Nil means true.
	Cache *bool `json:"cache,omitempty"`
}

// Target is the subject of a job. Exactly the fields the job type needs are set.
type Target struct {
	// Image is an OCI image reference, by tag or by digest
	// (host:port/repo:tag or host:port/repo@sha256:…).
	Image string `json:"image,omitempty"`
	// Repo is a git repository URL (sast): https://, http:// or file://, no
	// credentials, no query or fragment. Which schemes a worker fetches is
	// its configuration; credentials come from the worker, never from here.
	Repo string `json:"repo,omitempty"`
	// Commit is the full 40-hex commit SHA in Repo (sast).
	Commit string `json:"commit,omitempty"`
}

// Limits on request fields; they keep keys, subjects and logs bounded.
const (
	MaxImageRefLen   = 512
	MaxRepoURLLen    = 512
	MaxParams        = 32
	MaxParamKeyLen   = 64
	MaxParamValueLen = 1024
)

var (
	paramKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]*$`)
	// imageRefRE is deliberately conservative: registry host[:port], path
	// components, then a tag and/or a sha256 digest. No whitespace, no scheme.
	// The registry host is explicit (a DNS name or IPv4 address, labels
	// without leading/trailing dashes, optional port): "library/alpine" is
	// refused rather than read as a host called "library".
	imageRefRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$`)
)

// FieldError says which request field is wrong and why. The gateway turns it into
// a problem+json "invalid-params" entry.
type FieldError struct {
	Field  string `json:"name"`
	Reason string `json:"reason"`
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Validate checks a request and fills defaults (lane). It returns every problem
// found, joined, each a *FieldError.
func (r *JobRequest) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	switch r.Type {
	case "":
		bad("type", "is required; one of %s", strings.Join(KnownJobTypes(), ", "))
	case JobTypeImageScan, JobTypeSBOM:
		switch {
		case r.Target.Image == "":
			bad("target.image", "is required for %s", r.Type)
		case len(r.Target.Image) > MaxImageRefLen:
			bad("target.image", "is longer than %d characters", MaxImageRefLen)
		case !imageRefRE.MatchString(r.Target.Image):
			bad("target.image", "is not an image reference of the form host[:port]/repo[:tag][@sha256:digest]")
		default:
			if reason := checkRegistry(r.Target.Image); reason != "" {
				bad("target.image", "%s", reason)
			}
		}
	case JobTypeSAST:
		if r.Target.Image != "" {
			bad("target.image", "is not a target field of %s (repo, commit)", r.Type)
		}
		if r.Target.Repo == "" {
			bad("target.repo", "is required for %s", r.Type)
		} else if reason := CheckRepoURL(r.Target.Repo); reason != "" {
			bad("target.repo", "%s", reason)
		}
		if r.Target.Commit == "" {
			bad("target.commit", "is required for %s", r.Type)
		} else if !commitRE.MatchString(r.Target.Commit) {
			bad("target.commit", "must be a full 40-character lower-case hex commit SHA")
		}
	case JobTypeVaultAuthOnboard, JobTypeVaultNamespaceCreate, JobTypeVaultPolicyApply:
		// Protected actions have no target; their params are checked by the one
		// parser the gateway's guardrails and the worker's executor share.
		if r.Target != (Target{}) {
			bad("target", "must be empty for %s", r.Type)
		}
		if _, err := parseVaultAction(r.Type, "", r.Params); err != nil {
			errs = append(errs, err)
		}
	default:
		bad("type", "unknown job type %q; one of %s", r.Type, strings.Join(KnownJobTypes(), ", "))
	}
	if r.Type != JobTypeSAST && (r.Target.Repo != "" || r.Target.Commit != "") {
		bad("target", "repo and commit are target fields of %s only", JobTypeSAST)
	}
	if r.Lane == "" {
		r.Lane = LaneInteractive
	} else if !r.Lane.Valid() {
		bad("lane", "unknown lane %q; one of interactive, bulk", r.Lane)
	}
	if len(r.Params) > MaxParams {
		bad("params", "has more than %d entries", MaxParams)
	}
	for k, v := range r.Params {
		if len(k) > MaxParamKeyLen || !paramKeyRE.MatchString(k) {
			bad("params", "key %.64q must match %s and be at most %d characters", k, paramKeyRE, MaxParamKeyLen)
		}
		if len(v) > MaxParamValueLen {
			bad("params."+k, "is longer than %d characters", MaxParamValueLen)
		}
		if !utf8.ValidString(v) || strings.ContainsFunc(v, unsafeRune) {
			bad("params."+k, "contains invalid UTF-8, control, format (e.g. bidi override) or line separator characters")
		}
	}
	return errors.Join(errs...)
}

// unsafeRune reports characters that could inject into logs, terminals or
// command lines: C0/C1 controls, format characters (bidi overrides, zero-width)
// and Unicode line/paragraph separators.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

// checkRegistry checks the registry part of a reference that matched
// imageRefRE: it must name a registry explicitly (contain a dot or a port, or
// be localhost) and any port must be 1–65535.
func checkRegistry(ref string) string {
	host, _, _ := strings.Cut(ref, "/")
	name, port, hasPort := strings.Cut(host, ":")
	if !hasPort && !strings.Contains(name, ".") && name != "localhost" {
		return "must start with a registry host (e.g. registry.example.com/ or host:port/); short Docker Hub names are not accepted"
	}
	if hasPort {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("registry port %q is not in 1-65535", port)
		}
	}
	return ""
}

// CacheEnabled reports whether the request may be answered from the result cache.
func (r *JobRequest) CacheEnabled() bool { return r.Cache == nil || *r.Cache }

// Job is the state of one job: what GET /v1/jobs/{id} returns and what the job
// state bucket holds.
type Job struct {
	// ID is unique and sorts by creation time.
	ID string `json:"id"`
	// Tenant owns the job; only identities of that tenant can see it.
	Tenant string `json:"tenant"`
	// Type, Target, Params and Lane are copied from the request.
	Type   string            `json:"type"`
	Target Target            `json:"target"`
	Params map[string]string `json:"params,omitempty"`
	Lane   Lane              `json:"lane"`
	// Cache is whether the result cache may answer this job.
	Cache bool `json:"cache"`
	// Status is the job's current state.
	Status Status `json:"status"`
	// RequestedBy is the identity (SPIFFE ID or certificate subject) that submitted it.
	RequestedBy string `json:"requested_by"`
	// ApprovedBy is the identity that approved a protected action that needed it.
	ApprovedBy string `json:"approved_by,omitempty"`
	// IdempotencyKey is the client's Idempotency-Key header, if any.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// RequestDigest is the sha256 of the normalised request, to tell a replay from
	// a conflicting reuse of an idempotency key.
	RequestDigest string `json:"request_digest"`
	// Tool is the implementation chosen for the authoritative result, once routed.
	Tool string `json:"tool,omitempty"`
	// ToolVersion is the version of Tool that produced the result.
	ToolVersion string `json:"tool_version,omitempty"`
	// Tasks lists the tasks the job fanned out to.
	Tasks []TaskRef `json:"tasks,omitempty"`
	// CacheHit is true when the result came from the result cache.
	CacheHit bool `json:"cache_hit"`
	// Attempts counts deliveries of the authoritative task to a worker.
	Attempts int `json:"attempts,omitempty"`
	// Error says why a job failed or was cancelled.
	Error *Error `json:"error,omitempty"`
	// Result describes the authoritative result once the job succeeded.
	Result *Result `json:"result,omitempty"`
	// Provenance is the git event the job was created from; set only for jobs
	// created by webhooks.
	Provenance *Provenance `json:"provenance,omitempty"`
	// Timestamps. StartedAt and FinishedAt are set once reached.
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// TaskRole says whether a task's result is authoritative.
type TaskRole string

// Task roles. Shadow results are stored and compared, never returned as the job's result.
const (
	RolePrimary TaskRole = "primary"
	RoleShadow  TaskRole = "shadow"
)

// TaskRef is a job's record of one task it fanned out to.
type TaskRef struct {
	ID     string   `json:"id"`
	Tool   string   `json:"tool"`
	Role   TaskRole `json:"role"`
	Status Status   `json:"status"`
	// Trial names the tool trial the task belongs to: a shadow's comparison,
	// or the canary the primary task was routed by.
	Trial string `json:"trial,omitempty"`
}

// Error is a machine-readable failure reason.
type Error struct {
	// Code is a stable identifier, e.g. "image_not_found", "tool_failed".
	Code string `json:"code"`
	// Message is for humans.
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Error codes used across components.
const (
	CodeNoRoute        = "no_route"
	CodeInvalidTarget  = "invalid_target"
	CodeTargetNotFound = "target_not_found"
	CodeTargetDenied   = "target_not_allowed"
	CodeToolFailed     = "tool_failed"
	CodeTimeout        = "timeout"
	CodeCancelled      = "cancelled"
	CodeMaxDeliveries  = "max_deliveries"
	CodeInternal       = "internal"
)

// Result describes a finished task's output: a summary plus the stored reports.
type Result struct {
	// ImageDigest is the digest the scan actually ran against (for tags, as resolved).
	ImageDigest string `json:"image_digest,omitempty"`
	// Summary counts findings by severity.
	Summary Summary `json:"summary"`
	// Reports lists the report documents, one per format.
	Reports []Report `json:"reports"`
	// DBVersion identifies the vulnerability database the tool used.
	DBVersion string `json:"db_version,omitempty"`
	// Findings is the stored FindingSet: the findings in the common model,
	// for trials and variance tracking.
	Findings *Report `json:"findings,omitempty"`
	// Policy is the tenant policy's verdict, when the worker applies one.
	Policy *PolicyDecision `json:"policy,omitempty"`
	// ImageSignature is where the image's cosign signature and attestations
	// were written; set only when the image passed the policy and was signed.
	ImageSignature *ImageSignature `json:"image_signature,omitempty"`
	// GitTag is the signed annotated tag pushed for a sast commit that passed
	// the policy.
	GitTag *GitTag `json:"git_tag,omitempty"`
	// Signature is the worker's DSSE envelope over an in-toto statement of
	// this result (ResultStatement); verify it with VerifyTaskResult.
	Signature *Envelope `json:"signature,omitempty"`
}

// Summary counts findings by severity.
type Summary struct {
	Critical int `json:"critical"`
	High     int `json:"high"`
	Medium   int `json:"medium"`
	Low      int `json:"low"`
	Unknown  int `json:"unknown"`
}

// Total is the number of findings of any severity.
func (s Summary) Total() int { return s.Critical + s.High + s.Medium + s.Low + s.Unknown }

// Report formats and their media types.
const (
	FormatNative    = "native"
	FormatSARIF     = "sarif"
	FormatCycloneDX = "cyclonedx"

	MediaTypeJSON      = "application/json"
	MediaTypeSARIF     = "application/sarif+json"
	MediaTypeCycloneDX = "application/vnd.cyclonedx+json"
)

// Report is one stored report document.
type Report struct {
	// Format is native (the tool's own JSON), sarif or cyclonedx.
	Format string `json:"format"`
	// MediaType is what GET /v1/jobs/{id}/result answers with for this format.
	MediaType string `json:"media_type"`
	// Object is the name in the report object store.
	Object string `json:"object"`
	// Digest is "sha256:" and the hex digest of the document.
	Digest string `json:"digest"`
	// Size is the document's length in bytes.
	Size int64 `json:"size"`
}

// MarshalJSON encodes a result; a nil Reports is written as [] (the schema's
// array), never null.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	if r.Reports == nil {
		r.Reports = []Report{}
	}
	return json.Marshal(plain(r))
}

// ReportFor returns the report of the given format, if the result has one.
func (r *Result) ReportFor(format string) (Report, bool) {
	for _, rep := range r.Reports {
		if rep.Format == format {
			return rep, true
		}
	}
	return Report{}, false
}
