// Package tekton loads CISS's tool catalog: Tekton v1 Task definitions and the
// CISS tool manifests that map jobs onto them (deploy/tekton/), validated with
// Tekton's own types, and runs Tasks locally with Tekton's substitution
// semantics. A tool is added by dropping a Task and a manifest into the
// directory, with no code change.
package tekton

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"sigs.k8s.io/yaml"

	"ciss.dev/schemas"
)

// Manifest is a CISS tool manifest (apiVersion ciss.dev/v1, kind Tool).
type Manifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Name is the tool's name in routing and subjects.
	Name string `json:"name"`
	// Task is the Task that does the work; VersionTask the one whose results
	// tool-version and data-version identify the tool build and its data.
	Task        string `json:"task"`
	VersionTask string `json:"versionTask"`
	// JobTypes are the job types the tool serves.
	JobTypes []string `json:"jobTypes"`
	// Params maps Task params to values: literals, or references
	// $(target.image) (pinned by digest), $(job.id), $(job.params.NAME).
	Params map[string]string `json:"params"`
	// Workspaces binds every Task workspace to an output directory (fresh per
	// run; reports are read from it) or a directory the worker provides.
	Workspaces map[string]Workspace `json:"workspaces"`
	// Reports are files in the output workspace.
	Reports []Report `json:"reports"`
	// File is where the manifest was read from (not part of the format).
	File string `json:"-"`
}

// Workspace binds a Task workspace.
type Workspace struct {
	// Output makes it a fresh directory per run, holding the reports.
	Output bool `json:"output,omitempty"`
	// From names a directory the worker provides (-workspace NAME=DIR).
	From string `json:"from,omitempty"`
	// Source binds the job's source tree: the repository fetched at the
	// job's commit (sast), fresh per run. Only for source job types.
	Source bool `json:"source,omitempty"`
}

// Report is one report file a run writes.
type Report struct {
	Format    string `json:"format"`
	MediaType string `json:"mediaType"`
	// Path is relative to the output workspace.
	Path string `json:"path"`
	// Summary names the parser that reads the severity summary from this
	// report: "trivy-json", "sarif" or "cyclonedx". Exactly one report has one.
	Summary string `json:"summary,omitempty"`
	// Merge lists SARIF 2.1.0 logs in the output workspace whose runs the
	// worker concatenates, in order, into Path (format sarif only): one
	// report from several tools.
	Merge []string `json:"merge,omitempty"`
}

// Summary parsers a manifest may name.
const (
	SummaryTrivyJSON = "trivy-json"
	SummarySARIF     = "sarif"
	// SummaryCycloneDX validates a CycloneDX 1.5+ BOM and counts its vulnerabilities.
	SummaryCycloneDX = "cyclonedx"
)

// Results a version Task must declare.
const (
	ResultToolVersion = "tool-version"
	ResultDataVersion = "data-version"
)

// Catalog is a validated set of Tasks and tool manifests.
type Catalog struct {
	Tasks map[string]*v1.Task
	Tools []Manifest
}

// ErrInvalid marks a catalog that failed validation.
var ErrInvalid = errors.New("invalid tool catalog")

var (
	paramRefRE = regexp.MustCompile(`\$\((target\.image|job\.id|job\.params\.[a-z][a-z0-9_.-]*)\)`)
	anyRefRE   = regexp.MustCompile(`\$\([^)]*\)`)
)

