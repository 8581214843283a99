package workers_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/workers"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestPinDigest(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, ref, want string }{
		{"tag", "registry.example.com/app:1.2", "registry.example.com/app@" + digestB},
		{"no tag", "registry.example.com/app", "registry.example.com/app@" + digestB},
		{"digest replaced", "registry.example.com/app@" + digestA, "registry.example.com/app@" + digestB},
		{"tag and digest", "registry.example.com/app:1.2@" + digestA, "registry.example.com/app@" + digestB},
		{"port, no tag", "localhost:5000/app", "localhost:5000/app@" + digestB},
		{"port and tag", "localhost:5000/app:v1", "localhost:5000/app@" + digestB},
		{"port, tag and digest", "127.0.0.1:5000/team/app:v1@" + digestA, "127.0.0.1:5000/team/app@" + digestB},
		{"nested repo path", "registry.example.com:443/org/team/sub/app:2025.01.14-rc.1", "registry.example.com:443/org/team/sub/app@" + digestB},
		{"nested, no tag", "ghcr.io/org/team/app", "ghcr.io/org/team/app@" + digestB},
		{"already pinned to it", "ghcr.io/org/app@" + digestB, "ghcr.io/org/app@" + digestB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, workers.PinDigest(tt.ref, digestB))
		})
	}
}

func TestCacheKey(t *testing.T) {
	t.Parallel()
	v := workers.ToolVersion{Tool: "0.69.0", Data: "2@2025-01-14T06:00:00Z"}
	params := map[string]string{"severity": "HIGH,CRITICAL", "ignore-unfixed": "true", "scanners": "vuln", "a": "", "z": "1"}
	key := workers.CacheKey("trivy", v, digestA, params)
	require.Len(t, key, 64, "hex sha256")
	require.NotContains(t, key, ".", "a KV key must not add levels")

	// Stable, and independent of the order the params were built in.
	for range 20 {
		shuffled := map[string]string{}
		for _, k := range []string{"z", "scanners", "a", "severity", "ignore-unfixed"} {
			shuffled[k] = params[k]
		}
		require.Equal(t, key, workers.CacheKey("trivy", v, digestA, shuffled))
	}
	require.Equal(t, workers.CacheKey("trivy", v, digestA, nil), workers.CacheKey("trivy", v, digestA, map[string]string{}))

	different := map[string]string{
		"tool name":         workers.CacheKey("grype", v, digestA, params),
		"tool version":      workers.CacheKey("trivy", workers.ToolVersion{Tool: "0.70.0", Data: v.Data}, digestA, params),
		"db version":        workers.CacheKey("trivy", workers.ToolVersion{Tool: v.Tool, Data: "2@2025-01-15T06:00:00Z"}, digestA, params),
		"digest":            workers.CacheKey("trivy", v, digestB, params),
		"param value":       workers.CacheKey("trivy", v, digestA, with(params, "severity", "CRITICAL")),
		"param added":       workers.CacheKey("trivy", v, digestA, with(params, "extra", "")),
		"no params":         workers.CacheKey("trivy", v, digestA, nil),
		"field boundary":    workers.CacheKey("trivy0.69.0", workers.ToolVersion{Tool: "", Data: v.Data}, digestA, params),
		"data in tool":      workers.CacheKey("trivy", workers.ToolVersion{Tool: v.Tool + v.Data}, digestA, params),
		"key/value swapped": workers.CacheKey("trivy", v, digestA, map[string]string{"HIGH,CRITICAL": "severity", "ignore-unfixed": "true", "scanners": "vuln", "a": "", "z": "1"}),
	}
	seen := map[string]string{key: "base"}
	for name, k := range different {
		if prev, dup := seen[k]; dup {
			t.Errorf("%s: same key as %s", name, prev)
		}
		seen[k] = name
	}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for key, val := range m {
		if key != k {
			out[key] = val
		}
	}
	return out
}

