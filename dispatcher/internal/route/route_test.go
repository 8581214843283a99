package route

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"ciss.dev/schemas"
)

const validRouting = `version: 1
tools:
  - name: trivy
    job_types: [image-scan]
  - name: grype-2
    job_types: [image-scan]
routes:
  - job_type: image-scan
    primary: trivy
`

func TestParseValid(t *testing.T) {
	t.Parallel()
	tab, err := Parse([]byte(validRouting))
	require.NoError(t, err)
	d, err := tab.Route(schemas.JobTypeImageScan)
	require.NoError(t, err)
	require.Equal(t, Decision{Primary: "trivy"}, d)

	_, err = tab.Route("dast")
	require.ErrorIs(t, err, ErrNoRoute)
	require.ErrorContains(t, err, `"dast"`)
}

// TestParseShippedRouting keeps deploy/routing.yaml loadable.
func TestParseShippedRouting(t *testing.T) {
	t.Parallel()
	tab, err := Load(filepath.Join("..", "..", "..", "deploy", "routing.yaml"))
	require.NoError(t, err)
	d, err := tab.Route(schemas.JobTypeImageScan)
	require.NoError(t, err)
	require.Equal(t, "trivy", d.Primary)
}

func TestParseNoRoutes(t *testing.T) {
	t.Parallel()
	// Declaring tools without routes is valid: every job type then has no route.
	tab, err := Parse([]byte("version: 1\ntools:\n  - name: trivy\n    job_types: [image-scan]\n"))
	require.NoError(t, err)
	_, err = tab.Route(schemas.JobTypeImageScan)
	require.ErrorIs(t, err, ErrNoRoute)
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	tool := func(name string) string { return "  - name: " + name + "\n    job_types: [image-scan]\n" }
	route := func(primary string) string { return "  - job_type: image-scan\n    primary: " + primary + "\n" }
	tests := []struct {
		name string
		in   string
		want string // substring of the error
	}{
		{"version 3", "version: 3\ntools:\n" + tool("trivy") + "routes:\n" + route("trivy"), "version: got 3"},
		{"version missing", "tools:\n" + tool("trivy"), "version: got 0"},
		{"unknown top-level field", validRouting + "shadows: []\n", "shadows"},
		{"unknown tool field", "version: 1\ntools:\n  - name: trivy\n    jobtypes: [image-scan]\n", "jobtypes"},
		{"unknown route field", "version: 1\ntools:\n" + tool("trivy") + "routes:\n" + route("trivy") + "    shadow: grype\n", "shadow"},
		{"duplicate yaml key", "version: 1\nversion: 1\n", "version"},
		{"not yaml", "version: [1\n", "routing"},
		{"wrong type", "version: one\n", "routing"},
		{"unknown tool", "version: 1\ntools:\n" + tool("trivy") + "routes:\n" + route("grype"), `unknown tool "grype"`},
		{"route without tools", "version: 1\nroutes:\n" + route("trivy"), `unknown tool "trivy"`},
		{"tool not serving job type", "version: 1\ntools:\n  - name: trivy\n    job_types: []\nroutes:\n" + route("trivy"), `does not serve "image-scan"`},
		{"duplicate tool", "version: 1\ntools:\n" + tool("trivy") + tool("trivy"), `tool "trivy" declared twice`},
		{"duplicate route", "version: 1\ntools:\n" + tool("trivy") + tool("grype") + "routes:\n" + route("trivy") + route("grype"), `routed twice`},
		{"unknown job type on tool", "version: 1\ntools:\n  - name: trivy\n    job_types: [dast]\n", `unknown job type "dast"`},
		{"unknown job type on route", "version: 1\ntools:\n" + tool("trivy") + "routes:\n  - job_type: dast\n    primary: trivy\n", `unknown job type "dast"`},
		{"empty job type on route", "version: 1\ntools:\n" + tool("trivy") + "routes:\n  - primary: trivy\n", `unknown job type ""`},
		{"tool name upper case", "version: 1\ntools:\n" + tool("Trivy"), `"Trivy"`},
		{"tool name with dot", "version: 1\ntools:\n" + tool("trivy.v2"), `"trivy.v2"`},
		{"tool name wildcard", "version: 1\ntools:\n" + tool(`">"`), `">"`},
		{"tool name star", "version: 1\ntools:\n" + tool(`"*"`), `"*"`},
		{"tool name empty", "version: 1\ntools:\n  - job_types: [image-scan]\n", `name ""`},
		{"tool name with space", "version: 1\ntools:\n" + tool(`"my tool"`), `"my tool"`},
		{"tool name leading digit", "version: 1\ntools:\n" + tool(`"1trivy"`), `"1trivy"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tab, err := Parse([]byte(tt.in))
			require.Error(t, err)
			require.Nil(t, tab)
			require.ErrorContains(t, err, "routing: ")
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, "missing.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)

	p := filepath.Join(dir, "routing.yaml")
	require.NoError(t, os.WriteFile(p, []byte(validRouting), 0o600))
	tab, err := Load(p)
	require.NoError(t, err)
	d, err := tab.Route(schemas.JobTypeImageScan)
	require.NoError(t, err)
	require.Equal(t, "trivy", d.Primary)
}

// TestRouterSwapConcurrent routes from many goroutines while the table is
// swapped; run with -race. Every answer comes from one of the two tables.
func TestRouterSwapConcurrent(t *testing.T) {
	t.Parallel()
	a, err := Parse([]byte(validRouting))
	require.NoError(t, err)
	b, err := Parse([]byte("version: 1\ntools:\n  - name: grype-2\n    job_types: [image-scan]\nroutes:\n  - job_type: image-scan\n    primary: grype-2\n"))
	require.NoError(t, err)
	empty, err := Parse([]byte("version: 1\n"))
	require.NoError(t, err)

	r := NewRouter(a)
	const readers, swaps = 8, 500
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, readers)
	for range readers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				d, err := r.Route(schemas.JobTypeImageScan)
				if errors.Is(err, ErrNoRoute) {
					continue
				}
				if err != nil || (d.Primary != "trivy" && d.Primary != "grype-2") {
					errs <- errors.Join(err, errors.New("unexpected decision "+d.Primary))
					return
				}
			}
		})
	}
	for i := range swaps {
		r.Swap([]*Table{a, b, empty}[i%3])
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	r.Swap(b)
	d, err := r.Route(schemas.JobTypeImageScan)
	require.NoError(t, err)
	require.Equal(t, "grype-2", d.Primary)
}

// FuzzParse checks that Parse never panics and that an accepted table only
// ever routes a known job type to a declared tool that serves it.
func FuzzParse(f *testing.F) {
	f.Add([]byte(validRouting))
	f.Add([]byte("version: 1\n"))
	f.Add([]byte("version: 1\ntools:\n  - name: a\n    job_types: [image-scan]\nroutes:\n  - job_type: image-scan\n    primary: a\n"))
	f.Add([]byte(`{"version":1,"tools":[{"name":"x","job_types":["image-scan"]}],"routes":[{"job_type":"image-scan","primary":"x"}]}`))
	f.Add([]byte("version: 1\ntools:\n  - name: \">\"\n"))
	f.Add([]byte("version: 1\nroutes:\n  - job_type: image-scan\n    primary: ghost\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, err := Parse(b)
		if err != nil {
			if tab != nil {
				t.Fatalf("Parse returned a table with error %v", err)
			}
			return
		}
		var file File
		if err := yaml.Unmarshal(b, &file); err != nil {
			t.Fatalf("Parse accepted what yaml.Unmarshal rejects: %v", err)
		}
		if file.Version != 1 && file.Version != 2 {
			t.Fatalf("accepted version %d", file.Version)
		}
		for jt, ds := range tab.routes {
			for _, d := range ds {
				if !slices.Contains(schemas.KnownJobTypes(), jt) {
					t.Fatalf("routes unknown job type %q", jt)
				}
				if !schemas.ValidToken(d.Primary) {
					t.Fatalf("routes %q to invalid tool name %q", jt, d.Primary)
				}
				i := slices.IndexFunc(file.Tools, func(tl Tool) bool { return tl.Name == d.Primary })
				if i < 0 {
					t.Fatalf("routes %q to undeclared tool %q", jt, d.Primary)
				}
				if !slices.Contains(file.Tools[i].JobTypes, jt) {
					t.Fatalf("routes %q to tool %q that does not serve it", jt, d.Primary)
				}
				if d.Canary != nil && (d.Canary.Percent < 0 || d.Canary.Percent > 100) {
					t.Fatalf("accepted canary percent %v", d.Canary.Percent)
				}
			}
		}
		for _, jt := range schemas.KnownJobTypes() {
			d, err := tab.Route(jt)
			if err != nil {
				if !errors.Is(err, ErrNoRoute) {
					t.Fatalf("Route(%q) = %v", jt, err)
				}
				continue
			}
			if d.Primary == "" {
				t.Fatalf("Route(%q) has no primary", jt)
			}
		}
	})
}
