package harbor

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"ciss.dev/gateway/internal/jobstore"
)

// errNoScan answers 404 for an unknown scan id, or one of another tenant:
// the two are deliberately indistinguishable, as in the job API.
var errNoScan = &statusError{code: http.StatusNotFound, msg: "no scan request with this id"}

// statusError is an error with the HTTP status to answer.
type statusError struct {
	code int
	msg  string
}

// Error implements error.
func (e *statusError) Error() string { return e.msg }

// ErrorResponse is the adapter API's error document.
type ErrorResponse struct {
	Error struct {
		Message string `json:"message"`
	} `json:"error"`
}

// writeError is the one place that turns the adapter's errors into answers.
// Anything unexpected is a 500 that does not leak its cause (it is logged).
func writeError(w http.ResponseWriter, err error) {
	code, msg := http.StatusInternalServerError, "internal error; the error was logged"
	var se *statusError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &se):
		code, msg = se.code, se.msg
	case errors.As(err, &mbe):
		code, msg = http.StatusRequestEntityTooLarge, "request body too large"
	case errors.Is(err, jobstore.ErrUnavailable):
		code, msg = http.StatusServiceUnavailable, "the job queue is unavailable; retry later"
		w.Header().Set("Retry-After", "5")
	}
	var doc ErrorResponse
	doc.Error.Message = msg
	_ = writeJSON(w, code, MediaTypeError, doc)
}

func writeJSON(w http.ResponseWriter, code int, mediaType string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(b) // the client may be gone
	return nil
}

// statusWriter remembers the status code for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader implements http.ResponseWriter.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