// Load reads every *.yaml file in dir: Tekton Tasks (kind Task) and CISS tool
// manifests (kind Tool); other kinds are errors. Tasks are defaulted and
// validated with Tekton's own validation, then checked for what the local
// backend needs (an image and a script or command on every step); manifests
// are decoded strictly and checked against their Tasks.
func Load(ctx context.Context, dir string) (*Catalog, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	c := &Catalog{Tasks: map[string]*v1.Task{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(b, &head); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, f, err)
		}
		if bytes.Contains(b, []byte("\n---")) {
			return nil, fmt.Errorf("%w: %s: one document per file", ErrInvalid, f)
		}
		switch {
		case head.APIVersion == "tekton.dev/v1" && head.Kind == "Task":
			t, err := parseTask(ctx, b)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, f, err)
			}
			if _, dup := c.Tasks[t.Name]; dup {
				return nil, fmt.Errorf("%w: %s: Task %q defined twice", ErrInvalid, f, t.Name)
			}
			c.Tasks[t.Name] = t
		case head.APIVersion == "ciss.dev/v1" && head.Kind == "Tool":
			var m Manifest
			if err := yaml.UnmarshalStrict(b, &m); err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, f, err)
			}
			m.File = f
			c.Tools = append(c.Tools, m)
		default:
			return nil, fmt.Errorf("%w: %s: unknown kind %s/%s (want tekton.dev/v1 Task or ciss.dev/v1 Tool)", ErrInvalid, f, head.APIVersion, head.Kind)
		}
	}
	seen := map[string]bool{}
	for _, m := range c.Tools {
		if seen[m.Name] {
			return nil, fmt.Errorf("%w: %s: tool %q defined twice", ErrInvalid, m.File, m.Name)
		}
		seen[m.Name] = true
		if err := c.check(m); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, m.File, err)
		}
	}
	return c, nil
}

// ParseTask decodes a Task strictly, applies Tekton's defaults and validation,
// and checks what the local backend needs.
func parseTask(ctx context.Context, b []byte) (*v1.Task, error) {
	var t v1.Task
	if err := yaml.UnmarshalStrict(b, &t); err != nil {
		return nil, err
	}
	t.SetDefaults(ctx)
	if err := t.Validate(ctx); err != nil {
		return nil, fmt.Errorf("Task %q: %w", t.Name, err)
	}
	for _, s := range t.Spec.Steps {
		if s.Image == "" {
			return nil, fmt.Errorf("Task %q step %q: an image is required", t.Name, s.Name)
		}
		if s.Script == "" && len(s.Command) == 0 {
			// Otherwise the entrypoint must be looked up in a registry.
			return nil, fmt.Errorf("Task %q step %q: needs a script or a command", t.Name, s.Name)
		}
	}
	if len(t.Spec.Sidecars) > 0 || len(t.Spec.Volumes) > 0 {
		return nil, fmt.Errorf("Task %q: sidecars and volumes are not supported by CISS; use workspaces", t.Name)
	}
	return &t, nil
}

