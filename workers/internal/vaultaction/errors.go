package vaultaction

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrUnknownAction is returned for a job type that is not a protected action.
	ErrUnknownAction = errors.New("unknown protected action")
	// ErrConflict is returned when Vault holds something at a derived path that
	// CISS would not have created (e.g. an auth method of another type); nothing is
	// changed.
	ErrConflict = errors.New("conflicting object in Vault")
	// ErrPolicyEscapes is returned when a rendered policy names a path outside the
	// tenant's prefix; nothing is written.
	ErrPolicyEscapes = errors.New("policy names a path outside the tenant prefix")
	// ErrNamespacesUnsupported is returned for vault-namespace-create against a
	// server without namespaces (Vault Community Edition): they are a Vault
	// Enterprise (or OpenBao) feature. Nothing is changed.
	ErrNamespacesUnsupported = errors.New("this Vault server does not support namespaces (Vault Enterprise or OpenBao is required); nothing was changed")
)

// StepError is a failed step, with what rolling back the earlier steps failed on
// (none when the rollback was complete).
type StepError struct {
	Step         Step
	Err          error
	RollbackErrs []error
}

func (e *StepError) Error() string {
	msg := fmt.Sprintf("step %s %s failed: %v; earlier steps rolled back", e.Step.Method, e.Step.Path, e.Err)
	if len(e.RollbackErrs) > 0 {
		var s []string
		for _, r := range e.RollbackErrs {
			s = append(s, r.Error())
		}
		msg = fmt.Sprintf("step %s %s failed: %v; rollback incomplete: %s", e.Step.Method, e.Step.Path, e.Err, strings.Join(s, "; "))
	}
	return msg
}

func (e *StepError) Unwrap() error { return e.Err }
