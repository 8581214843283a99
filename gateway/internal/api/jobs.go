package api

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"time"

	"ciss.dev/gateway/internal/jobstore"
	"ciss.dev/schemas"
	"github.com/google/uuid"
)

// MaxIdempotencyKeyLen bounds the Idempotency-Key header.
const MaxIdempotencyKeyLen = 255

// Listing limits.
const (
	DefaultListLimit = 50
	MaxListLimit     = 200
)

// maxCASAttempts bounds the compare-and-swap retries of a cancel.
const maxCASAttempts = 5

// JobList is the body of GET /v1/jobs.
type JobList struct {
	// Jobs are the caller's jobs, newest first.
	Jobs []schemas.Job `json:"jobs"`
	// NextPageToken, when set, fetches the next page via ?page_token=.
	NextPageToken string `json:"next_page_token,omitempty"`
}

// opContext bounds a JetStream operation and detaches it from the client, so
// that a client hanging up cannot abort a submit or cancel half-way.
func opContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), opTimeout)
}

func (h *Handler) submit(w http.ResponseWriter, r *http.Request) error {
	c := callOf(r.Context())
	if err := checkJSON(r.Header.Get("Content-Type")); err != nil {
		return err
	}
	key, err := idempotencyKey(r.Header)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return err
		}
		return &MalformedError{Err: err}
	}
	req, err := decodeJobRequest(body)
	if err != nil {
		return err
	}
	digest := requestDigest(&req)
	id, err := h.newJobID(c.binding.Tenant, key)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	job := schemas.Job{
		ID:             id,
		Tenant:         c.binding.Tenant,
		Type:           req.Type,
		Target:         req.Target,
		Params:         req.Params,
		Lane:           req.Lane,
		Cache:          req.CacheEnabled(),
		Status:         schemas.StatusQueued,
		RequestedBy:    c.id.String(),
		IdempotencyKey: key,
		RequestDigest:  digest,
		CreatedAt:      now,
		UpdatedAt:      now,
	}
	jobKey := schemas.JobKey(job.Tenant, job.ID)
	pending := false
	if schemas.IsVaultAction(job.Type) {
		if pending, err = h.checkAction(r.Context(), c, &job); err != nil {
			return err
		}
		if pending {
			// Stored, not dispatched: POST /v1/jobs/{id}/approve publishes it.
			job.Status = schemas.StatusPendingApproval
		}
	}

	if key != "" {
		ctx, cancel := opContext(r)
		e, err := h.cfg.Store.Get(ctx, jobKey)
		cancel()
		switch {
		case err == nil:
			return replay(w, e.Job, digest, true)
		case !errors.Is(err, jobstore.ErrNotFound):
			return err
		}
	}

	if !pending {
		if err := h.publishRequested(r, job); err != nil {
			return err
		}
	}

	ctx, cancel := opContext(r)
	defer cancel()
	if _, err := h.cfg.Store.Create(ctx, jobKey, &job); err != nil {
		if pending && !errors.Is(err, jobstore.ErrExists) {
			return err // no event: the state is all there is
		}
		if !errors.Is(err, jobstore.ErrExists) {
			// The event is durable; the dispatcher creates the state when missing.
			h.cfg.Logger.Warn("job accepted but state not written", "job", job.ID, "tenant", job.Tenant, "err", err)
		} else if e, gerr := h.cfg.Store.Get(ctx, jobKey); gerr == nil {
			// A concurrent duplicate (or the dispatcher) wrote it first.
			return replay(w, e.Job, digest, key != "")
		} else {
			h.cfg.Logger.Warn("job state exists but cannot be read", "job", job.ID, "tenant", job.Tenant, "err", gerr)
		}
	}
	h.cfg.Metrics.JobSubmitted(job.Type, string(job.Lane))
	w.Header().Set("Location", "/v1/jobs/"+job.ID)
	return writeJSON(w, http.StatusAccepted, job)
}

// replay answers with an existing job when the request matches the one that
// created it, and refuses a reused Idempotency-Key otherwise.
func replay(w http.ResponseWriter, job schemas.Job, digest string, replayed bool) error {
	if job.RequestDigest != digest {
		return ErrIdempotencyKeyReused
	}
	w.Header().Set("Location", "/v1/jobs/"+job.ID)
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	return writeJSON(w, http.StatusAccepted, job)
}