// TestCacheKeyParamEncodingReliesOnValidation: CacheKey writes params as
// "k=v\x00" without escaping, which is unambiguous only because the API
// refuses "=" in keys and control characters in values. Should either rule
// change, {a: "x\x00b=c"} and {a: "x", b: "c"} would share a cache entry.
func TestCacheKeyParamEncodingReliesOnValidation(t *testing.T) {
	t.Parallel()
	v := workers.ToolVersion{Tool: "0.69.0", Data: "db"}
	require.Equal(t,
		workers.CacheKey("trivy", v, digestA, map[string]string{"a": "x\x00b=c"}),
		workers.CacheKey("trivy", v, digestA, map[string]string{"a": "x", "b": "c"}),
		"CacheKey now separates params unambiguously; drop this test's caveat")
	for _, params := range []map[string]string{{"a": "x\x00b=c"}, {"a=b": "c"}} {
		req := schemas.JobRequest{Type: schemas.JobTypeImageScan, Target: schemas.Target{Image: "registry.example.com/app:1"}, Params: params}
		require.Error(t, req.Validate(), "the API accepts params %q that make cache keys ambiguous", params)
	}
}

// stubTool only satisfies workers.Tool for Config validation.
type stubTool string

func (s stubTool) Name() string { return string(s) }
func (stubTool) Version(context.Context) (workers.ToolVersion, error) {
	return workers.ToolVersion{}, nil
}
func (stubTool) Run(context.Context, workers.Input, string) (workers.Output, error) {
	return workers.Output{}, nil
}

func TestNewConfigErrors(t *testing.T) {
	t.Parallel()
	tools := []workers.Tool{stubTool("fake")}
	tests := []struct {
		name string
		cfg  workers.Config
		want string
	}{
		{"no tools", workers.Config{}, "Config.Tools"},
		{"invalid tool name", workers.Config{Tools: []workers.Tool{stubTool("Fake.Tool")}}, "Config.Tools[0]"},
		{"wildcard tool name", workers.Config{Tools: []workers.Tool{stubTool(">")}}, "Config.Tools[0]"},
		{"duplicate tool", workers.Config{Tools: []workers.Tool{stubTool("fake"), stubTool("fake")}}, "Config.Tools[1]"},
		{"unknown lane", workers.Config{Tools: tools, Concurrency: map[schemas.Lane]int{"realtime": 2}}, "Config.Concurrency"},
		{"empty lane", workers.Config{Tools: tools, Concurrency: map[schemas.Lane]int{"": 2}}, "Config.Concurrency"},
		{"negative concurrency", workers.Config{Tools: tools, Concurrency: map[schemas.Lane]int{schemas.LaneBulk: -1}}, "Config.Concurrency"},
		{"AckWait below 3s", workers.Config{Tools: tools, AckWait: 2 * time.Second}, "Config.AckWait"},
		{"AckWait negative", workers.Config{Tools: tools, AckWait: -time.Second}, "Config.AckWait"},
		{"MaxDeliver negative", workers.Config{Tools: tools, MaxDeliver: -1}, "Config.MaxDeliver"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, err := workers.New(tt.cfg)
			require.ErrorContains(t, err, tt.want)
			require.True(t, strings.HasPrefix(err.Error(), "workers: "), err.Error())
			require.Nil(t, w)
		})
	}
	for name, cfg := range map[string]workers.Config{
		"defaults":             {Tools: tools},
		"AckWait exactly 3s":   {Tools: tools, AckWait: 3 * time.Second},
		"zero lane is default": {Tools: tools, Concurrency: map[schemas.Lane]int{schemas.LaneBulk: 0, schemas.LaneInteractive: 8}},
	} {
		w, err := workers.New(cfg)
		require.NoError(t, err, name)
		require.NotNil(t, w, name)
		require.Empty(t, w.AdminAddr(), name)
	}
}

func TestConsumerName(t *testing.T) {
	t.Parallel()
	require.Equal(t, "worker-trivy-interactive", workers.ConsumerName("trivy", schemas.LaneInteractive))
	require.Equal(t, "worker-trivy-bulk", workers.ConsumerName("trivy", schemas.LaneBulk))
}
