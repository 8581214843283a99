// Package harbor lets Harbor use CISS as its vulnerability scanner: it serves
// the Harbor Pluggable Scanner API v1.1 (goharbor/pluggable-scanner-spec) on
// the gateway's mTLS listener and maps it onto CISS jobs.
//
//	GET  /api/v1/metadata               scanner name, capabilities, properties
//	POST /api/v1/scan                   → 202 {"id": job id}: an image-scan job
//	GET  /api/v1/scan/{id}/report       → 302 + Refresh-After while queued or
//	                                      running, then 200 with the report
//
// A scan request becomes an image-scan job of the caller's tenant for
// "<registry host>/<repository>@<digest>", so Harbor gets whichever tool the
// dispatcher's routing picks, the result cache and tenant isolation like any
// other client. The report is the job's native report (Trivy JSON) or, for a
// tool without one, its SARIF report, converted to Harbor's vulnerability
// model.
//
// The registry authorization Harbor sends (a short-lived robot token) is
// deliberately dropped: secrets never enter job parameters, events or the job
// state. Workers pull with their own registry access.
//
// Authentication is the gateway's: a verified client certificate matched by
// the policy. Harbor itself offers adapters only bearer or basic auth, so it
// reaches this endpoint through a proxy that presents a client certificate
// (see README, "Harbor"). Scanning needs the submitter role, reading reports
// the reader role.
package harbor

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"ciss.dev/gateway/internal/jobstore"
	"ciss.dev/gateway/internal/metrics"
	"ciss.dev/gateway/internal/mtls"
	"ciss.dev/gateway/internal/policy"
	"ciss.dev/gateway/internal/report"
	"ciss.dev/schemas"
	"github.com/google/uuid"
)

// Media types of the Pluggable Scanner API.
const (
	MediaTypeMetadata     = "application/vnd.scanner.adapter.metadata+json; version=1.0"
	MediaTypeScanRequest  = "application/vnd.scanner.adapter.scan.request+json; version=1.0"
	MediaTypeScanResponse = "application/vnd.scanner.adapter.scan.response+json; version=1.0"
	MediaTypeError        = "application/vnd.scanner.adapter.error+json; version=1.0"
	// MediaTypeVulnReport is the generic vulnerability report Harbor 2.x asks for.
	MediaTypeVulnReport = "application/vnd.security.vulnerability.report; version=1.1"
	// MediaTypeHarborReport is the adapter report type of spec v1.0/v1.1.
	MediaTypeHarborReport = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"
	// MediaTypeRawReport is the tool's own report, passed through.
	MediaTypeRawReport = "application/vnd.scanner.adapter.vuln.report.raw"

	MediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
)

// Store is what the adapter needs from JetStream.
type Store interface {
	Publish(ctx context.Context, subject, msgID string, data []byte) error
	Create(ctx context.Context, key string, job *schemas.Job) (uint64, error)
	Get(ctx context.Context, key string) (jobstore.Entry, error)
	OpenReport(ctx context.Context, name string) (jobstore.Object, error)
}

// Authorizer maps an identity to its policy binding.
type Authorizer interface {
	Match(id mtls.Identity) (*policy.Binding, bool)
}

var (
	_ Store        = (*jobstore.Store)(nil)
	_ Authorizer   = (*policy.File)(nil)
	_ http.Handler = (*Handler)(nil)
)

// Config configures the adapter. Store and Authorizer are required.
type Config struct {
	Store      Store
	Authorizer Authorizer
	// Metrics records requests and submitted jobs; optional.
	Metrics *metrics.Metrics
	// Logger gets one line per request; default discards.
	Logger *slog.Logger
	// Source is the CloudEvents source of published events; default "ciss-gateway".
	Source string
	// Version is reported as the scanner version; default "1".
	Version string
	// Lane is the priority lane of Harbor's scans; default bulk, so that a
	// registry-wide "scan all" never delays pipelines.
	Lane schemas.Lane
	// RefreshAfter is the Refresh-After of a pending report; default 5s.
	RefreshAfter time.Duration
}

// Handler serves the adapter API under /api/v1/.
type Handler struct {
	cfg Config
	mux *http.ServeMux
}

