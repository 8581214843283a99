package policy

import "errors"

// ErrInvalid is wrapped by every error that rejects a policy document.
var ErrInvalid = errors.New("invalid policy")

// FieldError says which part of a policy document is wrong.
type FieldError struct {
	// Field is a path such as "bindings[2].match.spiffe_id".
	Field string
	// Reason says what is wrong with it.
	Reason string
}

// Error implements error.
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Is makes every FieldError match ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }
