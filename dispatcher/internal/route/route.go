// Package route decides which tool runs a job. Routing is data: a YAML file maps
// each job type to its primary tool, so swapping a scanner is a config change.
package route

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"ciss.dev/schemas"
)

// ErrNoRoute means no route exists for a job type.
var ErrNoRoute = errors.New("no route for job type")

// File is the routing file's format. Version 1 maps each job type to a
// primary; version 2 adds matchers, canaries, shadows and trial settings.
//
//	version: 2
//	tools:
//	  - {name: trivy, job_types: [image-scan]}
//	  - {name: trivy-next, job_types: [image-scan]}
//	routes:
//	  - job_type: image-scan
//	    tenant: payments                 # optional matchers, all must match;
//	    repository: "github.com/acme/*"  # the first matching route wins,
//	    label: {team: web}               # so put specific routes first
//	    primary: trivy
//	    canary: {tool: trivy-next, percent: 5, trial: next}
//	    shadows:
//	      - {tool: trivy-next, trial: next, timeout: 5m}
//	trials:
//	  - name: next
//	    aliases: {GHSA-xxxx-xxxx-xxxx: CVE-2024-1234}
//	    ignore: [{id: "CVE-2023-*", package: busybox, path: "*.go"}]
//	    noise_trial: trivy-aa
//	variance:
//	  alert_severity: HIGH
type File struct {
	Version  int             `json:"version"`
	Tools    []Tool          `json:"tools"`
	Routes   []Entry         `json:"routes"`
	Trials   []TrialConfig   `json:"trials,omitempty"`
	Variance *VarianceConfig `json:"variance,omitempty"`
}

// Tool declares a tool implementation and the job types it can serve.
type Tool struct {
	Name     string   `json:"name"`
	JobTypes []string `json:"job_types"`
}

// Entry routes one job type (for the jobs its matchers select).
type Entry struct {
	JobType string `json:"job_type"`
	// Tenant, Repository (a path.Match glob over the job's git repository
	// host/path, or its image repository) and Label (job params that must
	// have these values) select jobs; empty selects all. Version 2 only.
	Tenant     string            `json:"tenant,omitempty"`
	Repository string            `json:"repository,omitempty"`
	Label      map[string]string `json:"label,omitempty"`
	// Primary is the tool whose result is the job's result.
	Primary string `json:"primary"`
	// Canary sends a share of the jobs to another tool, whose result is then
	// the job's result.
	Canary *Canary `json:"canary,omitempty"`
	// Shadows run next to the authoritative tool; their results are only
	// compared.
	Shadows []Shadow `json:"shadows,omitempty"`
}

// Canary is a share of jobs whose authoritative result comes from Tool.
type Canary struct {
	Tool string `json:"tool"`
	// Percent of jobs, 0 to 100 (two decimals), chosen by hashing the job's
	// tenant and id, so every delivery of a job lands on the same side.
	Percent float64 `json:"percent"`
	// Trial names the canary in logs and metrics; default "<primary>-canary-<tool>".
	Trial string `json:"trial,omitempty"`
}

// Shadow is a candidate run on the same input as the authoritative tool.
type Shadow struct {
	Tool string `json:"tool"`
	// Trial names the comparison; default "<primary>-vs-<tool>".
	Trial string `json:"trial,omitempty"`
	// Timeout bounds one run of the shadow; default the worker's.
	Timeout schemas.Duration `json:"timeout,omitempty"`
}

// TrialConfig holds a trial's comparison settings.
type TrialConfig struct {
	Name string `json:"name"`
	// Aliases map one id to another before comparing (GHSA → CVE), both
	// ways: the candidate's and the primary's ids are mapped alike.
	Aliases map[string]string `json:"aliases,omitempty"`
	// Ignore lists differences not to count as disagreement (counted as
	// ignored).
	Ignore []IgnoreRule `json:"ignore,omitempty"`
	// Match lists the finding fields that identify a finding: id, package,
	// version, file, line; default all.
	Match []string `json:"match,omitempty"`
	// NoiseTrial names an A/A trial (the primary against itself) whose
	// disagreement is this trial's noise floor.
	NoiseTrial string `json:"noise_trial,omitempty"`
	// Baseline marks this trial as an A/A trial.
	Baseline bool `json:"baseline,omitempty"`
}

