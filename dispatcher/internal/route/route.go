// Package route decides which tool runs a job. Routing is data: a YAML file maps
// each job type to its primary tool, so swapping a scanner is a config change.
package route

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"sigs.k8s.io/yaml"

	"ciss.dev/schemas"
)

// ErrNoRoute means no route exists for a job type.
var ErrNoRoute = errors.New("no route for job type")

// File is the routing file's format.
//
//	version: 1
//	tools:
//	  - name: trivy
//	    job_types: [image-scan]
//	routes:
//	  - job_type: image-scan
//	    primary: trivy
type File struct {
	Version int     `json:"version"`
	Tools   []Tool  `json:"tools"`
	Routes  []Entry `json:"routes"`
}

// Tool declares a tool implementation and the job types it can serve.
type Tool struct {
	Name     string   `json:"name"`
	JobTypes []string `json:"job_types"`
}

// Entry routes one job type.
type Entry struct {
	JobType string `json:"job_type"`
	// Primary is the tool whose result is the job's result.
	Primary string `json:"primary"`
}

// Decision is where a job goes.
type Decision struct {
	// Primary is the authoritative tool.
	Primary string
}

// Table is a validated routing table.
type Table struct {
	routes map[string]Decision
}

// Parse decodes and validates a routing file strictly: unknown fields, unknown
// tools, tools routed to job types they do not declare and duplicate routes are
// errors.
func Parse(b []byte) (*Table, error) {
	var f File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("routing: %w", err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("routing: version: got %d, want 1", f.Version)
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
	tab := &Table{routes: map[string]Decision{}}
	for i, r := range f.Routes {
		if !slices.Contains(schemas.KnownJobTypes(), r.JobType) {
			return nil, fmt.Errorf("routing: routes[%d].job_type: unknown job type %q", i, r.JobType)
		}
		if _, dup := tab.routes[r.JobType]; dup {
			return nil, fmt.Errorf("routing: routes[%d]: job type %q routed twice", i, r.JobType)
		}
		t, ok := tools[r.Primary]
		if !ok {
			return nil, fmt.Errorf("routing: routes[%d].primary: unknown tool %q", i, r.Primary)
		}
		if !slices.Contains(t.JobTypes, r.JobType) {
			return nil, fmt.Errorf("routing: routes[%d].primary: tool %q does not serve %q", i, r.Primary, r.JobType)
		}
		tab.routes[r.JobType] = Decision{Primary: r.Primary}
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

// Route returns the decision for a job type, or ErrNoRoute.
func (t *Table) Route(jobType string) (Decision, error) {
	d, ok := t.routes[jobType]
	if !ok {
		return Decision{}, fmt.Errorf("%w %q", ErrNoRoute, jobType)
	}
	return d, nil
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
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.tab.Route(jobType)
}

// Swap replaces the table.
func (r *Router) Swap(tab *Table) {
	r.mu.Lock()
	r.tab = tab
	r.mu.Unlock()
}
