package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"ciss.dev/gateway/internal/guardrail"
	"ciss.dev/gateway/internal/jobstore"
	"ciss.dev/gateway/internal/mtls"
	"ciss.dev/gateway/internal/policy"
	"ciss.dev/gateway/internal/problem"
	"ciss.dev/gateway/internal/webhook"
	"ciss.dev/schemas"
)

// Static request errors.
var (
	// ErrUnsupportedMediaType means POST /v1/jobs had another Content-Type than
	// application/json.
	ErrUnsupportedMediaType = errors.New("Content-Type must be application/json")
	// ErrNoBinding means no policy binding matches the caller's identity.
	ErrNoBinding = errors.New("no policy binding matches this identity")
	// ErrJobNotFound means the job does not exist for the caller's tenant (it may
	// exist for another one: the two are deliberately indistinguishable).
	ErrJobNotFound = errors.New("job not found")
	// ErrRouteNotFound means no route matches the path.
	ErrRouteNotFound = errors.New("no such resource")
	// ErrIdempotencyKeyReused means an Idempotency-Key came back with another body.
	ErrIdempotencyKeyReused = errors.New("Idempotency-Key was already used with a different request body")
	// ErrConcurrentUpdate means the job kept changing while cancelling it.
	ErrConcurrentUpdate = errors.New("job changed concurrently; retry")
	// ErrReportMissing means a succeeded job names a report the object store
	// does not have: an inconsistency on the server side (500), not a 404.
	ErrReportMissing = errors.New("report object missing")
)

// ParamError is a malformed query parameter or header (400).
type ParamError struct {
	// Name is the parameter or header name.
	Name string
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *ParamError) Error() string { return e.Name + ": " + e.Reason }

// MalformedError is a request body that is not one strict JSON JobRequest (400).
type MalformedError struct {
	// Err is the decoding error.
	Err error
}

// Error implements error.
func (e *MalformedError) Error() string { return "malformed JSON body: " + e.Err.Error() }

// Unwrap returns the decoding error.
func (e *MalformedError) Unwrap() error { return e.Err }

// ValidationError lists the fields a decoded request got wrong (422).
type ValidationError struct {
	// Fields lists every problem found, sorted by field.
	Fields []schemas.FieldError
}

// Error implements error.
func (e *ValidationError) Error() string {
	s := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		s[i] = f.Error()
	}
	return "invalid request: " + strings.Join(s, "; ")
}

// ForbiddenError says that the caller's binding lacks a role for an action (403).
type ForbiddenError struct {
	// Binding names the policy binding that matched the caller.
	Binding string
	// Action is what the request wanted to do.
	Action policy.Action
}

// Error implements error.
func (e *ForbiddenError) Error() string {
	return fmt.Sprintf("binding %q does not allow %s", e.Binding, e.Action)
}

// MethodNotAllowedError is a known path with another method (405).
type MethodNotAllowedError struct {
	// Allow lists the path's methods, as for the Allow header.
	Allow string
}

// Error implements error.
func (e *MethodNotAllowedError) Error() string { return "method not allowed; allowed: " + e.Allow }

// JobStateError is an operation the job's status does not permit (409).
type JobStateError struct {
	// Job is the job as found.
	Job schemas.Job
	// Slug is the problem type slug, e.g. "job-terminal".
	Slug string
	// Msg is the problem detail.
	Msg string
}

// Error implements error.
func (e *JobStateError) Error() string { return e.Msg }

// NotAcceptableError means the result has no report in any acceptable format (406).
type NotAcceptableError struct {
	// Available lists the media types the result offers.
	Available []string
}

// Error implements error.
func (e *NotAcceptableError) Error() string {
	return "no acceptable report; available: " + strings.Join(e.Available, ", ")
}

// ProblemFor is toProblem for the other handlers of the gateway (the webhook
// receivers), so that every error maps to its status in one place.
func ProblemFor(err error) problem.Problem { return toProblem(err) }

