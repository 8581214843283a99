package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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

// checkAction evaluates a protected action against the guardrails and records
// the decision, with the caller's certificate identity, in the audit stream
// before answering. Nothing reaches Vault unless it returns nil; pending says
// the allowing rule requires approval first.
func (h *Handler) checkAction(ctx context.Context, c *call, job *schemas.Job) (pending bool, _ error) {
	rec := schemas.ActionAudit{Time: time.Now().UTC(), Stage: schemas.AuditStageDecision, JobID: job.ID,
		Tenant: job.Tenant, Type: job.Type, Identity: c.id.String(), Params: job.Params}
	a, err := schemas.ParseVaultAction(job.Type, job.Tenant, job.Params)
	var decision guardrail.Decision
	switch {
	case err != nil:
		// Validate already parsed the params; only the tenant can fail here.
		return false, &ValidationError{Fields: fieldErrors(err)}
	case h.cfg.Guardrails == nil:
		err = ErrNoGuardrails
	default:
		roles := make([]string, len(c.binding.Roles))
		for i, r := range c.binding.Roles {
			roles[i] = string(r)
		}
		decision, err = h.cfg.Guardrails.Evaluate(a, roles)
	}
	var den *guardrail.Denied
	switch {
	case err == nil && decision.RequireApproval:
		rec.Verdict, rec.Rule = "pending-approval", decision.Rule
	case err == nil:
		rec.Verdict, rec.Rule = "allowed", decision.Rule
	case errors.As(err, &den):
		rec.Verdict, rec.Rule, rec.Reason = "denied", den.Rule, den.Error()
	default:
		return false, err
	}
	if aerr := h.audit(ctx, rec); aerr != nil {
		// Unaudited means undecided: the caller retries.
		return false, aerr
	}
	h.cfg.Logger.Info("protected action decision", "job", job.ID, "tenant", job.Tenant, "type", job.Type,
		"identity", rec.Identity, "verdict", rec.Verdict, "rule", rec.Rule)
	return err == nil && decision.RequireApproval, err
}

// audit stores a protected-action record and waits for the acknowledgement.
func (h *Handler) audit(ctx context.Context, rec schemas.ActionAudit) error {
	aud, ok := h.cfg.Store.(ActionAuditor)
	if !ok {
		return errors.New("store cannot audit protected actions")
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	return aud.AuditAction(actx, schemas.SubjectAuditAction(rec.Stage, rec.Verdict), b)
}

// publishRequested stores the job requested event that the dispatcher acts on.
func (h *Handler) publishRequested(r *http.Request, job schemas.Job) error {
	ev, err := schemas.Marshal(schemas.TypeJobRequested, h.cfg.Source, job.ID, job)
	if err != nil {
		return err
	}
	ctx, cancel := opContext(r)
	defer cancel()
	return h.cfg.Store.Publish(ctx, schemas.SubjectJobRequested(job.Lane), job.ID, ev)
}

// ErrSelfApproval refuses a requester approving their own protected action.
var ErrSelfApproval = errors.New("the requester of a protected action cannot approve it")

// approve moves a protected action from pending-approval to queued, recording the
// approver, and dispatches it. Approving a job that is queued, approved and not
// yet dispatched publishes it again (the event is deduplicated by job id), so a
// failed publish is retried by approving again.
func (h *Handler) approve(w http.ResponseWriter, r *http.Request) error {
	c := callOf(r.Context())
	key, err := jobKeyFromPath(r)
	if err != nil {
		return err
	}
	ctx, cancel := opContext(r)
	defer cancel()
	var job schemas.Job
	for attempt := 0; ; attempt++ {
		if attempt == maxCASAttempts {
			return ErrConcurrentUpdate
		}
		e, err := h.cfg.Store.Get(ctx, key)
		if err != nil {
			return err
		}
		job = e.Job
		if job.RequestedBy == c.id.String() {
			return ErrSelfApproval
		}
		if job.Status == schemas.StatusQueued && job.ApprovedBy != "" && job.Tool == "" {
			break // approved, perhaps not dispatched: publish again
		}
		if job.Status != schemas.StatusPendingApproval {
			return &JobStateError{Job: job, Slug: "not-pending-approval", Msg: fmt.Sprintf("job is %s, not waiting for approval", job.Status)}
		}
		job.Status, job.ApprovedBy, job.UpdatedAt = schemas.StatusQueued, c.id.String(), time.Now().UTC()
		_, err = h.cfg.Store.Update(ctx, key, &job, e.Revision)
		if errors.Is(err, jobstore.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	if err := h.audit(ctx, schemas.ActionAudit{Time: time.Now().UTC(), Stage: schemas.AuditStageDecision, Verdict: "approved",
		JobID: job.ID, Tenant: job.Tenant, Type: job.Type, Identity: c.id.String(), Params: job.Params,
		Reason: "approved for " + job.RequestedBy}); err != nil {
		return err
	}
	if err := h.publishRequested(r, job); err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/jobs/"+job.ID)
	return writeJSON(w, http.StatusAccepted, job)
}
