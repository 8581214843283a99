package workers

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"ciss.dev/schemas"
	"ciss.dev/workers/internal/gitsrc"
	"ciss.dev/workers/internal/summary"
)

// GitConfig turns on sast jobs: how the worker fetches repositories and
// signs the tags of commits that pass the tenant policy. Credentials come
// only from here, never from a job.
type GitConfig struct {
	// AllowSchemes are the repository URL schemes fetched: https (default),
	// http, file.
	AllowSchemes []string
	// CredentialsFile is a git-credential-store file (one
	// https://user:token@host line per host) for fetch and push.
	CredentialsFile string
	// SigningKey is the SSH private key that signs tags (git's
	// gpg.format=ssh). Empty: sast runs and reports, but pushes no tags.
	SigningKey string
	// TagPrefix is prepended to the 12-digit short commit; default
	// "ciss/sast/".
	TagPrefix string
	// TaggerEmail is the tagger's email, the principal allowed-signers
	// files name; default "ciss@localhost".
	TaggerEmail string
	// Policy decides which commits are tagged (the same file as image
	// signing: severity threshold, allowlisted rule ids).
	Policy Policy
}

// sastState is the worker's git client.
type sastState struct {
	client *gitsrc.Client
	keyID  string
	home   string
}

// initGit prepares the git client, if sast is configured.
func (w *Worker) initGit(ctx context.Context) error {
	g := w.cfg.Git
	if g == nil {
		return nil
	}
	home, err := os.MkdirTemp(w.cfg.WorkDir, "ciss-git-home-")
	if err != nil {
		return fmt.Errorf("workers: git home: %w", err)
	}
	c, err := gitsrc.New(gitsrc.Config{AllowSchemes: g.AllowSchemes, CredentialsFile: g.CredentialsFile,
		SigningKey: g.SigningKey, TagPrefix: g.TagPrefix, TaggerName: "CISS", TaggerEmail: g.TaggerEmail}, home)
	if err != nil {
		return fmt.Errorf("workers: %w", err)
	}
	st := &sastState{client: c, home: home}
	if g.SigningKey != "" {
		if st.keyID, err = gitsrc.KeyFingerprint(ctx, g.SigningKey); err != nil {
			return fmt.Errorf("workers: git signing key: %w", err)
		}
	}
	w.git = st
	w.log.Info("sast enabled", "schemes", cmp.Or(strings.Join(g.AllowSchemes, ","), "https"), "tag_signing_key", st.keyID)
	return nil
}

// runSourceTool fetches the task's repository at its commit and runs the
// tool on it, answering from the result cache when allowed.
func (w *Worker) runSourceTool(ctx context.Context, tool Tool, task schemas.Task) (res schemas.TaskResult, ver ToolVersion, err error) {
	if w.git == nil {
		return res, ver, fmt.Errorf("%w: this worker has no git configuration for sast jobs (-git-*)", ErrPermanent)
	}
	if err := w.git.client.CheckURL(task.Target.Repo); err != nil || !schemas.ValidCommit(task.Target.Commit) {
		return res, ver, fmt.Errorf("%w: %w: %w", ErrPermanent, ErrInvalidTarget, cmp.Or(err, errors.New("commit is not a full SHA")))
	}
	ver, err = tool.Version(ctx)
	if err != nil {
		return res, ver, fmt.Errorf("tool version: %w", err)
	}
	res.ToolVersion = ver.Tool
	key := CacheKey(tool.Name(), ver, "git:"+task.Target.Repo+"@"+task.Target.Commit, task.Params)
	if task.Cache {
		if r, ok := w.cached(ctx, key); ok {
			res.Result, res.CacheHit = r, true
			w.met.cacheHits.Add(1)
			return res, ver, nil
		}
	}
	dir, err := os.MkdirTemp(w.cfg.WorkDir, "ciss-task-")
	if err != nil {
		return res, ver, fmt.Errorf("work dir: %w", err)
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "source")
	if err := w.git.client.Fetch(ctx, task.Target.Repo, task.Target.Commit, src); err != nil {
		if errors.Is(err, gitsrc.ErrNotFound) || errors.Is(err, gitsrc.ErrRefused) {
			return res, ver, fmt.Errorf("%w: %w: %w", ErrPermanent, ErrTargetNotFound, err)
		}
		return res, ver, fmt.Errorf("fetch source: %w", err)
	}
	timeout := time.Duration(task.Timeout)
	if timeout <= 0 {
		timeout = w.cfg.TaskTimeout
	}
	out, err := tool.Run(ctx, Input{Task: task, Source: src, Timeout: timeout}, dir)
	if err != nil {
		return res, ver, err
	}
	result := &schemas.Result{Summary: out.Summary, DBVersion: ver.Data}
	for _, f := range out.Reports {
		rep, err := w.storeReport(ctx, f)
		if err != nil {
			return res, ver, err
		}
		result.Reports = append(result.Reports, rep)
	}
	if out.FindingsSource != "" {
		rep, err := w.storeFindings(ctx, tool.Name(), out)
		if err != nil {
			return res, ver, err
		}
		result.Findings = &rep
	}
	res.Result = result
	if b, err := json.Marshal(result); err == nil {
		if _, err := w.cache.Put(ctx, key, b); err != nil {
			w.log.Warn("result cache write failed", "err", err)
		}
	}
	return res, ver, nil
}

