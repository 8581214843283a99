package summary_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/workers/internal/summary"
)

const bom16 = `{"bomFormat":"CycloneDX","specVersion":"1.6","version":1,
 "metadata":{"component":{"type":"container","name":"127.0.0.1:5000/demo/clean"}},
 "components":[{"bom-ref":"pkg:apk/alpine/busybox@1.36.1-r20","type":"library","name":"busybox"},
               {"bom-ref":"pkg:apk/alpine/expat@2.6.4-r0","type":"library","name":"expat"}],
 "vulnerabilities":[{"id":"CVE-1","ratings":[{"severity":"low"},{"severity":"critical"}]},
                    {"id":"CVE-2","ratings":[{"severity":"medium"}]},{"id":"CVE-3"}]}`

func TestCycloneDX(t *testing.T) {
	t.Parallel()
	s, err := summary.CycloneDX([]byte(bom16))
	require.NoError(t, err)
	require.Equal(t, schemas.Summary{Critical: 1, Medium: 1, Unknown: 1}, s)

	for name, doc := range map[string]string{
		"not json":      `{`,
		"not cyclonedx": `{"bomFormat":"SPDX","specVersion":"1.6","metadata":{"component":{"name":"x"}}}`,
		"old spec":      `{"bomFormat":"CycloneDX","specVersion":"1.4","metadata":{"component":{"name":"x"}}}`,
		"no subject":    `{"bomFormat":"CycloneDX","specVersion":"1.6"}`,
		"nameless":      `{"bomFormat":"CycloneDX","specVersion":"1.6","metadata":{"component":{"name":"x"}},"components":[{"type":"library"}]}`,
		"dup bom-ref":   `{"bomFormat":"CycloneDX","specVersion":"1.6","metadata":{"component":{"name":"x"}},"components":[{"bom-ref":"a","name":"a"},{"bom-ref":"a","name":"b"}]}`,
	} {
		_, err := summary.CycloneDX([]byte(doc))
		require.ErrorIs(t, err, summary.ErrNotCycloneDX, name)
	}
}

func FuzzCycloneDX(f *testing.F) {
	f.Add([]byte(bom16))
	f.Add([]byte(`{"bomFormat":"CycloneDX","specVersion":"1.5","metadata":{"component":{"name":"x"}},"vulnerabilities":[{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := summary.CycloneDX(b)
		if err == nil && (s.Critical < 0 || s.Total() < 0) {
			t.Fatalf("negative counts %+v", s)
		}
	})
}
