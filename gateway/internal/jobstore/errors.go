package jobstore

import "errors"

// Errors returned by Store methods. Transport failures (not connected, not yet
// bound, timeouts, a publish refused while reconnecting) all wrap ErrUnavailable,
// so callers can answer "try again later" without knowing NATS.
var (
	// ErrUnavailable means NATS or JetStream could not be used right now.
	ErrUnavailable = errors.New("job store unavailable")
	// ErrNotConnected means the NATS connection is down; it wraps ErrUnavailable.
	ErrNotConnected = wrapUnavailable("not connected to NATS")
	// ErrNotBound means the stream, bucket or object store is not bound yet; it
	// wraps ErrUnavailable.
	ErrNotBound = wrapUnavailable("JetStream stream, bucket or object store not bound yet")
	// ErrNotFound means the job key or report object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists means Create found the key already present.
	ErrExists = errors.New("key exists")
	// ErrConflict means Update lost a compare-and-swap race: the revision moved.
	ErrConflict = errors.New("revision conflict")
)

// unavailableError is a static error that also matches ErrUnavailable.
type unavailableError struct{ msg string }

func wrapUnavailable(msg string) error { return &unavailableError{msg: msg} }

// Error implements error.
func (e *unavailableError) Error() string { return e.msg }

// Is makes the error match ErrUnavailable.
func (e *unavailableError) Is(err error) bool { return err == ErrUnavailable }
