package route

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

const v2Tools = `version: 2
tools:
  - {name: trivy, job_types: [image-scan]}
  - {name: trivy-next, job_types: [image-scan]}
  - {name: trivy-replica, job_types: [image-scan]}
  - {name: grype, job_types: [image-scan]}
`

func TestParseV2(t *testing.T) {
	t.Parallel()
	tab, err := Parse([]byte(v2Tools + `routes:
  - job_type: image-scan
    tenant: payments
    primary: grype
  - job_type: image-scan
    repository: "github.com/acme/*"
    label: {team: web}
    primary: trivy
    shadows: [{tool: grype}]
  - job_type: image-scan
    primary: trivy
    canary: {tool: trivy-next, percent: 25, trial: next}
    shadows:
      - {tool: trivy-replica, trial: trivy-aa, timeout: 30s}
      - {tool: grype, trial: grype}
trials:
  - {name: trivy-aa, baseline: true}
  - name: grype
    aliases: {GHSA-aaaa-bbbb-cccc: CVE-2024-1}
    ignore: [{id: "CVE-2023-*", package: busybox}]
    match: [id, package]
    noise_trial: trivy-aa
variance: {alert_severity: critical}
`))
	require.NoError(t, err)
	require.Equal(t, []string{"grype", "next", "trivy-aa", "trivy-vs-grype"}, tab.Trials())
	require.Equal(t, "CRITICAL", tab.Variance().AlertSeverity)
	require.Equal(t, "trivy-aa", tab.Trial("grype").NoiseTrial)

	job := func(tenant, id, image string, params map[string]string, prov *schemas.Provenance) schemas.Job {
		return schemas.Job{Tenant: tenant, ID: id, Type: schemas.JobTypeImageScan, Target: schemas.Target{Image: image}, Params: params, Provenance: prov}
	}
	const id = "0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d"
	tests := []struct {
		name string
		job  schemas.Job
		want Decision
	}{
		{"tenant route", job("payments", id, "r/x:1", nil, nil), Decision{Primary: "grype"}},
		{"repository and label", job("web", id, "r/x:1", map[string]string{"team": "web"},
			&schemas.Provenance{Host: "github.com", Repo: "acme/shop"}),
			Decision{Primary: "trivy", Shadows: []ShadowDecision{{Tool: "grype", Trial: "trivy-vs-grype"}}}},
		{"label mismatch falls through", job("web", id, "r/x:1", map[string]string{"team": "api"},
			&schemas.Provenance{Host: "github.com", Repo: "acme/shop"}), defaultDecision(id)},
		{"image repository glob", job("web", id, "github.com/acme/shop:1", map[string]string{"team": "web"}, nil),
			Decision{Primary: "trivy", Shadows: []ShadowDecision{{Tool: "grype", Trial: "trivy-vs-grype"}}}},
		{"default", job("web", id, "r/x:1", nil, nil), defaultDecision(id)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := tab.RouteJob(tt.job)
			require.NoError(t, err)
			require.Equal(t, tt.want, d)
		})
	}
}

func defaultDecision(id string) Decision {
	d := Decision{Primary: "trivy", Shadows: []ShadowDecision{
		{Tool: "trivy-replica", Trial: "trivy-aa", Timeout: 30 * time.Second}, {Tool: "grype", Trial: "grype"}}}
	if CanarySide("web", id, 25) {
		d.Primary, d.Canary = "trivy-next", "next"
	}
	return d
}