// toProblem is the one place that turns errors into HTTP statuses and problem
// documents. Anything unknown is a 500 whose detail does not leak the cause.
func toProblem(err error) problem.Problem {
	var (
		pe  *ParamError
		me  *MalformedError
		ve  *ValidationError
		fe  *ForbiddenError
		mna *MethodNotAllowedError
		jse *JobStateError
		nae *NotAcceptableError
		mbe *http.MaxBytesError
		whe *webhook.HeaderError
		wpe *webhook.PayloadError
		gd  *guardrail.Denied
	)
	switch {
	case errors.Is(err, mtls.ErrNoClientCertificate):
		return problem.New(http.StatusUnauthorized, "unauthenticated", "Client certificate required", err.Error())
	case errors.Is(err, ErrNoBinding):
		return problem.New(http.StatusForbidden, "forbidden", "Forbidden", err.Error())
	case errors.As(err, &fe):
		return problem.New(http.StatusForbidden, "forbidden", "Forbidden", fe.Error())
	case errors.Is(err, ErrSelfApproval):
		return problem.New(http.StatusForbidden, "self-approval", "Forbidden", err.Error())
	case errors.As(err, &gd):
		p := problem.New(http.StatusForbidden, "guardrail-denied", "Refused by the guardrails", gd.Error())
		field := "guardrail." + gd.Rule
		if gd.Field != "" {
			field += "." + gd.Field
		}
		p.InvalidParams = []schemas.FieldError{{Field: field, Reason: gd.Reason}}
		return p
	case errors.Is(err, webhook.ErrUnauthenticated):
		// The reason (which check failed) is audited, not told to the caller.
		return problem.New(http.StatusUnauthorized, "webhook-unauthenticated", "Webhook not authenticated",
			"the webhook signature or token is missing or does not verify")
	case errors.Is(err, webhook.ErrRouteNotFound):
		return problem.New(http.StatusNotFound, "not-found", "Not found", err.Error())
	case errors.Is(err, webhook.ErrMethodNotAllowed):
		p := problem.New(http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed", err.Error())
		p.Allow = http.MethodPost
		return p
	case errors.Is(err, webhook.ErrUnsupportedMediaType):
		return problem.New(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type", err.Error())
	case errors.As(err, &whe):
		return problem.New(http.StatusBadRequest, "invalid-header", "Invalid webhook header", whe.Error())
	case errors.As(err, &wpe):
		return problem.New(http.StatusBadRequest, "malformed-payload", "Malformed webhook payload", wpe.Error())
	case errors.Is(err, ErrRouteNotFound):
		return problem.New(http.StatusNotFound, "not-found", "Not found", err.Error())
	case errors.As(err, &mna):
		p := problem.New(http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed", mna.Error())
		p.Allow = mna.Allow
		return p
	case errors.Is(err, jobstore.ErrTrialNotFound):
		return problem.New(http.StatusNotFound, "trial-not-found", "Trial not found", err.Error())
	case errors.Is(err, ErrJobNotFound), errors.Is(err, jobstore.ErrNotFound):
		return problem.New(http.StatusNotFound, "job-not-found", "Job not found", ErrJobNotFound.Error())
	case errors.Is(err, ErrUnsupportedMediaType):
		return problem.New(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type", err.Error())
	case errors.As(err, &mbe):
		return problem.New(http.StatusRequestEntityTooLarge, "payload-too-large", "Payload too large",
			fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
	case errors.As(err, &me):
		return problem.New(http.StatusBadRequest, "malformed-request", "Malformed request", me.Error())
	case errors.As(err, &pe):
		p := problem.New(http.StatusBadRequest, "invalid-parameter", "Invalid parameter", pe.Error())
		p.InvalidParams = []schemas.FieldError{{Field: pe.Name, Reason: pe.Reason}}
		return p
	case errors.As(err, &ve):
		p := problem.New(http.StatusUnprocessableEntity, "invalid-request", "Invalid job request", "the request has invalid fields")
		p.InvalidParams = ve.Fields
		return p
	case errors.Is(err, ErrIdempotencyKeyReused):
		return problem.New(http.StatusUnprocessableEntity, "idempotency-key-reused", "Idempotency key reused", err.Error())
	case errors.As(err, &jse):
		return problem.New(http.StatusConflict, jse.Slug, "Job state conflict", jse.Msg)
	case errors.Is(err, ErrConcurrentUpdate):
		return problem.New(http.StatusConflict, "concurrent-update", "Concurrent update", err.Error())
	case errors.As(err, &nae):
		p := problem.New(http.StatusNotAcceptable, "not-acceptable", "Not acceptable", nae.Error())
		p.Available = nae.Available
		return p
	case errors.Is(err, jobstore.ErrUnavailable):
		p := problem.New(http.StatusServiceUnavailable, "unavailable", "Service unavailable",
			"the job queue is unavailable; retry later")
		p.RetryAfter = 5
		return p
	}
	return problem.New(http.StatusInternalServerError, "internal", "Internal error", "the error was logged")
}
