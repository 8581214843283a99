package api

import (
	"context"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"ciss.dev/gateway/internal/jobstore"
	"ciss.dev/schemas"
)

// ArtifactProvenance is the body of GET /v1/provenance: every job of the
// caller's tenant that produced a result about one artifact, with the
// evidence and signatures CISS produced for it. It answers the audit
// question "who vouched for this image, with what evidence".
type ArtifactProvenance struct {
	// Image is the queried repository and Digest the queried digest (image
	// queries).
	Image  string `json:"image,omitempty"`
	Digest string `json:"digest,omitempty"`
	// Repo and Commit are the queried git commit (source queries).
	Repo   string `json:"repo,omitempty"`
	Commit string `json:"commit,omitempty"`
	// Records are the jobs, newest first.
	Records []ProvenanceRecord `json:"records"`
}

// ProvenanceRecord is one job's evidence about an artifact.
type ProvenanceRecord struct {
	JobID       string     `json:"job_id"`
	Type        string     `json:"type"`
	Status      string     `json:"status"`
	Tool        string     `json:"tool,omitempty"`
	ToolVersion string     `json:"tool_version,omitempty"`
	RequestedBy string     `json:"requested_by"`
	CreatedAt   time.Time  `json:"created_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	// DBVersion is the vulnerability DB the tool used.
	DBVersion string `json:"db_version,omitempty"`
	// Reports are the stored reports with their digests.
	Reports []schemas.Report `json:"reports"`
	// Policy, ImageSignature: the verdict and what was signed in the registry.
	Policy         *schemas.PolicyDecision `json:"policy,omitempty"`
	ImageSignature *schemas.ImageSignature `json:"image_signature,omitempty"`
	// GitTag is the signed tag a sast job pushed for the commit.
	GitTag *schemas.GitTag `json:"git_tag,omitempty"`
	// SignedBy lists the key ids of the result envelope's signatures.
	SignedBy []string `json:"signed_by,omitempty"`
}

// MaxProvenanceRecords bounds one provenance answer.
const MaxProvenanceRecords = 200

var digestRefRE = regexp.MustCompile(`^([^@\s]+)@(sha256:[a-f0-9]{64})$`)

// provenance serves GET /v1/provenance?image=REPO@sha256:….
func (h *Handler) provenance(w http.ResponseWriter, r *http.Request) error {
	c := callOf(r.Context())
	q := r.URL.Query()
	var srcRepo, srcCommit string
	if q.Has("repo") || q.Has("commit") {
		srcRepo, srcCommit = q.Get("repo"), q.Get("commit")
		switch {
		case q.Has("image"):
			return &ParamError{Name: "image", Reason: "query by image, or by repo and commit, not both"}
		case schemas.CheckRepoURL(srcRepo) != "":
			return &ParamError{Name: "repo", Reason: "must be a repository URL as sast jobs take it: " + schemas.CheckRepoURL(srcRepo)}
		case !schemas.ValidCommit(srcCommit):
			return &ParamError{Name: "commit", Reason: "must be a full 40-hex lower-case commit SHA"}
		}
		return h.sourceProvenance(w, r, srcRepo, srcCommit)
	}
	image := q.Get("image")
	m := digestRefRE.FindStringSubmatch(image)
	if m == nil || len(image) > schemas.MaxImageRefLen {
		return &ParamError{Name: "image", Reason: "must be an image pinned by digest: host[:port]/repo@sha256:<64 hex>"}
	}
	repo, digest := stripTag(m[1]), m[2]
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	entries, err := h.cfg.Store.List(ctx, schemas.JobKey(c.binding.Tenant, "*"))
	if err != nil {
		return err
	}
	out := ArtifactProvenance{Image: repo, Digest: digest, Records: []ProvenanceRecord{}}
	return writeProvenance(w, out, entries, func(j *schemas.Job) bool {
		return j.Tenant == c.binding.Tenant && j.Result != nil && j.Result.ImageDigest == digest && stripTag(j.Target.Image) == repo
	})
}

// sourceProvenance serves GET /v1/provenance?repo=…&commit=…: the sast jobs
// (and their signed tags) of one commit.
func (h *Handler) sourceProvenance(w http.ResponseWriter, r *http.Request, repo, commit string) error {
	c := callOf(r.Context())
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	entries, err := h.cfg.Store.List(ctx, schemas.JobKey(c.binding.Tenant, "*"))
	if err != nil {
		return err
	}
	out := ArtifactProvenance{Repo: repo, Commit: commit, Records: []ProvenanceRecord{}}
	return writeProvenance(w, out, entries, func(j *schemas.Job) bool {
		return j.Tenant == c.binding.Tenant && j.Result != nil && j.Target.Repo == repo && j.Target.Commit == commit
	})
}

// writeProvenance answers with the records of the jobs keep selects.
func writeProvenance(w http.ResponseWriter, out ArtifactProvenance, entries []jobstore.Entry, keep func(*schemas.Job) bool) error {
	for i := range entries {
		j := &entries[i].Job
		if !keep(j) {
			continue
		}
		rec := ProvenanceRecord{
			JobID: j.ID, Type: j.Type, Status: string(j.Status), Tool: j.Tool, ToolVersion: j.ToolVersion,
			RequestedBy: j.RequestedBy, CreatedAt: j.CreatedAt, FinishedAt: j.FinishedAt, DBVersion: j.Result.DBVersion,
			Reports: j.Result.Reports, Policy: j.Result.Policy, ImageSignature: j.Result.ImageSignature, GitTag: j.Result.GitTag,
		}
		if rec.Reports == nil {
			rec.Reports = []schemas.Report{}
		}
		if env := j.Result.Signature; env != nil {
			for _, s := range env.Signatures {
				rec.SignedBy = append(rec.SignedBy, s.KeyID)
			}
		}
		out.Records = append(out.Records, rec)
	}
	slices.SortFunc(out.Records, func(a, b ProvenanceRecord) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.JobID, a.JobID)
	})
	if len(out.Records) > MaxProvenanceRecords {
		out.Records = out.Records[:MaxProvenanceRecords]
	}
	return writeJSON(w, http.StatusOK, out)
}

// stripTag returns an image reference's repository: without digest or tag.
func stripTag(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if slash := strings.LastIndex(ref, "/"); strings.LastIndex(ref, ":") > slash {
		ref = ref[:strings.LastIndex(ref, ":")]
	}
	return ref
}