// opTimeout bounds one JetStream operation.
const opTimeout = 5 * time.Second

// maxBody bounds a scan request; real ones are well under 4 KiB.
const maxBody = 64 << 10

// New validates cfg and builds the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Authorizer == nil {
		return nil, errors.New("harbor: Config.Store and Config.Authorizer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Source == "" {
		cfg.Source = "ciss-gateway"
	}
	if cfg.Version == "" {
		cfg.Version = "1"
	}
	if cfg.Lane == "" {
		cfg.Lane = schemas.LaneBulk
	}
	if !cfg.Lane.Valid() {
		return nil, fmt.Errorf("harbor: Config.Lane %q is not a lane", cfg.Lane)
	}
	if cfg.RefreshAfter <= 0 {
		cfg.RefreshAfter = 5 * time.Second
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	for _, r := range []struct {
		pattern string
		action  policy.Action // zero: any bound identity
		handle  func(*Handler, http.ResponseWriter, *http.Request, *policy.Binding, mtls.Identity) error
	}{
		{"GET /api/v1/metadata", 0, (*Handler).metadata},
		{"POST /api/v1/scan", policy.ActionSubmit, (*Handler).scan},
		{"GET /api/v1/scan/{id}/report", policy.ActionRead, (*Handler).report},
	} {
		h.mux.HandleFunc(r.pattern, func(w http.ResponseWriter, req *http.Request) {
			h.serve(w, req, r.pattern, r.action, r.handle)
		})
	}
	return h, nil
}

// Routes lists the served patterns, for documentation checks.
func Routes() []string {
	return []string{"GET /api/v1/metadata", "POST /api/v1/scan", "GET /api/v1/scan/{id}/report"}
}

// ServeHTTP routes a request; unknown paths answer 404 in the adapter's
// error format.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := h.mux.Handler(r); pattern == "" {
		start := time.Now()
		writeError(w, &statusError{code: http.StatusNotFound, msg: "no such resource"})
		h.observe("harbor unmatched", http.StatusNotFound, start)
		return
	}
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) observe(route string, code int, start time.Time) {
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.ObserveRequest(route, code, time.Since(start))
	}
}

// serve authenticates and authorizes, runs the handler and logs.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, pattern string, action policy.Action,
	handle func(*Handler, http.ResponseWriter, *http.Request, *policy.Binding, mtls.Identity) error) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	id, err := mtls.PeerIdentity(r.TLS)
	var b *policy.Binding
	if err == nil {
		var ok bool
		if b, ok = h.cfg.Authorizer.Match(id); !ok {
			err = &statusError{code: http.StatusForbidden, msg: "no policy binding matches this identity"}
		} else if action != 0 && !b.Can(action) {
			err = &statusError{code: http.StatusForbidden, msg: fmt.Sprintf("binding %q does not allow %s", b.Name, action)}
		}
	} else {
		err = &statusError{code: http.StatusUnauthorized, msg: err.Error()}
	}
	if err == nil {
		err = handle(h, sw, r, b, id)
	}
	if err != nil {
		writeError(sw, err)
	}
	code := sw.code()
	h.observe("harbor "+pattern, code, start)
	level := slog.LevelInfo
	if code >= 500 {
		level = slog.LevelError
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method), slog.String("route", "harbor "+pattern), slog.String("path", r.URL.Path),
		slog.Int("status", code), slog.Duration("duration", time.Since(start)), slog.String("remote", r.RemoteAddr),
	}
	if id.String() != "" {
		attrs = append(attrs, slog.String("identity", id.String()))
	}
	if b != nil {
		attrs = append(attrs, slog.String("binding", b.Name), slog.String("tenant", b.Tenant))
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	h.cfg.Logger.LogAttrs(r.Context(), level, "request", attrs...)
}

// Scanner identifies the adapter in metadata and reports.
type Scanner struct {
	Name    string `json:"name"`
	Vendor  string `json:"vendor"`
	Version string `json:"version"`
}

// Capability is one artifact-to-report capability.
type Capability struct {
	ConsumesMimeTypes []string `json:"consumes_mime_types"`
	ProducesMimeTypes []string `json:"produces_mime_types"`
}

