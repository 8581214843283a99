package webhook

import "errors"

// Static errors. The gateway's API error mapping turns each into its HTTP
// status and problem document.
var (
	// ErrUnauthenticated is wrapped by every *AuthError: the request's
	// signature or token is missing or wrong, or no secret applies (401).
	ErrUnauthenticated = errors.New("webhook not authenticated")
	// ErrUnsupportedMediaType means the body is not application/json (415);
	// GitHub's form-encoded deliveries are not supported.
	ErrUnsupportedMediaType = errors.New("webhook Content-Type must be application/json")
	// ErrRouteNotFound means the path is not a webhook receiver (404).
	ErrRouteNotFound = errors.New("no such webhook receiver")
	// ErrMethodNotAllowed means a receiver was called with another method than POST (405).
	ErrMethodNotAllowed = errors.New("webhook receivers accept POST only")
	// ErrInvalidConfig is wrapped by every error that rejects a webhook
	// configuration file.
	ErrInvalidConfig = errors.New("invalid webhook configuration")
)

// AuthError says why a request was not authenticated. Its Reason goes to the
// audit record and the log, never to the client, which only learns
// ErrUnauthenticated; it never contains a secret or a signature.
type AuthError struct {
	// Reason is e.g. "signature mismatch" or "no secret configured".
	Reason string
}

// Error implements error.
func (e *AuthError) Error() string { return "webhook not authenticated: " + e.Reason }

// Is makes every AuthError match ErrUnauthenticated.
func (e *AuthError) Is(target error) bool { return target == ErrUnauthenticated }

// HeaderError is a missing or malformed webhook header, such as the event or
// delivery id header (400).
type HeaderError struct {
	// Name is the header's canonical name.
	Name string
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *HeaderError) Error() string { return e.Name + ": " + e.Reason }

// PayloadError is a verified body that is not the JSON payload its event
// header announces (400).
type PayloadError struct {
	// Err is the decoding or validation error.
	Err error
}

// Error implements error.
func (e *PayloadError) Error() string { return "malformed webhook payload: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *PayloadError) Unwrap() error { return e.Err }

// ConfigError says which part of a webhook configuration file is wrong.
type ConfigError struct {
	// Field is a path such as "github.repos[acme/app].secret_file".
	Field string
	// Reason says what is wrong with it; it never contains secret material.
	Reason string
}

// Error implements error.
func (e *ConfigError) Error() string { return e.Field + ": " + e.Reason }

// Is makes every ConfigError match ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }
