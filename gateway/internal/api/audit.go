package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"ciss.dev/gateway/internal/jobstore"
	"ciss.dev/schemas"
)

// AuditLog reads webhook audit records. It is an optional capability of the
// Store; without it the audit route answers an empty list.
type AuditLog interface {
	// AuditRecords returns up to limit records whose subject matches filter,
	// newest first, below sequence before (0: from the newest), and the
	// before of the next page (0: none).
	AuditRecords(ctx context.Context, filter string, before uint64, limit int) ([]jobstore.AuditEntry, uint64, error)
}

var _ AuditLog = (*jobstore.Store)(nil)

// AuditRecord is one webhook audit record with its position in the stream.
type AuditRecord struct {
	// Sequence is the record's sequence in the audit stream.
	Sequence uint64 `json:"sequence"`
	// Record is what the receiver recorded.
	Record schemas.WebhookAudit `json:"record"`
}

// AuditList is the body of GET /v1/audit/webhooks.
type AuditList struct {
	// Records are newest first.
	Records []AuditRecord `json:"records"`
	// NextPageToken, when set, fetches older records via ?page_token=.
	NextPageToken string `json:"next_page_token,omitempty"`
}

// auditWebhooks lists webhook audit records, newest first, optionally only
// one provider's or one verdict's. Records are not tenant-scoped (a webhook is
// audited before it is matched to a tenant), so the route needs the admin role.
func (h *Handler) auditWebhooks(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := DefaultListLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			return &ParamError{Name: "limit", Reason: fmt.Sprintf("must be an integer from 1 to %d", MaxListLimit)}
		}
		limit = n
	}
	provider, verdict := "*", "*"
	if s := q.Get("provider"); s != "" {
		if !schemas.GitProvider(s).Valid() {
			return &ParamError{Name: "provider", Reason: "must be github or gitlab"}
		}
		provider = s
	}
	if s := q.Get("verdict"); s != "" {
		if !schemas.WebhookVerdict(s).Valid() {
			return &ParamError{Name: "verdict", Reason: "must be one of accepted, duplicate, ignored, rejected, unavailable"}
		}
		verdict = s
	}
	var before uint64
	if s := q.Get("page_token"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return &ParamError{Name: "page_token", Reason: "is not a token from next_page_token"}
		}
		before = n
	}
	out := AuditList{Records: []AuditRecord{}}
	al, ok := h.cfg.Store.(AuditLog)
	if !ok {
		return writeJSON(w, http.StatusOK, out)
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	entries, next, err := al.AuditRecords(ctx, schemas.SubjectAuditWebhookPrefix+"."+provider+"."+verdict, before, limit)
	if err != nil {
		return err
	}
	for _, e := range entries {
		var rec schemas.WebhookAudit
		if _, err := schemas.Unmarshal(e.Data, schemas.TypeWebhookAudited, &rec); err != nil {
			h.cfg.Logger.Warn("skipping undecodable audit record", "seq", e.Sequence, "err", err)
			continue
		}
		out.Records = append(out.Records, AuditRecord{Sequence: e.Sequence, Record: rec})
	}
	if next > 0 {
		out.NextPageToken = strconv.FormatUint(next, 10)
	}
	return writeJSON(w, http.StatusOK, out)
}