func TestParseV2Rejects(t *testing.T) {
	t.Parallel()
	route := func(extra string) string {
		return v2Tools + "routes:\n  - job_type: image-scan\n    primary: trivy\n" + extra
	}
	tests := []struct{ name, in, want string }{
		{"percent over 100", route("    canary: {tool: trivy-next, percent: 150}\n"), "canary.percent: 150 is not between 0 and 100"},
		{"percent negative", route("    canary: {tool: trivy-next, percent: -1}\n"), "canary.percent: -1"},
		{"percent not a number", route("    canary: {tool: trivy-next, percent: lots}\n"), "percent"},
		{"canary unknown tool", route("    canary: {tool: ghost, percent: 5}\n"), `canary.tool: unknown tool "ghost"`},
		{"canary is primary", route("    canary: {tool: trivy, percent: 5}\n"), "is the primary"},
		{"shadow unknown tool", route("    shadows: [{tool: ghost}]\n"), `shadows[0].tool: unknown tool "ghost"`},
		{"shadow is primary", route("    shadows: [{tool: trivy}]\n"), "already runs as the primary"},
		{"shadow twice", route("    shadows: [{tool: grype}, {tool: grype, trial: other}]\n"), "shadows twice"},
		{"shadow bad timeout", route("    shadows: [{tool: grype, timeout: soon}]\n"), `invalid duration "soon"`},
		{"shadow bad trial", route("    shadows: [{tool: grype, trial: Bad.Name}]\n"), `trial "Bad.Name"`},
		{"bad repository glob", route("    repository: \"[\"\n"), "bad glob"},
		{"bad tenant", route("    tenant: \"a.b\"\n"), "not a tenant name"},
		{"unknown route field", route("    shadow: [grype]\n"), "shadow"},
		{"trial unused", route("trials: [{name: lost}]\n"), `"lost" is declared but no route uses it`},
		{"trial twice", route("    shadows: [{tool: grype, trial: g}]\ntrials: [{name: g}, {name: g}]\n"), "declared twice"},
		{"empty ignore", route("    shadows: [{tool: grype, trial: g}]\ntrials: [{name: g, ignore: [{}]}]\n"), "empty rule"},
		{"bad ignore glob", route("    shadows: [{tool: grype, trial: g}]\ntrials: [{name: g, ignore: [{id: \"[\"}]}]\n"), "bad glob"},
		{"bad match", route("    shadows: [{tool: grype, trial: g}]\ntrials: [{name: g, match: [id, cvss]}]\n"), `unknown field "cvss"`},
		{"match without id", route("    shadows: [{tool: grype, trial: g}]\ntrials: [{name: g, match: [package]}]\n"), "must include id"},
		{"noise not baseline", route("    shadows: [{tool: grype, trial: g}, {tool: trivy-replica, trial: aa}]\ntrials: [{name: g, noise_trial: aa}, {name: aa}]\n"), "baseline: true"},
		{"bad alert severity", route("variance: {alert_severity: SEVERE}\n"), "alert_severity"},
		{"v2 fields in v1", strings.Replace(route("    shadows: [{tool: grype}]\n"), "version: 2", "version: 1", 1), "need version: 2"},
		{"trials in v1", strings.Replace(route("trials: []\nvariance: {}\n"), "version: 2", "version: 1", 1), "need version: 2"},
		{"same matchers twice", route("  - job_type: image-scan\n    primary: grype\n"), "routed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tab, err := Parse([]byte(tt.in))
			require.Error(t, err)
			require.Nil(t, tab)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// TestCanaryDeterministic: a job always lands on the same side, the share
// of jobs on the canary side follows the percentage, and 0 and 100 are exact.
func TestCanaryDeterministic(t *testing.T) {
	t.Parallel()
	for _, pct := range []float64{0, 1, 10, 25, 50, 99.5, 100} {
		t.Run(fmt.Sprint(pct), func(t *testing.T) {
			t.Parallel()
			const n = 20000
			on := 0
			for i := range n {
				id := fmt.Sprintf("0193a5c2-7f4e-7b21-9c3d-%012x", i)
				side := CanarySide("payments", id, pct)
				require.Equal(t, side, CanarySide("payments", id, pct), "same job, same side")
				if side {
					on++
				}
			}
			switch pct {
			case 0:
				require.Zero(t, on)
			case 100:
				require.Equal(t, n, on)
			default:
				got := float64(on) * 100 / n
				require.InDelta(t, pct, got, 1.0, "share of %v%% canary", pct)
			}
		})
	}
	// Raising the percentage only moves jobs onto the canary side.
	for i := range 1000 {
		id := fmt.Sprintf("0193a5c2-7f4e-7b21-9c3d-%012x", i)
		if CanarySide("t", id, 10) {
			require.True(t, CanarySide("t", id, 20))
		}
	}
}

func TestImageName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"r.example:5000/a/b:1.2":          "r.example:5000/a/b",
		"r.example:5000/a/b@sha256:abc":   "r.example:5000/a/b",
		"r.example:5000/a/b:1@sha256:abc": "r.example:5000/a/b",
		"alpine":                          "alpine",
		"127.0.0.1:5000/vulnerable":       "127.0.0.1:5000/vulnerable",
	} {
		require.Equal(t, want, ImageName(in), in)
	}
}
