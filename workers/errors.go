package workers

import "errors"

// Target errors; each is wrapped together with ErrPermanent where retrying
// cannot help.
var (
	// ErrTargetNotFound means the image does not exist or access is denied.
	ErrTargetNotFound = errors.New("target not found")
	// ErrInvalidTarget means the target cannot be parsed.
	ErrInvalidTarget = errors.New("invalid target")
	// ErrTimeout means the tool ran out of time.
	ErrTimeout = errors.New("tool timed out")
)