// IgnoreRule matches differing findings (Scientist's ignore): every set
// field must match; ID and Path are path.Match globs.
type IgnoreRule struct {
	ID      string `json:"id,omitempty"`
	Package string `json:"package,omitempty"`
	Path    string `json:"path,omitempty"`
}

// VarianceConfig configures variance tracking of repeated scans.
type VarianceConfig struct {
	// AlertSeverity is the lowest severity of a new finding that raises an
	// alert; default HIGH. "NONE" disables alerts.
	AlertSeverity string `json:"alert_severity,omitempty"`
	// Disabled turns variance tracking off.
	Disabled bool `json:"disabled,omitempty"`
}

// Decision is where a job goes.
type Decision struct {
	// Primary is the authoritative tool (the canary's tool on the canary side).
	Primary string
	// Canary names the canary trial when the job fell on the canary side.
	Canary string
	// Shadows are the candidates to run next to it.
	Shadows []ShadowDecision
}

// ShadowDecision is one shadow to run.
type ShadowDecision struct {
	Tool, Trial string
	Timeout     time.Duration
}

// Table is a validated routing table.
type Table struct {
	routes   map[string][]Entry
	trials   map[string]TrialConfig
	variance VarianceConfig
	names    []string
	digest   string
	tools    map[string][]string
}

// Tools maps each declared tool to the job types it serves.
func (t *Table) Tools() map[string][]string { return t.tools }

// Trials returns the trial names the table declares, sorted.
func (t *Table) Trials() []string { return t.names }

// Trial returns a trial's settings; unknown names get the zero settings.
func (t *Table) Trial(name string) TrialConfig {
	if c, ok := t.trials[name]; ok {
		return c
	}
	return TrialConfig{Name: name}
}

// Variance returns the variance settings, defaults applied.
func (t *Table) Variance() VarianceConfig { return t.variance }

// Digest is "sha256:" and the hex digest of the file the table came from.
func (t *Table) Digest() string { return t.digest }

var matchFields = []string{"id", "package", "version", "file", "line"}

