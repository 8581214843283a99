package workers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"ciss.dev/schemas"
	"ciss.dev/workers/internal/runner"
	"ciss.dev/workers/internal/summary"
	"ciss.dev/workers/internal/tekton"
)

// CatalogConfig says where the tool catalog is and what the local backend
// maps it onto.
type CatalogConfig struct {
	// Dir holds Tekton Tasks and CISS tool manifests (deploy/tekton). Required.
	Dir string
	// Images maps step image globs to local binaries ("aquasec/trivy:*" →
	// /usr/local/bin/trivy). A step whose image is unmapped fails clearly.
	Images map[string]string
	// Workspaces maps the names manifests bind with `from:` to directories.
	Workspaces map[string]string
	// VersionTTL is how long a version Task's results are reused; default 30s.
	VersionTTL time.Duration
	// MaxOutput bounds captured output per step; default 1 MiB.
	MaxOutput int
	// Cluster, when set, runs the Tasks as TaskRuns on a cluster instead of
	// locally; Images and Workspaces are then unused.
	Cluster *ClusterBackend
	// Only, when not empty, names the catalog's tools this worker serves;
	// the others are left to other workers. A name not in the catalog is an
	// error.
	Only []string
}

// LoadTools reads and validates the catalog and returns one Tool per manifest,
// run by the local backend, or by cfg.Cluster when set. Every `from:` workspace
// must be configured (a directory, or a PersistentVolumeClaim on a cluster).
func LoadTools(ctx context.Context, cfg CatalogConfig) ([]Tool, error) {
	cat, err := tekton.Load(ctx, cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("workers: %w", err)
	}
	var backend tekton.Backend = &tekton.Local{Runner: &runner.Local{Images: cfg.Images, MaxOutput: cfg.MaxOutput}}
	if cfg.Cluster != nil {
		backend = cfg.Cluster.backend
	}
	for _, name := range cfg.Only {
		if _, ok := cat.Tool(name); !ok {
			return nil, fmt.Errorf("workers: tool %q is not in the catalog %s", name, cfg.Dir)
		}
	}
	var tools []Tool
	for _, m := range cat.Tools {
		if len(cfg.Only) > 0 && !slices.Contains(cfg.Only, m.Name) {
			continue
		}
		for name, ws := range m.Workspaces {
			if ws.From == "" {
				continue
			}
			if cfg.Cluster != nil {
				if _, ok := cfg.Cluster.claims[ws.From]; !ok {
					return nil, fmt.Errorf("workers: tool %s: workspace %s needs a PersistentVolumeClaim for %q (-cluster-claims %s=CLAIM)", m.Name, name, ws.From, ws.From)
				}
				continue
			}
			dir, ok := cfg.Workspaces[ws.From]
			if !ok {
				return nil, fmt.Errorf("workers: tool %s: workspace %s needs directory %q (-workspace %s=DIR)", m.Name, name, ws.From, ws.From)
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return nil, fmt.Errorf("workers: tool %s: workspace %q: %s is not a directory", m.Name, ws.From, dir)
			}
		}
		tools = append(tools, &TaskTool{
			m: m, cat: cat, backend: backend, dirs: cfg.Workspaces,
			ttl: cmp.Or(cfg.VersionTTL, 30*time.Second),
		})
	}
	if len(tools) == 0 {
		return nil, fmt.Errorf("workers: no tool manifests in %s", cfg.Dir)
	}
	return tools, nil
}

// TaskTool is a tool defined by a Tekton Task and a CISS tool manifest.
type TaskTool struct {
	m       tekton.Manifest
	cat     *tekton.Catalog
	backend tekton.Backend
	dirs    map[string]string
	ttl     time.Duration

	mu        sync.Mutex
	version   ToolVersion
	versionAt time.Time
}

var _ Tool = (*TaskTool)(nil)

// Name is the manifest's tool name.
func (t *TaskTool) Name() string { return t.m.Name }

// JobTypes are the job types the tool serves.
func (t *TaskTool) JobTypes() []string { return t.m.JobTypes }

// Version runs the version Task (reused for the configured TTL).
func (t *TaskTool) Version(ctx context.Context) (ToolVersion, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.versionAt.IsZero() && time.Since(t.versionAt) < t.ttl {
		return t.version, nil
	}
	dir, err := os.MkdirTemp("", "ciss-version-")
	if err != nil {
		return ToolVersion{}, err
	}
	defer os.RemoveAll(dir)
	out, err := t.backend.RunTask(ctx, tekton.Run{
		Task: t.cat.Tasks[t.m.VersionTask], Name: t.m.Name + "-version", Dir: dir,
		Workspaces: t.workspaces("", ""), Timeout: time.Minute, Sources: t.sources(),
		Owner: tekton.Owner{Tool: t.m.Name},
	})
	if err != nil {
		return ToolVersion{}, fmt.Errorf("%s version: %w", t.m.Name, err)
	}
	v := ToolVersion{
		Tool: strings.TrimSpace(out.Results[tekton.ResultToolVersion]),
		Data: strings.TrimSpace(out.Results[tekton.ResultDataVersion]),
	}
	if v.Tool == "" || v.Data == "" {
		return ToolVersion{}, fmt.Errorf("%s version: Task %s left %s or %s empty", t.m.Name, t.m.VersionTask, tekton.ResultToolVersion, tekton.ResultDataVersion)
	}
	t.version, t.versionAt = v, time.Now()
	return v, nil
}

// sources maps the Task's worker-provided workspaces to their data names.
func (t *TaskTool) sources() map[string]string {
	src := map[string]string{}
	for name, b := range t.m.Workspaces {
		if b.From != "" {
			src[name] = b.From
		}
	}
	return src
}