// tagSource applies the tenant policy to a sast result's SARIF report and,
// when the commit passes and a tag-signing key is configured, pushes the
// signed tag ciss/sast/<short-sha> whose message carries the report digest
// and the job id. A failing commit gets no tag; the decision says why.
func (w *Worker) tagSource(ctx context.Context, task schemas.Task, r *schemas.Result) error {
	rep, ok := r.ReportFor(schemas.FormatSARIF)
	if !ok {
		return fmt.Errorf("%w: sast job without a sarif report", ErrPermanent)
	}
	b, err := w.reports.GetBytes(ctx, rep.Object)
	if err != nil {
		return fmt.Errorf("read report for policy: %w", err)
	}
	if err := schemas.VerifyReport(rep, b); err != nil {
		return fmt.Errorf("%w: stored report: %w", ErrPermanent, err)
	}
	d, err := w.cfg.Git.Policy.EvaluateSARIF(task.Tenant, b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	r.Policy = &d
	if !d.Passed {
		w.met.policyFailed.Inc()
		return nil
	}
	if w.git == nil || w.cfg.Git.SigningKey == "" {
		d.Reason += "; no tag-signing key is configured, so no tag was pushed"
		r.Policy = &d
		return nil
	}
	t0 := time.Now()
	dir, err := os.MkdirTemp(w.cfg.WorkDir, "ciss-tag-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := w.git.client.Fetch(ctx, task.Target.Repo, task.Target.Commit, dir); err != nil {
		return fmt.Errorf("fetch for tag: %w", err)
	}
	tag, err := w.git.client.TagAndPush(ctx, dir, task.Target.Commit, TagMessage(task, rep, d), "report: "+rep.Digest)
	if err != nil {
		if errors.Is(err, gitsrc.ErrTagConflict) {
			return fmt.Errorf("%w: %w", ErrPermanent, err)
		}
		return fmt.Errorf("push tag: %w", err)
	}
	w.met.signSeconds.WithLabelValues("git-tag").Observe(time.Since(t0).Seconds())
	r.GitTag = &schemas.GitTag{Name: tag.Name, Object: tag.Object, Commit: tag.Commit, Repo: task.Target.Repo,
		KeyID: w.git.keyID, Existing: tag.Existing}
	return nil
}

// TagMessage is the message of a sast tag: what passed, under which policy,
// the digest of the SARIF report that says so, and the job. A re-run whose
// report has the same digest accepts the existing tag (its job line names
// the job that first vouched); another digest is a conflict.
func TagMessage(task schemas.Task, rep schemas.Report, d schemas.PolicyDecision) string {
	return fmt.Sprintf("CISS SAST passed for %s\n\ncommit: %s\nreport: %s\nreport-media-type: %s\njob: %s\ntenant: %s\npolicy: no findings at or above %s\n",
		task.Target.Commit[:12], task.Target.Commit, rep.Digest, rep.MediaType, task.JobID, task.Tenant, d.Threshold)
}

// EvaluateSARIF applies tenant's rules to a SARIF 2.1.0 report (sast). A
// finding's severity comes from its rule's security-severity score or its
// level (summary.SARIFFindings documents the mapping); allowlist entries
// are rule ids (G404, aws-access-key-id). A report that cannot be read
// fails closed.
func (p Policy) EvaluateSARIF(tenant string, report []byte) (schemas.PolicyDecision, error) {
	fs, err := summary.SARIFFindings(report)
	if err != nil {
		return schemas.PolicyDecision{}, fmt.Errorf("policy: %w", err)
	}
	tp := p.For(tenant)
	th := tp.threshold()
	floor := severityRank[th]
	var blocking []string
	for _, f := range fs {
		if severityRank[f.Severity] < floor || slices.Contains(tp.Allow, f.RuleID) {
			continue
		}
		id := f.RuleID
		if f.Location != "" {
			id += "@" + f.Location
		}
		if !slices.Contains(blocking, id) {
			blocking = append(blocking, id)
		}
	}
	slices.Sort(blocking)
	d := schemas.PolicyDecision{Passed: len(blocking) == 0, Threshold: th}
	if d.Passed {
		d.Reason = fmt.Sprintf("no findings at or above %s outside the allowlist", th)
		return d, nil
	}
	d.Reason = fmt.Sprintf("%d finding(s) at or above %s outside the allowlist; the commit is not tagged", len(blocking), th)
	d.Blocking = blocking[:min(len(blocking), maxBlocking)]
	return d, nil
}
