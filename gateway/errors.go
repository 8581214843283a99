package gateway

import "errors"

// ErrAlreadyStarted is returned by Start when the gateway was started before;
// a stopped gateway cannot be started again.
var ErrAlreadyStarted = errors.New("gateway: already started")

// ConfigError names the Config field that is missing or wrong.
type ConfigError struct {
	// Field is the Config field name, e.g. "TLSCertFile".
	Field string
	// Err says what is wrong.
	Err error
}

// Error implements error.
func (e *ConfigError) Error() string { return "gateway: Config." + e.Field + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *ConfigError) Unwrap() error { return e.Err }

// errRequired is the cause of a ConfigError for a missing required field.
var errRequired = errors.New("is required")
