package workers

import "errors"

// Target errors; each is wrapped together with ErrPermanent where retrying
// cannot help.
var (
	// ErrTargetNotFound means the image does not exist or access is denied.
	ErrTargetNotFound = errors.New("target not found")
	// ErrTargetNotAllowed means the target's registry is outside the worker's
	// allow-list or resolves to a forbidden address range.
	ErrTargetNotAllowed = errors.New("target registry not allowed")
	// ErrInvalidTarget means the target cannot be parsed.
	ErrInvalidTarget = errors.New("invalid target")
	// ErrTimeout means the tool ran out of time.
	ErrTimeout = errors.New("tool timed out")
)
