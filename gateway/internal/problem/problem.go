// Package problem writes RFC 9457 problem details (application/problem+json).
//
// It only knows the document's shape. Which error becomes which problem is
// decided in one place, by the API package's error mapping.
package problem

import (
	"encoding/json"
	"net/http"
	"strconv"

	"ciss.dev/schemas"
)

// MediaType is the content type of a problem document.
const MediaType = "application/problem+json"

// TypePrefix starts every problem type URI; the slug follows it.
const TypePrefix = "https://ciss.dev/problems/"

// Problem is an RFC 9457 problem details object with the CISS extensions.
type Problem struct {
	// Type is TypePrefix followed by a stable slug such as "not-found".
	Type string `json:"type"`
	// Title is a short summary that does not change between occurrences.
	Title string `json:"title"`
	// Status repeats the HTTP status code.
	Status int `json:"status"`
	// Detail explains this occurrence.
	Detail string `json:"detail,omitempty"`
	// InvalidParams lists the request fields that failed validation.
	InvalidParams []schemas.FieldError `json:"invalid-params,omitempty"`
	// Available lists the media types that could have been served (406 only).
	Available []string `json:"available,omitempty"`
	// RetryAfter, when positive, is sent as the Retry-After header in seconds.
	RetryAfter int `json:"-"`
	// Allow, when set, is sent as the Allow header (405 only).
	Allow string `json:"-"`
}

// New returns a problem of the given status whose type is TypePrefix+slug.
func New(status int, slug, title, detail string) Problem {
	return Problem{Type: TypePrefix + slug, Title: title, Status: status, Detail: detail}
}

// Write sends p as the whole response, with its headers.
func Write(w http.ResponseWriter, p Problem) {
	b, err := json.Marshal(p)
	if err != nil { // Cannot happen: every field is a plain value.
		http.Error(w, p.Title, p.Status)
		return
	}
	h := w.Header()
	h.Set("Content-Type", MediaType)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("X-Content-Type-Options", "nosniff")
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	if p.Allow != "" {
		h.Set("Allow", p.Allow)
	}
	w.WriteHeader(p.Status)
	_, _ = w.Write(b) // The client may be gone; nothing useful to do about it.
}
