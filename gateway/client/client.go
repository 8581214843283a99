// Package client is a small Go client for the CISS job API v1: submit a job,
// follow it to the end, fetch its report, cancel it, list jobs.
//
// It speaks HTTPS with a client certificate (mutual TLS, TLS 1.3) and turns
// what goes wrong into errors a caller can act on without reading HTTP: a
// *APIError for every problem+json answer, a *TLSError for a refused
// handshake (naming which side refused and why), a *CertificateError for a
// local certificate that cannot work (expired, not yet valid, unreadable).
// Retryable tells transient failures (gateway restarting, NATS unavailable)
// from permanent ones; Wait retries them with backoff.
//
// The package depends on the standard library and ciss.dev/schemas only, so
// pipelines and tools can embed it without pulling in the gateway.
package client

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"ciss.dev/schemas"
)

// Config says where the gateway is and which certificate to present. URL,
// CertFile and KeyFile are required unless HTTPClient is given.
type Config struct {
	// URL is the gateway's base URL, e.g. "https://ciss.example.com:8443".
	URL string
	// CertFile and KeyFile hold the client certificate chain and key (PEM).
	CertFile, KeyFile string
	// CAFile is a PEM bundle of CAs trusted for the gateway's certificate;
	// empty means the system roots.
	CAFile string
	// HTTPClient, when set, is used as is (its transport must present the
	// client certificate); the file fields are then ignored.
	HTTPClient *http.Client
	// UserAgent is sent with every request; default "ciss-client".
	UserAgent string
	// RequestTimeout bounds one HTTP exchange that is not a long poll;
	// default 30s.
	RequestTimeout time.Duration
	// Now is the clock used to check certificate validity; default time.Now.
	Now func() time.Time
}

// Client calls the API. It is safe for concurrent use.
type Client struct {
	base     *url.URL
	hc       *http.Client
	ua       string
	timeout  time.Duration
	identity string
	caFile   string
}

// New validates cfg, loads the certificate, key and CA bundle, and checks
// that the certificate is valid now, so that an expired certificate fails
// here with a *CertificateError instead of as a handshake alert later. It
// does not connect.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, &ConfigError{Field: "URL", Reason: "is required (flag --url or CISS_URL)"}
	}
	base, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil || base.Host == "" || (base.Scheme != "https" && base.Scheme != "http") {
		return nil, &ConfigError{Field: "URL", Reason: fmt.Sprintf("%q is not an https://host:port URL", cfg.URL)}
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	c := &Client{
		base:    base,
		ua:      cmp.Or(cfg.UserAgent, "ciss-client"),
		timeout: cmp.Or(cfg.RequestTimeout, 30*time.Second),
		caFile:  cfg.CAFile,
	}
	if cfg.HTTPClient != nil {
		c.hc = cfg.HTTPClient
		return c, nil
	}
	if base.Scheme != "https" {
		return nil, &ConfigError{Field: "URL", Reason: "must use https: the gateway only speaks mutual TLS"}
	}
	switch {
	case cfg.CertFile == "":
		return nil, &ConfigError{Field: "CertFile", Reason: "is required (flag --cert or CISS_CERT)"}
	case cfg.KeyFile == "":
		return nil, &ConfigError{Field: "KeyFile", Reason: "is required (flag --key or CISS_KEY)"}
	}
	pair, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, &CertificateError{File: cfg.CertFile, Err: err}
	}
	leaf := pair.Leaf
	if leaf == nil { // always set since Go 1.23; kept for clarity
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, &CertificateError{File: cfg.CertFile, Err: err}
		}
	}
	t := now()
	switch {
	case t.After(leaf.NotAfter):
		return nil, &CertificateError{File: cfg.CertFile, Err: ErrCertificateExpired, NotAfter: leaf.NotAfter}
	case t.Before(leaf.NotBefore):
		return nil, &CertificateError{File: cfg.CertFile, Err: ErrCertificateNotYetValid, NotBefore: leaf.NotBefore}
	}
	c.identity = IdentityOf(leaf)
	tc := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Always present the certificate, even when the gateway's list of
		// acceptable issuers does not name ours (crypto/tls would then send
		// none): the gateway's refusal then says "unknown certificate
		// authority", which is the actual mistake, not "certificate required".
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil },
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, &ConfigError{Field: "CAFile", Reason: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &ConfigError{Field: "CAFile", Reason: fmt.Sprintf("%s holds no PEM certificate", cfg.CAFile)}
		}
		tc.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.Proxy = http.ProxyFromEnvironment
	c.hc = &http.Client{
		Transport: tr,
		// The API never redirects; Harbor-style 302s must reach the caller.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// Identity is the client certificate's identity as the gateway's policy sees
// it: the SPIFFE ID, else the subject ("CN=ci,O=acme"). Empty with a
// caller-supplied HTTPClient.
func (c *Client) Identity() string { return c.identity }

// IdentityOf returns the identity the gateway derives from a certificate.
func IdentityOf(cert *x509.Certificate) string {
	for _, u := range cert.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") {
			return u.String()
		}
	}
	return cert.Subject.String()
}

// SubmitOptions are optional settings of Submit.
type SubmitOptions struct {
	// IdempotencyKey makes retries of the same request map to the same job.
	// Submit retries nothing by itself; callers that retry should set one.
	IdempotencyKey string
}