// Metadata is the body of GET /api/v1/metadata.
type Metadata struct {
	Scanner      Scanner           `json:"scanner"`
	Capabilities []Capability      `json:"capabilities"`
	Properties   map[string]string `json:"properties,omitempty"`
}

func (h *Handler) scanner() Scanner {
	return Scanner{Name: "CISS", Vendor: "CISS", Version: h.cfg.Version}
}

func (h *Handler) metadata(w http.ResponseWriter, _ *http.Request, _ *policy.Binding, _ mtls.Identity) error {
	return writeJSON(w, http.StatusOK, MediaTypeMetadata, Metadata{
		Scanner: h.scanner(),
		Capabilities: []Capability{{
			ConsumesMimeTypes: []string{MediaTypeOCIManifest, MediaTypeDockerManifest},
			ProducesMimeTypes: []string{MediaTypeVulnReport, MediaTypeHarborReport, MediaTypeRawReport},
		}},
		Properties: map[string]string{
			"harbor.scanner-adapter/scanner-type": "os-package-vulnerability",
			"ciss.dev/job-type":                   schemas.JobTypeImageScan,
			"ciss.dev/tool":                       "chosen per scan by the CISS routing; see the report's job",
		},
	})
}

// ScanRequest is the body of POST /api/v1/scan.
type ScanRequest struct {
	Registry struct {
		URL string `json:"url"`
		// Authorization is read only to be dropped; see the package doc.
		Authorization string `json:"authorization,omitempty"`
	} `json:"registry"`
	Artifact Artifact `json:"artifact"`
}

// Artifact names the image Harbor wants scanned.
type Artifact struct {
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	Tag        string `json:"tag,omitempty"`
	MimeType   string `json:"mime_type,omitempty"`
}

// ScanResponse is the body of a 202 to POST /api/v1/scan.
type ScanResponse struct {
	ID string `json:"id"`
}

func (h *Handler) scan(w http.ResponseWriter, r *http.Request, b *policy.Binding, id mtls.Identity) error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil ||
		(mt != "application/vnd.scanner.adapter.scan.request+json" && mt != "application/json") {
		return &statusError{code: http.StatusBadRequest, msg: "Content-Type must be " + MediaTypeScanRequest}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return &statusError{code: http.StatusBadRequest, msg: "reading the request: " + err.Error()}
	}
	// Not strict: Harbor adds fields in newer spec versions.
	var req ScanRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return &statusError{code: http.StatusBadRequest, msg: "malformed JSON: " + err.Error()}
	}
	image, err := imageRef(&req)
	if err != nil {
		return err
	}
	jr := schemas.JobRequest{Type: schemas.JobTypeImageScan, Target: schemas.Target{Image: image}, Lane: h.cfg.Lane}
	if err := jr.Validate(); err != nil {
		return &statusError{code: http.StatusUnprocessableEntity, msg: err.Error()}
	}
	jobID, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("new job id: %w", err)
	}
	canon, _ := json.Marshal(jr) // a JobRequest always encodes
	sum := sha256.Sum256(canon)
	now := time.Now().UTC()
	job := schemas.Job{
		ID: jobID.String(), Tenant: b.Tenant, Type: jr.Type, Target: jr.Target, Lane: jr.Lane,
		Cache: jr.CacheEnabled(), Status: schemas.StatusQueued, RequestedBy: id.String(),
		RequestDigest: "sha256:" + hex.EncodeToString(sum[:]), CreatedAt: now, UpdatedAt: now,
	}
	ev, err := schemas.Marshal(schemas.TypeJobRequested, h.cfg.Source, job.ID, job)
	if err != nil {
		return err
	}
	// Like the job API: acknowledged only once JetStream has the event; the
	// state write after it may fail (the dispatcher then creates the state).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), opTimeout)
	defer cancel()
	if err := h.cfg.Store.Publish(ctx, schemas.SubjectJobRequested(job.Lane), job.ID, ev); err != nil {
		return err
	}
	if _, err := h.cfg.Store.Create(ctx, schemas.JobKey(job.Tenant, job.ID), &job); err != nil && !errors.Is(err, jobstore.ErrExists) {
		h.cfg.Logger.Warn("harbor scan accepted but state not written", "job", job.ID, "tenant", job.Tenant, "err", err)
	}
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.JobSubmitted(job.Type, string(job.Lane))
	}
	return writeJSON(w, http.StatusAccepted, MediaTypeScanResponse, ScanResponse{ID: job.ID})
}

