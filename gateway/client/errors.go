package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"ciss.dev/schemas"
)

// Sentinels.
var (
	// ErrCertificateExpired means the client certificate's NotAfter has passed.
	ErrCertificateExpired = errors.New("client certificate has expired")
	// ErrCertificateNotYetValid means the client certificate's NotBefore is in the future.
	ErrCertificateNotYetValid = errors.New("client certificate is not valid yet")
	// ErrNotFinished means a result was asked for while the job is queued or running.
	ErrNotFinished = errors.New("job has not finished")
)

// ConfigError is a missing or malformed setting, found before any request.
type ConfigError struct {
	// Field names the setting, e.g. "URL" or "CAFile".
	Field string
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *ConfigError) Error() string { return e.Field + " " + e.Reason }

// CertificateError is a client certificate that cannot be used.
type CertificateError struct {
	// File is the certificate file.
	File string
	// Err is ErrCertificateExpired, ErrCertificateNotYetValid or a load error.
	Err error
	// NotBefore and NotAfter are set for the validity errors.
	NotBefore, NotAfter time.Time
}

// Error implements error.
func (e *CertificateError) Error() string {
	switch {
	case errors.Is(e.Err, ErrCertificateExpired):
		return fmt.Sprintf("client certificate %s expired on %s", e.File, e.NotAfter.UTC().Format(time.RFC3339))
	case errors.Is(e.Err, ErrCertificateNotYetValid):
		return fmt.Sprintf("client certificate %s is not valid before %s", e.File, e.NotBefore.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("client certificate %s: %v", e.File, e.Err)
}

// Unwrap returns the cause.
func (e *CertificateError) Unwrap() error { return e.Err }

// TLSReason says why a handshake failed.
type TLSReason int

// Handshake failure reasons.
const (
	// TLSOther is any other handshake failure.
	TLSOther TLSReason = iota
	// TLSServerUntrusted: the gateway's certificate does not chain to the CA bundle.
	TLSServerUntrusted
	// TLSServerName: the gateway's certificate does not name the host in the URL.
	TLSServerName
	// TLSServerCertInvalid: the gateway's certificate is expired or otherwise invalid.
	TLSServerCertInvalid
	// TLSClientExpired: the gateway rejected the client certificate as expired.
	TLSClientExpired
	// TLSClientUntrusted: the gateway does not trust the client certificate's issuer.
	TLSClientUntrusted
	// TLSClientRejected: the gateway rejected the client certificate for another reason.
	TLSClientRejected
	// TLSClientMissing: the gateway requires a client certificate and got none.
	TLSClientMissing
	// TLSVersion: no common TLS version (the gateway requires TLS 1.3).
	TLSVersion
)

// TLSError is a failed TLS handshake with the gateway.
type TLSError struct {
	// Reason classifies the failure.
	Reason TLSReason
	// CAFile is the CA bundle in use (empty: system roots).
	CAFile string
	// Err is the error from crypto/tls.
	Err error
}

// Error implements error with one line that says what to fix.
func (e *TLSError) Error() string {
	ca := e.CAFile
	if ca == "" {
		ca = "(system roots)"
	}
	switch e.Reason {
	case TLSServerUntrusted:
		return "server certificate not trusted by CA " + ca
	case TLSServerName:
		return "server certificate does not match the URL's host: " + e.Err.Error()
	case TLSServerCertInvalid:
		return "server certificate is invalid: " + e.Err.Error()
	case TLSClientExpired:
		return "the gateway rejected the client certificate as expired (renew it)"
	case TLSClientUntrusted:
		return "the gateway does not trust the client certificate's issuer (wrong certificate for this gateway?)"
	case TLSClientRejected:
		return "the gateway rejected the client certificate: " + e.Err.Error()
	case TLSClientMissing:
		return "the gateway requires a client certificate (--cert/--key or CISS_CERT/CISS_KEY)"
	case TLSVersion:
		return "no common TLS version: the gateway requires TLS 1.3"
	}
	return "TLS handshake failed: " + e.Err.Error()
}

// Unwrap returns the crypto/tls error.
func (e *TLSError) Unwrap() error { return e.Err }

// TransportError is a request that got no HTTP answer: connection refused or
// reset, DNS failure, timeout.
type TransportError struct {
	// Op is the request, e.g. "GET /v1/jobs/…".
	Op string
	// Err is the cause.
	Err error
}

// Error implements error.
func (e *TransportError) Error() string { return e.Op + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *TransportError) Unwrap() error { return e.Err }

// Problem is an RFC 9457 problem document as the gateway writes it.
type Problem struct {
	// Type is a URI whose last element is a stable slug, e.g. ".../forbidden".
	Type string `json:"type"`
	// Title summarises the kind of problem; Detail explains this occurrence.
	Title  string `json:"title"`
	Detail string `json:"detail,omitempty"`
	// Status repeats the HTTP status.
	Status int `json:"status"`
	// InvalidParams lists the request fields that failed validation.
	InvalidParams []schemas.FieldError `json:"invalid-params,omitempty"`
	// Available lists the report media types a 406 could have served.
	Available []string `json:"available,omitempty"`
}

// Slug is the problem type's last path element, e.g. "forbidden".
func (p Problem) Slug() string {
	return p.Type[strings.LastIndex(p.Type, "/")+1:]
}

// APIError is an HTTP answer other than the expected one.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Problem is the decoded problem document; for a non-problem answer only
	// Status and Detail (the start of the body) are set.
	Problem Problem
	// RetryAfter is the Retry-After header, zero when absent.
	RetryAfter time.Duration
}

// Error implements error: the problem's detail, its invalid fields listed.
func (e *APIError) Error() string {
	msg := e.Problem.Detail
	if msg == "" {
		msg = e.Problem.Title
	}
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if len(e.Problem.InvalidParams) > 0 {
		parts := make([]string, len(e.Problem.InvalidParams))
		for i, f := range e.Problem.InvalidParams {
			parts[i] = f.Field + ": " + f.Reason
		}
		msg = "invalid request: " + strings.Join(parts, "; ")
	}
	return fmt.Sprintf("%s (HTTP %d)", msg, e.Status)
}

func apiError(resp *http.Response, body []byte) error {
	e := &APIError{Status: resp.StatusCode}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" && json.Unmarshal(body, &e.Problem) == nil {
		return e
	}
	e.Problem = Problem{Status: resp.StatusCode, Detail: strings.TrimSpace(string(body[:min(len(body), 200)]))}
	return e
}