// output is the name of the manifest's output workspace and its report paths.
func (t *TaskTool) output() (string, []string) {
	var name string
	for n, b := range t.m.Workspaces {
		if b.Output {
			name = n
		}
	}
	var paths []string
	for _, r := range t.m.Reports {
		paths = append(paths, r.Path)
	}
	return name, paths
}

func (t *TaskTool) workspaces(output, source string) map[string]string {
	ws := map[string]string{}
	for name, b := range t.m.Workspaces {
		switch {
		case b.Output && output != "":
			ws[name] = output
		case b.From != "":
			ws[name] = t.dirs[b.From]
		case b.Source && source != "":
			ws[name] = source
		}
	}
	return ws
}

var jobParamRE = regexp.MustCompile(`\$\(job\.params\.([a-z][a-z0-9_.-]*)\)`)

// Run runs the Task for one job and returns its reports.
func (t *TaskTool) Run(ctx context.Context, in Input, dir string) (Output, error) {
	params := map[string]string{}
	for name, tmpl := range t.m.Params {
		var missing string
		v := jobParamRE.ReplaceAllStringFunc(tmpl, func(m string) string {
			k := jobParamRE.FindStringSubmatch(m)[1]
			val, ok := in.Task.Params[k]
			if !ok {
				missing = k
			}
			return val
		})
		if missing != "" {
			return Output{}, fmt.Errorf("%w: %w: job param %q is required by tool %s", ErrPermanent, ErrInvalidTarget, missing, t.m.Name)
		}
		v = strings.NewReplacer("$(target.image)", in.Image, "$(job.id)", in.Task.JobID).Replace(v)
		params[name] = v
	}
	out := filepath.Join(dir, "out")
	scratch := filepath.Join(dir, "run")
	for _, d := range []string{out, scratch} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return Output{}, err
		}
	}
	outName, reports := t.output()
	_, err := t.backend.RunTask(ctx, tekton.Run{
		Task: t.cat.Tasks[t.m.Task], Name: in.Task.ID, Params: params,
		Workspaces: t.workspaces(out, in.Source), Timeout: in.Timeout, Dir: scratch, Nice: shadowNice(in.Task),
		Output: outName, Reports: reports, Sources: t.sources(),
		Owner: tekton.Owner{Tenant: in.Task.Tenant, Job: in.Task.JobID, Task: in.Task.ID, Tool: t.m.Name},
	})
	if err != nil {
		return Output{}, classifyRun(err)
	}
	for _, r := range t.m.Reports {
		if len(r.Merge) == 0 {
			continue
		}
		if err := mergeSARIFFiles(out, r); err != nil {
			return Output{}, fmt.Errorf("%s: %w", t.m.Name, err)
		}
	}
	var o Output
	for _, r := range t.m.Reports {
		path := filepath.Join(out, r.Path)
		b, err := os.ReadFile(path)
		if err != nil {
			return Output{}, fmt.Errorf("%s: report %s: %w", t.m.Name, r.Format, err)
		}
		switch r.Summary {
		case tekton.SummaryTrivyJSON:
			o.Summary, err = summary.TrivyJSON(b)
		case tekton.SummarySARIF:
			o.Summary, err = summary.SARIF(b)
		case tekton.SummaryCycloneDX:
			o.Summary, err = summary.CycloneDX(b)
		}
		if err == nil && r.Summary != "" {
			o.FindingsSource = r.Summary
			o.Findings, err = summary.Findings(r.Summary, b)
		}
		if err != nil {
			return Output{}, fmt.Errorf("%s: %s report: %w", t.m.Name, r.Format, err)
		}
		o.Reports = append(o.Reports, OutputFile{Format: r.Format, MediaType: r.MediaType, Path: path})
	}
	return o, nil
}

// registryErrors are registry error codes (OCI distribution spec) and HTTP
// status lines that blame the image, as tools print them. Plain "denied" or
// "not found" would also match local faults, which must be retried.
var registryErrors = []string{"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "UNAUTHORIZED", "DENIED",
	"404 Not Found", "401 Unauthorized", "403 Forbidden"}

// classifyRun maps a failed run to the worker's error kinds.
func classifyRun(err error) error {
	var se *runner.StepError
	switch {
	case errors.As(err, &se):
		for _, code := range registryErrors {
			if strings.Contains(se.Stderr, code) {
				return fmt.Errorf("%w: %w: %w", ErrPermanent, ErrTargetNotFound, err)
			}
		}
		return err
	case errors.Is(err, runner.ErrTimeout):
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	case errors.Is(err, runner.ErrUnmappedImage), errors.Is(err, tekton.ErrUnresolved), errors.Is(err, tekton.ErrRunInvalid):
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	return err
}

// mergeSARIFFiles writes the merged SARIF log of r.Merge to r.Path.
func mergeSARIFFiles(out string, r tekton.Report) error {
	logs := make([][]byte, 0, len(r.Merge))
	for _, p := range r.Merge {
		b, err := os.ReadFile(filepath.Join(out, p))
		if err != nil {
			return fmt.Errorf("report %s: part %s: %w", r.Format, p, err)
		}
		logs = append(logs, b)
	}
	b, err := summary.MergeSARIF(logs...)
	if err != nil {
		return fmt.Errorf("report %s: merge: %w", r.Format, err)
	}
	return os.WriteFile(filepath.Join(out, r.Path), b, 0o600)
}

// ShadowNice is the CPU niceness shadow tasks (tool trials) run at: on a
// busy host the candidate yields the CPU to the authoritative scans.
const ShadowNice = 10

func shadowNice(t schemas.Task) int {
	if t.Role == schemas.RoleShadow {
		return ShadowNice
	}
	return 0
}