func (c *Catalog) check(m Manifest) error {
	if m.APIVersion != "ciss.dev/v1" || m.Kind != "Tool" {
		return fmt.Errorf("apiVersion/kind must be ciss.dev/v1 Tool")
	}
	if !schemas.ValidToken(m.Name) {
		return fmt.Errorf("name %q: lower-case letters, digits and dashes", m.Name)
	}
	if len(m.JobTypes) == 0 {
		return errors.New("jobTypes: at least one")
	}
	for _, jt := range m.JobTypes {
		if !slices.Contains(schemas.KnownJobTypes(), jt) {
			return fmt.Errorf("jobTypes: unknown job type %q", jt)
		}
	}
	task, ok := c.Tasks[m.Task]
	if !ok {
		return fmt.Errorf("task: no Task %q in the directory", m.Task)
	}
	declared := map[string]bool{}
	for _, p := range task.Spec.Params {
		declared[p.Name] = true
		if _, set := m.Params[p.Name]; !set && p.Default == nil {
			return fmt.Errorf("params: Task %q param %q has no default and no value", task.Name, p.Name)
		}
	}
	for name, v := range m.Params {
		if !declared[name] {
			return fmt.Errorf("params: Task %q has no param %q", task.Name, name)
		}
		if rest := paramRefRE.ReplaceAllString(v, ""); anyRefRE.MatchString(rest) {
			return fmt.Errorf("params.%s: unknown reference in %q (use $(target.image), $(job.id), $(job.params.NAME))", name, v)
		}
	}
	outputs := 0
	for _, ws := range task.Spec.Workspaces {
		b, ok := m.Workspaces[ws.Name]
		switch {
		case !ok && !ws.Optional:
			return fmt.Errorf("workspaces: Task %q workspace %q is not bound", task.Name, ws.Name)
		case ok && btoi(b.Output)+btoi(b.From != "")+btoi(b.Source) != 1:
			return fmt.Errorf("workspaces.%s: exactly one of output, from or source", ws.Name)
		case ok && b.Source && !slices.Contains(m.JobTypes, schemas.JobTypeSAST):
			return fmt.Errorf("workspaces.%s: source is only for source job types (sast)", ws.Name)
		case ok && b.Output:
			outputs++
		}
	}
	for name := range m.Workspaces {
		if !slices.ContainsFunc(task.Spec.Workspaces, func(w v1.WorkspaceDeclaration) bool { return w.Name == name }) {
			return fmt.Errorf("workspaces: Task %q has no workspace %q", task.Name, name)
		}
	}
	if outputs != 1 {
		return fmt.Errorf("workspaces: exactly one output workspace is needed, got %d", outputs)
	}
	summaries := 0
	formats := map[string]bool{}
	for i, r := range m.Reports {
		switch {
		case r.Format == "" || r.MediaType == "" || r.Path == "":
			return fmt.Errorf("reports[%d]: format, mediaType and path are required", i)
		case formats[r.Format]:
			return fmt.Errorf("reports[%d]: format %q twice", i, r.Format)
		case filepath.IsAbs(r.Path) || strings.Contains(filepath.Clean(r.Path), ".."):
			return fmt.Errorf("reports[%d].path %q: must stay inside the output workspace", i, r.Path)
		}
		formats[r.Format] = true
		if len(r.Merge) > 0 && r.Format != "sarif" {
			return fmt.Errorf("reports[%d].merge: only sarif reports are merged", i)
		}
		for _, p := range r.Merge {
			if p == "" || filepath.IsAbs(p) || strings.Contains(filepath.Clean(p), "..") || filepath.Clean(p) == filepath.Clean(r.Path) {
				return fmt.Errorf("reports[%d].merge %q: must be another file inside the output workspace", i, p)
			}
		}
		switch r.Summary {
		case "":
		case SummaryTrivyJSON, SummarySARIF, SummaryCycloneDX:
			summaries++
		default:
			return fmt.Errorf("reports[%d].summary: unknown parser %q (trivy-json, sarif, cyclonedx)", i, r.Summary)
		}
	}
	if summaries != 1 {
		return fmt.Errorf("reports: exactly one report must name a summary parser, got %d", summaries)
	}
	vt, ok := c.Tasks[m.VersionTask]
	if !ok {
		return fmt.Errorf("versionTask: no Task %q in the directory", m.VersionTask)
	}
	for _, want := range []string{ResultToolVersion, ResultDataVersion} {
		if !slices.ContainsFunc(vt.Spec.Results, func(r v1.TaskResult) bool { return r.Name == want }) {
			return fmt.Errorf("versionTask: Task %q must declare result %q", vt.Name, want)
		}
	}
	for _, p := range vt.Spec.Params {
		if p.Default == nil {
			return fmt.Errorf("versionTask: Task %q param %q has no default (a version Task gets no params)", vt.Name, p.Name)
		}
	}
	for _, ws := range vt.Spec.Workspaces {
		if b, ok := m.Workspaces[ws.Name]; (!ok || b.From == "") && !ws.Optional {
			return fmt.Errorf("versionTask: workspace %q must be bound with from", ws.Name)
		}
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Tool returns the manifest of a tool.
func (c *Catalog) Tool(name string) (Manifest, bool) {
	i := slices.IndexFunc(c.Tools, func(m Manifest) bool { return m.Name == name })
	if i < 0 {
		return Manifest{}, false
	}
	return c.Tools[i], true
}