// Submit asks for a job. req is usually a schemas.JobRequest; any value that
// encodes to the request JSON is accepted, so that request fields newer than
// this package's schemas can be sent (the gateway validates them). The job
// comes back queued.
func (c *Client) Submit(ctx context.Context, req any, opts SubmitOptions) (*schemas.Job, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("client: encode request: %w", err)
	}
	hdr := http.Header{"Content-Type": {schemas.MediaTypeJSON}}
	if opts.IdempotencyKey != "" {
		hdr.Set("Idempotency-Key", opts.IdempotencyKey)
	}
	var job schemas.Job
	if err := c.doJSON(ctx, http.MethodPost, "/v1/jobs", nil, hdr, body, http.StatusAccepted, &job, c.timeout); err != nil {
		return nil, err
	}
	return &job, nil
}

// Job returns a job's current state.
func (c *Client) Job(ctx context.Context, id string) (*schemas.Job, error) {
	return c.WaitChange(ctx, id, 0)
}

// WaitChange long-polls a job: it returns once the job's status differs from
// the one it had when the request arrived, or after wait (the gateway caps it,
// 60s by default), with the job as it then is. Zero wait returns at once.
func (c *Client) WaitChange(ctx context.Context, id string, wait time.Duration) (*schemas.Job, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	var q url.Values
	if wait > 0 {
		q = url.Values{"wait": {wait.String()}}
	}
	var job schemas.Job
	if err := c.doJSON(ctx, http.MethodGet, "/v1/jobs/"+id, q, nil, nil, http.StatusOK, &job, c.timeout+wait); err != nil {
		return nil, err
	}
	return &job, nil
}

// Cancel cancels a queued or running job and returns it, now cancelled. A
// finished job answers a *APIError with status 409.
func (c *Client) Cancel(ctx context.Context, id string) (*schemas.Job, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	var job schemas.Job
	if err := c.doJSON(ctx, http.MethodDelete, "/v1/jobs/"+id, nil, nil, nil, http.StatusAccepted, &job, c.timeout); err != nil {
		return nil, err
	}
	return &job, nil
}

// Approve approves a protected action waiting in pending-approval and returns it,
// now queued. The requester cannot approve their own job (403); a job not waiting
// for approval answers a *APIError with status 409.
func (c *Client) Approve(ctx context.Context, id string) (*schemas.Job, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	var job schemas.Job
	if err := c.doJSON(ctx, http.MethodPost, "/v1/jobs/"+id+"/approve", nil, nil, nil, http.StatusAccepted, &job, c.timeout); err != nil {
		return nil, err
	}
	return &job, nil
}

// ListOptions filter and page GET /v1/jobs.
type ListOptions struct {
	// Status keeps only jobs in this status; empty keeps all.
	Status schemas.Status
	// Limit is the page size (1–200); zero means the gateway's default (50).
	Limit int
	// PageToken continues a previous listing (JobList.NextPageToken).
	PageToken string
}

// JobList is one page of jobs, newest first.
type JobList struct {
	// Jobs are the caller's tenant's jobs.
	Jobs []schemas.Job `json:"jobs"`
	// NextPageToken, when set, fetches the next page.
	NextPageToken string `json:"next_page_token,omitempty"`
}

// Jobs lists the caller's tenant's jobs.
func (c *Client) Jobs(ctx context.Context, opts ListOptions) (*JobList, error) {
	q := url.Values{}
	if opts.Status != "" {
		q.Set("status", string(opts.Status))
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.PageToken != "" {
		q.Set("page_token", opts.PageToken)
	}
	var list JobList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/jobs", q, nil, nil, http.StatusOK, &list, c.timeout); err != nil {
		return nil, err
	}
	return &list, nil
}

// Report is a report document as served.
type Report struct {
	// MediaType is the document's media type, e.g. "application/sarif+json".
	MediaType string
	// Body is the document.
	Body []byte
}

// Result fetches a finished job's report in format (schemas.FormatSARIF,
// FormatCycloneDX or FormatNative). A job that is not finished answers
// ErrNotFinished; a failed or cancelled one a *APIError with status 409.
func (c *Client) Result(ctx context.Context, id, format string) (*Report, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	q := url.Values{}
	if format != "" {
		q.Set("format", format)
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/jobs/"+id+"/result", q, nil, nil, c.timeout)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &TransportError{Op: "read report", Err: err}
	}
	switch resp.StatusCode {
	case http.StatusOK:
		mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		return &Report{MediaType: mt, Body: b}, nil
	case http.StatusAccepted:
		return nil, ErrNotFinished
	}
	return nil, apiError(resp, b)
}

// checkID refuses ids that would change the request path.
func checkID(id string) error {
	if !schemas.ValidJobID(id) {
		return &ConfigError{Field: "job id", Reason: fmt.Sprintf("%q is not a job id (a UUID as printed by submit)", id)}
	}
	return nil
}

// doJSON sends a request and decodes a JSON answer of the wanted status.
func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, hdr http.Header, body []byte, want int, out any, timeout time.Duration) error {
	resp, err := c.do(ctx, method, path, q, hdr, body, timeout)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return &TransportError{Op: method + " " + path, Err: err}
	}
	if resp.StatusCode != want {
		return apiError(resp, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return &TransportError{Op: method + " " + path, Err: fmt.Errorf("decode answer: %w", err)}
	}
	return nil
}

// do sends one request; transport and handshake failures come back as
// *TLSError or *TransportError.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, hdr http.Header, body []byte, timeout time.Duration) (*http.Response, error) {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("client: %w", err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.ua)
	req.Header.Set("Accept", "application/json, application/problem+json;q=0.9, */*;q=0.5")
	resp, err := c.hc.Do(req)
	if err != nil {
		cancel()
		return nil, c.classify(method+" "+path, err)
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody releases the request's context when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

// Close implements io.Closer.
func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
