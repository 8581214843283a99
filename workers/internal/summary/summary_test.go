package summary

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

func TestSARIF(t *testing.T) {
	t.Parallel()
	log := `{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"x","rules":[
	  {"id":"CVE-1","properties":{"security-severity":"9.8"}},
	  {"id":"CVE-2","properties":{"security-severity":"7.5"}},
	  {"id":"CVE-3","properties":{"security-severity":"5.5"}},
	  {"id":"CVE-4","properties":{"security-severity":"2.0"}},
	  {"id":"G101"}]}},
	 "results":[{"ruleId":"CVE-1"},{"ruleId":"CVE-2"},{"ruleId":"CVE-3"},{"ruleId":"CVE-3"},{"ruleId":"CVE-4"},
	  {"ruleId":"G101","level":"error"},{"ruleId":"G102","level":"warning"},{"ruleId":"G103","level":"note"},{"ruleId":"G104"},
	  {"ruleIndex":1}]}]}`
	s, err := SARIF([]byte(log))
	require.NoError(t, err)
	require.Equal(t, schemas.Summary{Critical: 1, High: 3, Medium: 3, Low: 2, Unknown: 1}, s)
	_, err = SARIF([]byte(`{"version":"2.0.0","runs":[]}`))
	require.Error(t, err)
	_, err = SARIF([]byte(`not json`))
	require.Error(t, err)
}

// TestTrivyJSON summarises the realistic Trivy report fixture.
func TestTrivyJSON(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "trivy", "testdata", "report.json"))
	require.NoError(t, err)
	s, err := TrivyJSON(b)
	require.NoError(t, err)
	require.Equal(t, 6, s.Total())
}
