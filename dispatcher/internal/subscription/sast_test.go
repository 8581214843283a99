package subscription

import (
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

// TestPlanSAST fills a sast job's repo and commit from the push event.
func TestPlanSAST(t *testing.T) {
	t.Parallel()
	set, err := Parse([]byte(`version: 1
subscriptions:
  - name: sast-main
    tenant: acme
    match: {events: [push, pull_request]}
    jobs:
      - type: sast
        target: {repo: "https://{host}/{repo}.git", commit: "{commit}"}
`))
	require.NoError(t, err)
	ev := event(schemas.ProviderGitHub, schemas.GitEventPush, "acme/app", "refs/heads/main")
	ps := set.Plan(ev)
	require.Len(t, ps, 1)
	require.NoError(t, ps[0].Err)
	require.Equal(t, schemas.JobTypeSAST, ps[0].Request.Type)
	require.Equal(t, "https://"+ev.Host+"/acme/app.git", ps[0].Request.Target.Repo)
	require.Equal(t, ev.Commit, ps[0].Request.Target.Commit)
	require.Empty(t, ps[0].Request.Target.Image)
}
