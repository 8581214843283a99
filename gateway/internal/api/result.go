package api

import (
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"ciss.dev/gateway/internal/jobstore"
	"ciss.dev/schemas"
)

// reportFormats lists formats in server preference order with their default
// media types.
func reportFormats() []schemas.Report {
	return []schemas.Report{
		{Format: schemas.FormatNative, MediaType: schemas.MediaTypeJSON},
		{Format: schemas.FormatSARIF, MediaType: schemas.MediaTypeSARIF},
		{Format: schemas.FormatCycloneDX, MediaType: schemas.MediaTypeCycloneDX},
	}
}

func (h *Handler) result(w http.ResponseWriter, r *http.Request) error {
	key, err := jobKeyFromPath(r)
	if err != nil {
		return err
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != schemas.FormatNative && format != schemas.FormatSARIF && format != schemas.FormatCycloneDX {
		return &ParamError{Name: "format", Reason: "must be one of native, sarif, cyclonedx"}
	}
	e, err := h.cfg.Store.Get(r.Context(), key)
	if err != nil {
		return err
	}
	job := e.Job
	switch {
	case !job.Status.Terminal():
		w.Header().Set("Retry-After", "2")
		return writeJSON(w, http.StatusAccepted, job)
	case job.Status != schemas.StatusSucceeded:
		msg := "job " + string(job.Status)
		if job.Error != nil {
			msg += ": " + job.Error.Code + ": " + job.Error.Message
		}
		return &JobStateError{Job: job, Slug: "job-not-succeeded", Msg: msg}
	case job.Result == nil || len(job.Result.Reports) == 0:
		return fmt.Errorf("job %s succeeded without reports: %w", job.ID, ErrReportMissing)
	}
	rep, err := chooseReport(job.Result.Reports, format, r.Header.Get("Accept"))
	if err != nil {
		return err
	}
	obj, err := h.cfg.Store.OpenReport(r.Context(), rep.Object)
	if errors.Is(err, jobstore.ErrNotFound) {
		// Not a 404: the job exists and says the report does.
		return fmt.Errorf("%w: job %s names %s: %v", ErrReportMissing, job.ID, rep.Object, err)
	}
	if err != nil {
		return err
	}
	defer obj.Close()

	hdr := w.Header()
	hdr.Set("Content-Type", rep.MediaType)
	hdr.Set("Content-Length", strconv.FormatInt(obj.Size, 10))
	hdr.Set("Vary", "Accept")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Disposition", "inline")
	want, hasDigest := strings.CutPrefix(rep.Digest, "sha256:")
	if raw, err := hex.DecodeString(want); hasDigest && err == nil && len(raw) == sha256.Size {
		hdr.Set("ETag", `"`+rep.Digest+`"`)
		b64 := base64.StdEncoding.EncodeToString(raw)
		hdr.Set("Digest", "sha-256="+b64)           // RFC 3230, still widely read
		hdr.Set("Repr-Digest", "sha-256=:"+b64+":") // RFC 9530
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, sum), obj)
	c := callOf(r.Context())
	switch {
	case err != nil:
		c.err = fmt.Errorf("stream report %s after %d bytes: %w", rep.Object, n, err)
	case hasDigest && hex.EncodeToString(sum.Sum(nil)) != want:
		c.err = fmt.Errorf("report %s does not match its digest %s", rep.Object, rep.Digest)
	}
	return nil
}

// chooseReport picks the report by ?format= when given, else by Accept.
func chooseReport(reports []schemas.Report, format, accept string) (schemas.Report, error) {
	var avail []schemas.Report
	for _, f := range reportFormats() {
		for _, rep := range reports {
			if rep.Format == f.Format {
				rep.MediaType = cmp.Or(rep.MediaType, f.MediaType)
				avail = append(avail, rep)
				break
			}
		}
	}
	types := make([]string, len(avail))
	for i, rep := range avail {
		types[i] = rep.MediaType
	}
	if format != "" {
		for _, rep := range avail {
			if rep.Format == format {
				return rep, nil
			}
		}
		return schemas.Report{}, &NotAcceptableError{Available: types}
	}
	mt, ok := negotiate(accept, types)
	if !ok {
		return schemas.Report{}, &NotAcceptableError{Available: types}
	}
	for _, rep := range avail {
		if rep.MediaType == mt {
			return rep, nil
		}
	}
	return schemas.Report{}, &NotAcceptableError{Available: types}
}