// newJobID returns a UUIDv7 (sortable by creation), or for an idempotent
// request a UUIDv5 of tenant and key, so that retries map to the same job.
func (h *Handler) newJobID(tenant, key string) (string, error) {
	if key != "" {
		return uuid.NewSHA1(h.idemNS, []byte(tenant+"\x00"+key)).String(), nil
	}
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("new job id: %w", err)
	}
	return id.String(), nil
}

func checkJSON(contentType string) error {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt != schemas.MediaTypeJSON {
		return ErrUnsupportedMediaType
	}
	return nil
}

// idempotencyKey returns the Idempotency-Key header, or "" when absent.
func idempotencyKey(hdr http.Header) (string, error) {
	vals := hdr.Values("Idempotency-Key")
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", &ParamError{Name: "Idempotency-Key", Reason: "must be given once"}
	}
	k := vals[0]
	if k == "" || len(k) > MaxIdempotencyKeyLen {
		return "", &ParamError{Name: "Idempotency-Key", Reason: fmt.Sprintf("must be 1 to %d characters", MaxIdempotencyKeyLen)}
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "", &ParamError{Name: "Idempotency-Key", Reason: "must be printable ASCII"}
		}
	}
	return k, nil
}

// decodeJobRequest decodes strictly and validates (which fills defaults).
func decodeJobRequest(body []byte) (schemas.JobRequest, error) {
	var req schemas.JobRequest
	if err := schemas.DecodeStrict(body, &req); err != nil {
		return req, &MalformedError{Err: err}
	}
	if err := req.Validate(); err != nil {
		return req, &ValidationError{Fields: fieldErrors(err)}
	}
	return req, nil
}

// fieldErrors flattens the joined errors of JobRequest.Validate, sorted so
// that answers do not depend on map iteration order.
func fieldErrors(err error) []schemas.FieldError {
	var out []schemas.FieldError
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		if fe := (*schemas.FieldError)(nil); errors.As(err, &fe) {
			out = append(out, *fe)
			return
		}
		out = append(out, schemas.FieldError{Field: "body", Reason: err.Error()})
	}
	walk(err)
	slices.SortFunc(out, func(a, b schemas.FieldError) int {
		return cmp.Or(cmp.Compare(a.Field, b.Field), cmp.Compare(a.Reason, b.Reason))
	})
	return out
}

// requestDigest is the sha256 of the canonical JSON of a validated request.
// encoding/json sorts map keys, so Params order does not matter.
func requestDigest(req *schemas.JobRequest) string {
	b, _ := json.Marshal(req) // A JobRequest always encodes.
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func jobKeyFromPath(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !schemas.ValidJobID(id) {
		return "", ErrJobNotFound
	}
	return schemas.JobKey(callOf(r.Context()).binding.Tenant, id), nil
}

func etag(rev uint64) string { return `"` + strconv.FormatUint(rev, 10) + `"` }

func (h *Handler) get(w http.ResponseWriter, r *http.Request) error {
	key, err := jobKeyFromPath(r)
	if err != nil {
		return err
	}
	wait, err := parseWait(r.URL.Query().Get("wait"), h.cfg.MaxWait)
	if err != nil {
		return err
	}
	e, err := h.cfg.Store.Get(r.Context(), key)
	if err != nil {
		return err
	}
	if wait > 0 && !e.Job.Status.Terminal() {
		if e, err = h.awaitChange(r.Context(), key, e, wait); err != nil {
			return err
		}
	}
	w.Header().Set("ETag", etag(e.Revision))
	return writeJSON(w, http.StatusOK, e.Job)
}

func parseWait(s string, max time.Duration) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, &ParamError{Name: "wait", Reason: "must be a non-negative Go duration such as 30s"}
	}
	return min(d, max), nil
}

// awaitChange watches the job until its status differs from cur's, the wait
// elapses, the client goes away or the server drains; it returns the latest
// state seen.
func (h *Handler) awaitChange(ctx context.Context, key string, cur jobstore.Entry, wait time.Duration) (jobstore.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	updates, err := h.cfg.Store.Watch(ctx, key)
	if err != nil {
		return cur, err
	}
	initial := cur.Job.Status
	for {
		select {
		case e, ok := <-updates:
			if !ok {
				return cur, nil
			}
			if e.Deleted {
				return cur, ErrJobNotFound
			}
			cur = e
			if e.Job.Status != initial {
				return cur, nil
			}
		case <-h.draining:
			return cur, nil
		}
	}
}

