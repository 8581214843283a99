package api

import (
	"context"
	"net/http"

	"ciss.dev/gateway/internal/jobstore"
	"ciss.dev/schemas"
)

// TrialReader reads tool trial reports. It is an optional capability of the
// Store; without it the trial routes answer an empty list and 404.
type TrialReader interface {
	// TrialReports returns every trial's report, sorted by name.
	TrialReports(ctx context.Context) ([]schemas.TrialReport, error)
	// TrialReport returns one, or an error wrapping jobstore.ErrTrialNotFound.
	TrialReport(ctx context.Context, name string) (schemas.TrialReport, error)
}

var _ TrialReader = (*jobstore.Store)(nil)

// TrialList is the body of GET /v1/trials.
type TrialList struct {
	Trials []schemas.TrialReport `json:"trials"`
}

// listTrials answers every trial's report. Trials compare tools across all
// tenants (their examples name other tenants' jobs), so the routes need the
// admin role, like the audit log.
func (h *Handler) listTrials(w http.ResponseWriter, r *http.Request) error {
	out := TrialList{Trials: []schemas.TrialReport{}}
	tr, ok := h.cfg.Store.(TrialReader)
	if !ok {
		return writeJSON(w, http.StatusOK, out)
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	reports, err := tr.TrialReports(ctx)
	if err != nil {
		return err
	}
	out.Trials = reports
	return writeJSON(w, http.StatusOK, out)
}

// getTrial answers one trial's report.
func (h *Handler) getTrial(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if !schemas.ValidToken(name) {
		return &ParamError{Name: "name", Reason: "must be a trial name: lower-case letters, digits and dashes"}
	}
	tr, ok := h.cfg.Store.(TrialReader)
	if !ok {
		return jobstore.ErrTrialNotFound
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	rep, err := tr.TrialReport(ctx, name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rep)
}