// IsStatus reports whether err is an *APIError with one of the statuses.
func IsStatus(err error, statuses ...int) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	for _, s := range statuses {
		if ae.Status == s {
			return true
		}
	}
	return false
}

// Retryable reports whether trying the same request again later may succeed:
// transport failures (the gateway restarting, a connection reset), 429, 502,
// 503 and 504. Handshake refusals, 4xx answers and 500 are not retryable.
func Retryable(err error) bool {
	var te *TransportError
	if errors.As(err, &te) {
		return !errors.Is(err, context.Canceled)
	}
	return IsStatus(err, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout)
}

// classify turns an http.Client error into a *TLSError or *TransportError.
func (c *Client) classify(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// Either the caller gave up or one request timed out; both are the
		// transport's business, and the caller's ctx tells which.
		return &TransportError{Op: op, Err: err}
	}
	var (
		cve *tls.CertificateVerificationError
		uae x509.UnknownAuthorityError
		he  x509.HostnameError
		cie x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &uae):
		return &TLSError{Reason: TLSServerUntrusted, CAFile: c.caFile, Err: err}
	case errors.As(err, &he):
		return &TLSError{Reason: TLSServerName, CAFile: c.caFile, Err: he}
	case errors.As(err, &cie):
		return &TLSError{Reason: TLSServerCertInvalid, CAFile: c.caFile, Err: cie}
	case errors.As(err, &cve):
		return &TLSError{Reason: TLSServerUntrusted, CAFile: c.caFile, Err: err}
	}
	// Alerts from the gateway arrive as "remote error: tls: <alert>"; with
	// TLS 1.3 a rejected client certificate surfaces on the first read.
	msg := err.Error()
	for _, a := range []struct {
		text   string
		reason TLSReason
	}{
		{"tls: expired certificate", TLSClientExpired},
		{"tls: unknown certificate authority", TLSClientUntrusted},
		{"tls: certificate required", TLSClientMissing},
		{"tls: bad certificate", TLSClientRejected},
		{"tls: unsupported certificate", TLSClientRejected},
		{"tls: revoked certificate", TLSClientRejected},
		{"tls: protocol version not supported", TLSVersion},
	} {
		if strings.Contains(msg, a.text) {
			return &TLSError{Reason: a.reason, CAFile: c.caFile, Err: err}
		}
	}
	var re tls.RecordHeaderError
	if errors.As(err, &re) {
		return &TLSError{Reason: TLSOther, CAFile: c.caFile, Err: fmt.Errorf("the server does not speak TLS: %w", err)}
	}
	// Everything else (refused, reset, EOF, DNS, a dropped connection
	// mid-answer) is the transport's, and worth retrying.
	return &TransportError{Op: op, Err: err}
}