// imageRef builds "host[:port]/repository@digest" from a scan request.
func imageRef(req *ScanRequest) (string, error) {
	bad := func(format string, args ...any) error {
		return &statusError{code: http.StatusUnprocessableEntity, msg: fmt.Sprintf(format, args...)}
	}
	u, err := url.Parse(req.Registry.URL)
	switch {
	case req.Registry.URL == "":
		return "", bad("registry.url is required")
	case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
		return "", bad("registry.url %q is not an http(s) URL", req.Registry.URL)
	case req.Artifact.Repository == "":
		return "", bad("artifact.repository is required")
	case req.Artifact.Digest == "":
		return "", bad("artifact.digest is required: CISS scans artifacts by digest")
	case req.Artifact.MimeType != "" && req.Artifact.MimeType != MediaTypeOCIManifest && req.Artifact.MimeType != MediaTypeDockerManifest:
		return "", bad("artifact.mime_type %q is not supported; want %s or %s", req.Artifact.MimeType, MediaTypeOCIManifest, MediaTypeDockerManifest)
	}
	return u.Host + "/" + strings.Trim(req.Artifact.Repository, "/") + "@" + req.Artifact.Digest, nil
}

// Severity is Harbor's severity scale.
type Severity string

// Harbor severities used by the adapter (Negligible is never produced).
const (
	SeverityUnknown  Severity = "Unknown"
	SeverityLow      Severity = "Low"
	SeverityMedium   Severity = "Medium"
	SeverityHigh     Severity = "High"
	SeverityCritical Severity = "Critical"
)

func severityOf(s report.Severity) Severity {
	switch s {
	case report.SeverityCritical:
		return SeverityCritical
	case report.SeverityHigh:
		return SeverityHigh
	case report.SeverityMedium:
		return SeverityMedium
	case report.SeverityLow:
		return SeverityLow
	}
	return SeverityUnknown
}

// Vulnerability is one item of a Harbor report.
type Vulnerability struct {
	ID          string   `json:"id"`
	Package     string   `json:"package"`
	Version     string   `json:"version"`
	FixVersion  string   `json:"fix_version,omitempty"`
	Severity    Severity `json:"severity"`
	Description string   `json:"description,omitempty"`
	Links       []string `json:"links,omitempty"`
	CVSS3Score  string   `json:"cve3_score,omitempty"`
	CVSS3Vector string   `json:"cvss3_vector,omitempty"`
}

// Report is Harbor's vulnerability report.
type Report struct {
	GeneratedAt     time.Time       `json:"generated_at"`
	Artifact        Artifact        `json:"artifact"`
	Scanner         Scanner         `json:"scanner"`
	Severity        Severity        `json:"severity"`
	Vulnerabilities []Vulnerability `json:"vulnerabilities"`
}

func (h *Handler) report(w http.ResponseWriter, r *http.Request, b *policy.Binding, _ mtls.Identity) error {
	id := r.PathValue("id")
	if !schemas.ValidJobID(id) {
		return errNoScan
	}
	want, err := acceptedReport(r.Header.Get("Accept"))
	if err != nil {
		return err
	}
	e, err := h.cfg.Store.Get(r.Context(), schemas.JobKey(b.Tenant, id))
	if errors.Is(err, jobstore.ErrNotFound) {
		return errNoScan
	}
	if err != nil {
		return err
	}
	job := e.Job
	switch {
	case !job.Status.Terminal():
		w.Header().Set("Refresh-After", strconv.Itoa(int(h.cfg.RefreshAfter.Round(time.Second)/time.Second)))
		w.WriteHeader(http.StatusFound)
		return nil
	case job.Status != schemas.StatusSucceeded:
		msg := "scan " + string(job.Status)
		if job.Error != nil {
			msg += ": " + job.Error.Code + ": " + job.Error.Message
		}
		return &statusError{code: http.StatusInternalServerError, msg: msg}
	case job.Result == nil:
		return &statusError{code: http.StatusInternalServerError, msg: "scan succeeded without a result"}
	}
	if want == MediaTypeRawReport {
		body, err := h.read(r.Context(), job.Result, schemas.FormatNative)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", MediaTypeRawReport)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		return nil
	}
	rep, err := h.convert(r.Context(), &job)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, want, rep)
}

