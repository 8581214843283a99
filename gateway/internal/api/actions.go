package api

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"ciss.dev/gateway/internal/guardrail"
	"ciss.dev/gateway/internal/jobstore"
	"ciss.dev/schemas"
)

// Guardrails decide protected actions (Vault changes) before they are queued.
type Guardrails interface {
	Evaluate(a *schemas.VaultAction, roles []string) (guardrail.Decision, error)
}

// ActionAuditor stores protected-action audit records durably. It is an optional
// capability of the Store; a Store without it cannot accept protected actions.
type ActionAuditor interface {
	AuditAction(ctx context.Context, subject string, data []byte) error
}

var (
	_ Guardrails    = (*guardrail.File)(nil)
	_ ActionAuditor = (*jobstore.Store)(nil)
)

// ErrNoGuardrails refuses protected actions on a gateway without guardrails:
// deny by default.
var ErrNoGuardrails = &guardrail.Denied{Rule: guardrail.DefaultDeny,
	Reason: "protected actions are not enabled on this gateway (no guardrail file)"}

// errApprovalUnsupported refuses actions whose rule requires approval.
var errApprovalUnsupported = errors.New("approval is required by the guardrails but not available")

// checkAction evaluates a protected action against the guardrails and records
// the decision, with the caller's certificate identity, in the audit stream
// before answering. Nothing reaches Vault unless it returns nil.
func (h *Handler) checkAction(ctx context.Context, c *call, job *schemas.Job) error {
	rec := schemas.ActionAudit{Time: time.Now().UTC(), Stage: schemas.AuditStageDecision, JobID: job.ID,
		Tenant: job.Tenant, Type: job.Type, Identity: c.id.String(), Params: job.Params}
	a, err := schemas.ParseVaultAction(job.Type, job.Tenant, job.Params)
	var decision guardrail.Decision
	switch {
	case err != nil:
		// Validate already parsed the params; only the tenant can fail here.
		return &ValidationError{Fields: fieldErrors(err)}
	case h.cfg.Guardrails == nil:
		err = ErrNoGuardrails
	default:
		roles := make([]string, len(c.binding.Roles))
		for i, r := range c.binding.Roles {
			roles[i] = string(r)
		}
		decision, err = h.cfg.Guardrails.Evaluate(a, roles)
		if err == nil && decision.RequireApproval {
			err = &guardrail.Denied{Rule: decision.Rule, Field: "require_approval", Reason: errApprovalUnsupported.Error()}
		}
	}
	var den *guardrail.Denied
	switch {
	case err == nil:
		rec.Verdict, rec.Rule = "allowed", decision.Rule
	case errors.As(err, &den):
		rec.Verdict, rec.Rule, rec.Reason = "denied", den.Rule, den.Error()
	default:
		return err
	}
	aud, ok := h.cfg.Store.(ActionAuditor)
	if !ok {
		return errors.Join(err, errors.New("store cannot audit protected actions"))
	}
	b, merr := json.Marshal(rec)
	if merr != nil {
		return merr
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	if aerr := aud.AuditAction(actx, schemas.SubjectAuditAction(rec.Stage, rec.Verdict), b); aerr != nil {
		// Unaudited means undecided: the caller retries.
		return aerr
	}
	h.cfg.Logger.Info("protected action decision", "job", job.ID, "tenant", job.Tenant, "type", job.Type,
		"identity", rec.Identity, "verdict", rec.Verdict, "rule", rec.Rule)
	return err
}