// Parse decodes and validates a routing file strictly: unknown fields, unknown
// tools, tools routed to job types they do not declare, duplicate routes, bad
// percentages and bad globs are errors.
func Parse(b []byte) (*Table, error) {
	var f File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("routing: %w", err)
	}
	if f.Version != 1 && f.Version != 2 {
		return nil, fmt.Errorf("routing: version: got %d, want 1 or 2", f.Version)
	}
	if f.Version == 1 && (len(f.Trials) > 0 || f.Variance != nil) {
		return nil, errors.New("routing: trials and variance need version: 2")
	}
	tools := map[string]Tool{}
	for i, t := range f.Tools {
		if !schemas.ValidToken(t.Name) {
			return nil, fmt.Errorf("routing: tools[%d].name %q: must be lower-case letters, digits and dashes", i, t.Name)
		}
		if _, dup := tools[t.Name]; dup {
			return nil, fmt.Errorf("routing: tools[%d]: tool %q declared twice", i, t.Name)
		}
		for _, jt := range t.JobTypes {
			if !slices.Contains(schemas.KnownJobTypes(), jt) {
				return nil, fmt.Errorf("routing: tools[%d] (%s): unknown job type %q", i, t.Name, jt)
			}
		}
		tools[t.Name] = t
	}
	serves := func(field, tool, jobType string) error {
		t, ok := tools[tool]
		if !ok {
			return fmt.Errorf("%s: unknown tool %q", field, tool)
		}
		if !slices.Contains(t.JobTypes, jobType) {
			return fmt.Errorf("%s: tool %q does not serve %q", field, tool, jobType)
		}
		return nil
	}
	sum := sha256.Sum256(b)
	tab := &Table{routes: map[string][]Entry{}, trials: map[string]TrialConfig{}, digest: "sha256:" + hex.EncodeToString(sum[:]), tools: map[string][]string{}}
	for name, t := range tools {
		tab.tools[name] = t.JobTypes
	}
	for i, c := range f.Trials {
		if !schemas.ValidToken(c.Name) {
			return nil, fmt.Errorf("routing: trials[%d].name %q: must be lower-case letters, digits and dashes", i, c.Name)
		}
		if _, dup := tab.trials[c.Name]; dup {
			return nil, fmt.Errorf("routing: trials[%d]: trial %q declared twice", i, c.Name)
		}
		for j, r := range c.Ignore {
			if r == (IgnoreRule{}) {
				return nil, fmt.Errorf("routing: trials[%d].ignore[%d]: empty rule would ignore every difference", i, j)
			}
			for _, g := range []string{r.ID, r.Path} {
				if _, err := path.Match(g, ""); err != nil {
					return nil, fmt.Errorf("routing: trials[%d].ignore[%d]: bad glob %q: %w", i, j, g, err)
				}
			}
		}
		for _, m := range c.Match {
			if !slices.Contains(matchFields, m) {
				return nil, fmt.Errorf("routing: trials[%d].match: unknown field %q (want %v)", i, m, matchFields)
			}
		}
		if len(c.Match) > 0 && !slices.Contains(c.Match, "id") {
			return nil, fmt.Errorf("routing: trials[%d].match: must include id", i)
		}
		tab.trials[c.Name] = c
	}
	for _, c := range f.Trials {
		if c.NoiseTrial != "" {
			if n, ok := tab.trials[c.NoiseTrial]; !ok || !n.Baseline {
				return nil, fmt.Errorf("routing: trial %q: noise_trial %q must be a declared trial with baseline: true", c.Name, c.NoiseTrial)
			}
		}
	}
	used := map[string]string{} // trial → job type
	useTrial := func(field, trial, jobType string) error {
		if !schemas.ValidToken(trial) {
			return fmt.Errorf("%s: trial %q: must be lower-case letters, digits and dashes", field, trial)
		}
		if jt, ok := used[trial]; ok && jt != jobType {
			return fmt.Errorf("%s: trial %q is used for job types %q and %q", field, trial, jt, jobType)
		}
		used[trial] = jobType
		return nil
	}
	for i, r := range f.Routes {
		field := fmt.Sprintf("routing: routes[%d]", i)
		if !slices.Contains(schemas.KnownJobTypes(), r.JobType) {
			return nil, fmt.Errorf("%s.job_type: unknown job type %q", field, r.JobType)
		}
		matched := r.Tenant != "" || r.Repository != "" || len(r.Label) > 0
		if f.Version == 1 && (matched || r.Canary != nil || len(r.Shadows) > 0) {
			return nil, fmt.Errorf("%s: tenant, repository, label, canary and shadows need version: 2", field)
		}
		if r.Tenant != "" && !schemas.ValidToken(r.Tenant) {
			return nil, fmt.Errorf("%s.tenant %q: not a tenant name", field, r.Tenant)
		}
		if _, err := path.Match(r.Repository, ""); err != nil {
			return nil, fmt.Errorf("%s.repository: bad glob %q: %w", field, r.Repository, err)
		}
		for _, prev := range tab.routes[r.JobType] {
			if prev.Tenant == r.Tenant && prev.Repository == r.Repository && maps.Equal(prev.Label, r.Label) {
				return nil, fmt.Errorf("%s: job type %q routed twice for the same tenant, repository and label", field, r.JobType)
			}
		}
		if err := serves(field+".primary", r.Primary, r.JobType); err != nil {
			return nil, err
		}
		if c := r.Canary; c != nil {
			if err := serves(field+".canary.tool", c.Tool, r.JobType); err != nil {
				return nil, err
			}
			if c.Tool == r.Primary {
				return nil, fmt.Errorf("%s.canary.tool: %q is the primary", field, c.Tool)
			}
			if math.IsNaN(c.Percent) || c.Percent < 0 || c.Percent > 100 {
				return nil, fmt.Errorf("%s.canary.percent: %v is not between 0 and 100", field, c.Percent)
			}
			c.Trial = cmp.Or(c.Trial, r.Primary+"-canary-"+c.Tool)
			if err := useTrial(field+".canary", c.Trial, r.JobType); err != nil {
				return nil, err
			}
		}
		seen := map[string]bool{}
		for j, sh := range r.Shadows {
			sf := fmt.Sprintf("%s.shadows[%d]", field, j)
			if err := serves(sf+".tool", sh.Tool, r.JobType); err != nil {
				return nil, err
			}
			if sh.Tool == r.Primary || (r.Canary != nil && sh.Tool == r.Canary.Tool) {
				return nil, fmt.Errorf("%s.tool: %q already runs as the primary or canary (for an A/A trial declare a second tool name for the same Task)", sf, sh.Tool)
			}
			if seen[sh.Tool] {
				return nil, fmt.Errorf("%s.tool: %q shadows twice", sf, sh.Tool)
			}
			seen[sh.Tool] = true
			if sh.Timeout < 0 {
				return nil, fmt.Errorf("%s.timeout: must not be negative", sf)
			}
			r.Shadows[j].Trial = cmp.Or(sh.Trial, r.Primary+"-vs-"+sh.Tool)
			if err := useTrial(sf, r.Shadows[j].Trial, r.JobType); err != nil {
				return nil, err
			}
		}
		tab.routes[r.JobType] = append(tab.routes[r.JobType], r)
	}
	for name := range tab.trials {
		if _, ok := used[name]; !ok {
			return nil, fmt.Errorf("routing: trials: %q is declared but no route uses it", name)
		}
	}
	tab.names = slices.Sorted(maps.Keys(used))
	if f.Variance != nil {
		tab.variance = *f.Variance
	}
	tab.variance.AlertSeverity = strings.ToUpper(cmp.Or(tab.variance.AlertSeverity, string(schemas.SeverityHigh)))
	if a := tab.variance.AlertSeverity; a != "NONE" && schemas.Severity(a).Rank() == 0 {
		return nil, fmt.Errorf("routing: variance.alert_severity %q: want CRITICAL, HIGH, MEDIUM, LOW or NONE", a)
	}
	return tab, nil
}