// acceptedReport picks the report media type from Accept: the first listed
// type the adapter produces; none or */* means the generic v1.1 report.
func acceptedReport(accept string) (string, error) {
	if strings.TrimSpace(accept) == "" {
		return MediaTypeVulnReport, nil
	}
	for part := range strings.SplitSeq(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "*/*", "application/*":
			return MediaTypeVulnReport, nil
		case "application/vnd.security.vulnerability.report":
			if v := params["version"]; v == "" || v == "1.1" {
				return MediaTypeVulnReport, nil
			}
		case "application/vnd.scanner.adapter.vuln.report.harbor+json":
			if v := params["version"]; v == "" || v == "1.0" || v == "1.1" {
				return "application/vnd.scanner.adapter.vuln.report.harbor+json; version=" + cmp.Or(v, "1.0"), nil
			}
		case "application/vnd.scanner.adapter.vuln.report.raw":
			return MediaTypeRawReport, nil
		}
	}
	return "", &statusError{code: http.StatusBadRequest, msg: fmt.Sprintf("unsupported report type %q; this adapter produces %s, %s and %s",
		accept, MediaTypeVulnReport, MediaTypeHarborReport, MediaTypeRawReport)}
}

// convert builds Harbor's report from the job's native report (Trivy JSON),
// or its SARIF report when the native one is not Trivy's.
func (h *Handler) convert(ctx context.Context, job *schemas.Job) (*Report, error) {
	var findings []report.Finding
	var errs []error
	for _, f := range []struct {
		format string
		parse  func([]byte) ([]report.Finding, error)
	}{{schemas.FormatNative, report.ParseTrivy}, {schemas.FormatSARIF, report.ParseSARIF}} {
		if _, ok := job.Result.ReportFor(f.format); !ok {
			continue
		}
		body, err := h.read(ctx, job.Result, f.format)
		if err == nil {
			findings, err = f.parse(body)
		}
		if err == nil {
			errs = nil
			break
		}
		errs = append(errs, err)
	}
	if len(errs) > 0 || findings == nil && job.Result.Summary.Total() > 0 {
		return nil, fmt.Errorf("job %s: no report Harbor's model can be built from: %w", job.ID, errors.Join(errs...))
	}
	report.Sort(findings)
	out := &Report{Scanner: h.scanner(), Severity: SeverityUnknown, Vulnerabilities: make([]Vulnerability, 0, len(findings))}
	if job.FinishedAt != nil {
		out.GeneratedAt = job.FinishedAt.UTC()
	}
	if repo, digest, ok := strings.Cut(job.Target.Image, "@"); ok {
		if _, path, ok := strings.Cut(repo, "/"); ok {
			out.Artifact = Artifact{Repository: path, Digest: digest}
		}
	}
	top := report.SeverityUnknown
	for _, f := range findings {
		top = max(top, f.Severity)
		out.Vulnerabilities = append(out.Vulnerabilities, Vulnerability{
			ID: f.ID, Package: f.Package, Version: f.InstalledVersion, FixVersion: f.FixedVersion,
			Severity: severityOf(f.Severity), Description: cmp.Or(f.Description, f.Title), Links: f.Links,
			CVSS3Score: f.CVSS3Score, CVSS3Vector: f.CVSS3Vector,
		})
	}
	out.Severity = severityOf(top)
	return out, nil
}

// read returns a stored report document.
func (h *Handler) read(ctx context.Context, res *schemas.Result, format string) ([]byte, error) {
	rep, ok := res.ReportFor(format)
	if !ok {
		return nil, &statusError{code: http.StatusInternalServerError, msg: "the scan has no " + format + " report"}
	}
	obj, err := h.cfg.Store.OpenReport(ctx, rep.Object)
	if err != nil {
		return nil, fmt.Errorf("open report %s: %w", rep.Object, err)
	}
	defer obj.Close()
	b, err := io.ReadAll(io.LimitReader(obj, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read report %s: %w", rep.Object, err)
	}
	return b, nil
}
