package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"ciss.dev/gateway/client"
	"ciss.dev/schemas"
)

// errHelp ends a command after -h printed its flags.
var errHelp = errors.New("help requested")

// usageError is a mistake on the command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// refusedError is a request that cannot be done in the job's state (exit 2).
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// policyError is --fail-on's verdict (exit 1); the table is already printed.
type policyError struct {
	job       string
	count     int
	threshold string
}

func (e *policyError) Error() string {
	return fmt.Sprintf("policy failure: %d finding(s) at or above %s in job %s", e.count, e.threshold, e.job)
}

// jobError is a job that ended failed or cancelled (exit 3).
type jobError struct{ job *schemas.Job }

func (e *jobError) Error() string {
	msg := fmt.Sprintf("job %s %s", e.job.ID, e.job.Status)
	if e.job.Error != nil {
		msg += ": " + e.job.Error.Code + ": " + e.job.Error.Message
	}
	return msg
}

// forbiddenError is a 403 with the identity that was refused (exit 2).
type forbiddenError struct {
	identity, action string
	err              *client.APIError
}

func (e *forbiddenError) Error() string {
	id := e.identity
	if id == "" {
		id = "(unknown)"
	}
	return fmt.Sprintf("identity %s has no permission for %s: %s", id, e.action, e.err.Problem.Detail)
}

// requestError adds the action to a failed request's error.
func requestError(c *client.Client, action string, err error) error {
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusForbidden {
		return &forbiddenError{identity: c.Identity(), action: action, err: ae}
	}
	return err
}

// exitFor maps an error to its exit code and one-line message. It is the one
// place that decides exit codes.
func exitFor(err error) (int, string) {
	var (
		ue  *usageError
		re  *refusedError
		pe  *policyError
		je  *jobError
		fe  *forbiddenError
		ce  *client.ConfigError
		cre *client.CertificateError
		te  *client.TLSError
		ae  *client.APIError
		we  *client.GiveUpError
		tre *client.TransportError
	)
	switch {
	case err == nil, errors.Is(err, errHelp):
		return ExitOK, ""
	case errors.As(err, &pe):
		return ExitPolicy, pe.Error()
	case errors.As(err, &ue):
		return ExitUsage, ue.Error() + " (see ciss -h)"
	case errors.As(err, &re):
		return ExitUsage, re.Error()
	case errors.As(err, &fe):
		return ExitUsage, fe.Error()
	case errors.As(err, &ce), errors.As(err, &cre), errors.As(err, &te):
		return ExitUsage, err.Error()
	case errors.As(err, &je):
		return ExitService, je.Error()
	case errors.As(err, &we):
		return ExitService, we.Error()
	case errors.As(err, &ae):
		if ae.Status >= 500 || ae.Status == http.StatusTooManyRequests {
			return ExitService, "gateway error: " + ae.Error()
		}
		return ExitUsage, "the gateway refused the request: " + ae.Error()
	case errors.As(err, &tre):
		if errors.Is(err, context.DeadlineExceeded) {
			return ExitService, "timed out: " + tre.Error()
		}
		return ExitService, "cannot reach the gateway: " + tre.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return ExitService, err.Error()
	}
	return ExitService, err.Error()
}