// Load reads and parses a routing file.
func Load(path string) (*Table, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("routing: %w", err)
	}
	return Parse(b)
}

// Route returns the decision for a job type, or ErrNoRoute. Only routes
// without matchers apply, and no job falls on a canary side.
func (t *Table) Route(jobType string) (Decision, error) {
	return t.RouteJob(schemas.Job{Type: jobType})
}

// RouteJob returns the decision for a job: the first route of its type whose
// matchers all match, or ErrNoRoute.
func (t *Table) RouteJob(j schemas.Job) (Decision, error) {
	for _, r := range t.routes[j.Type] {
		if !matches(r, j) {
			continue
		}
		d := Decision{Primary: r.Primary}
		if r.Canary != nil && j.ID != "" && CanarySide(j.Tenant, j.ID, r.Canary.Percent) {
			d.Primary, d.Canary = r.Canary.Tool, r.Canary.Trial
		}
		for _, sh := range r.Shadows {
			if sh.Tool == d.Primary {
				continue
			}
			d.Shadows = append(d.Shadows, ShadowDecision{Tool: sh.Tool, Trial: sh.Trial, Timeout: time.Duration(sh.Timeout)})
		}
		return d, nil
	}
	return Decision{}, fmt.Errorf("%w %q", ErrNoRoute, j.Type)
}

func matches(r Entry, j schemas.Job) bool {
	if r.Tenant != "" && r.Tenant != j.Tenant {
		return false
	}
	if r.Repository != "" {
		if ok, _ := path.Match(r.Repository, Repository(j)); !ok {
			return false
		}
	}
	for k, v := range r.Label {
		if got, ok := j.Params[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Repository is what a route's repository glob matches: the git repository
// the job came from (host/path), else the image repository without tag or
// digest.
func Repository(j schemas.Job) string {
	if p := j.Provenance; p != nil && p.Repo != "" {
		return strings.TrimSuffix(p.Host+"/"+p.Repo, "/")
	}
	return ImageName(j.Target.Image)
}

// ImageName strips the tag and digest from an image reference.
func ImageName(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

// CanarySide reports whether a job falls on the canary side of percent: the
// first 8 bytes of sha256(tenant "/" id), modulo 10000, below percent×100.
// It depends only on the job, so every delivery and retry of a job agrees.
func CanarySide(tenant, id string, percent float64) bool {
	sum := sha256.Sum256([]byte(tenant + "/" + id))
	return float64(binary.BigEndian.Uint64(sum[:8])%10000) < math.Round(percent*100)
}

// Router holds the current table and swaps it atomically on reload.
type Router struct {
	mu  sync.RWMutex
	tab *Table
}

// NewRouter returns a router serving tab.
func NewRouter(tab *Table) *Router { return &Router{tab: tab} }

// Route routes with the current table.
func (r *Router) Route(jobType string) (Decision, error) {
	return r.Table().Route(jobType)
}

// RouteJob routes a job with the current table.
func (r *Router) RouteJob(j schemas.Job) (Decision, error) {
	return r.Table().RouteJob(j)
}

// Table returns the current table.
func (r *Router) Table() *Table {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.tab
}

// Swap replaces the table.
func (r *Router) Swap(tab *Table) {
	r.mu.Lock()
	r.tab = tab
	r.mu.Unlock()
}