func (h *Handler) cancel(w http.ResponseWriter, r *http.Request) error {
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
		if e.Job.Status.Terminal() {
			return &JobStateError{Job: e.Job, Slug: "job-terminal", Msg: fmt.Sprintf("job is already %s", e.Job.Status)}
		}
		job = e.Job
		now := time.Now().UTC()
		job.Status = schemas.StatusCancelled
		job.Error = &schemas.Error{Code: schemas.CodeCancelled, Message: "cancelled by " + c.id.String()}
		job.FinishedAt = &now
		job.UpdatedAt = now
		_, err = h.cfg.Store.Update(ctx, key, &job, e.Revision)
		if errors.Is(err, jobstore.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	// The state is what counts; the events only speed things up, so their
	// failures are logged, not answered.
	if ev, err := schemas.Marshal(schemas.TypeCancelRequest, h.cfg.Source, job.ID,
		schemas.CancelRequest{JobID: job.ID, Tenant: job.Tenant, By: c.id.String()}); err != nil {
		h.cfg.Logger.Warn("encode cancel request", "job", job.ID, "err", err)
	} else if err := h.cfg.Store.Notify(schemas.SubjectCancel(job.ID), ev); err != nil {
		h.cfg.Logger.Warn("cancel request not sent", "job", job.ID, "err", err)
	}
	if ev, err := schemas.Marshal(schemas.TypeJobCompleted, h.cfg.Source, job.ID, job); err != nil {
		h.cfg.Logger.Warn("encode job completed", "job", job.ID, "err", err)
	} else if err := h.cfg.Store.Publish(ctx, schemas.SubjectJobCompleted(job.Tenant), job.ID+".completed", ev); err != nil {
		h.cfg.Logger.Warn("job completed event not published", "job", job.ID, "err", err)
	}
	return writeJSON(w, http.StatusAccepted, job)
}

// pageCursor is the position after the last job of a page, in list order
// (CreatedAt descending, then ID descending).
type pageCursor struct {
	CreatedAt time.Time `json:"t"`
	ID        string    `json:"id"`
}

func (c pageCursor) encode() string {
	b, _ := json.Marshal(c) // Always encodes.
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (*pageCursor, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	var c pageCursor
	if err == nil {
		err = schemas.DecodeStrict(b, &c)
	}
	if err != nil || !schemas.ValidJobID(c.ID) {
		return nil, &ParamError{Name: "page_token", Reason: "is not a token from next_page_token"}
	}
	return &c, nil
}

// before reports whether a sorts before b in list order: newer first.
func before(a, b *schemas.Job) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.After(b.CreatedAt)
	}
	return a.ID > b.ID
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) error {
	c := callOf(r.Context())
	q := r.URL.Query()
	limit := DefaultListLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			return &ParamError{Name: "limit", Reason: fmt.Sprintf("must be an integer from 1 to %d", MaxListLimit)}
		}
		limit = n
	}
	status := schemas.Status(q.Get("status"))
	if status != "" && !status.Valid() {
		return &ParamError{Name: "status", Reason: "must be one of queued, running, succeeded, failed, cancelled, pending-approval"}
	}
	cursor, err := decodeCursor(q.Get("page_token"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	entries, err := h.cfg.Store.List(ctx, schemas.JobKey(c.binding.Tenant, "*"))
	if err != nil {
		return err
	}
	jobs := make([]schemas.Job, 0, len(entries))
	for _, e := range entries {
		if e.Job.Tenant != c.binding.Tenant || (status != "" && e.Job.Status != status) {
			continue
		}
		if cursor != nil && !before(&schemas.Job{CreatedAt: cursor.CreatedAt, ID: cursor.ID}, &e.Job) {
			continue
		}
		jobs = append(jobs, e.Job)
	}
	slices.SortFunc(jobs, func(a, b schemas.Job) int {
		switch {
		case before(&a, &b):
			return -1
		case before(&b, &a):
			return 1
		}
		return 0
	})
	out := JobList{Jobs: jobs}
	if len(jobs) > limit {
		out.Jobs = jobs[:limit]
		last := out.Jobs[limit-1]
		out.NextPageToken = pageCursor{CreatedAt: last.CreatedAt, ID: last.ID}.encode()
	}
	return writeJSON(w, http.StatusOK, out)
}
