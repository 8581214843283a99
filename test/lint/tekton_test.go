package lint

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"sigs.k8s.io/yaml"

	"ciss.dev/test/stack"
)

// tasks returns the pipeline integration's Tekton Task files. (The worker
// catalog's Tasks are validated by the workers at start-up and, as the chart
// renders them, by TestChartRendersRestricted.)
func tasks(t *testing.T) []string {
	t.Helper()
	root, err := stack.RepoRoot()
	require.NoError(t, err)
	files, err := filepath.Glob(filepath.Join(root, "deploy", "integrations", "tekton", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	return files
}

// TestTektonTasks decodes each Task strictly (unknown fields are errors),
// applies Tekton's defaults and runs its validation, as the admission
// webhook would on kubectl apply.
func TestTektonTasks(t *testing.T) {
	t.Parallel()
	for _, file := range tasks(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			b, err := os.ReadFile(file)
			require.NoError(t, err)
			var task pipelinev1.Task
			require.NoError(t, yaml.UnmarshalStrict(b, &task), "strict decode")
			require.Equal(t, "tekton.dev/v1", task.APIVersion)
			require.Equal(t, "Task", task.Kind)
			ctx := context.Background()
			task.SetDefaults(ctx)
			if ferr := task.Validate(ctx); ferr != nil {
				t.Fatalf("%s: %v", file, ferr)
			}
			for _, s := range task.Spec.Steps {
				require.NotNil(t, s.SecurityContext, "step %s: PodSecurity restricted needs a securityContext", s.Name)
				require.True(t, *s.SecurityContext.RunAsNonRoot, "step %s runs as non-root", s.Name)
				require.False(t, *s.SecurityContext.AllowPrivilegeEscalation, "step %s", s.Name)
				require.NotContains(t, s.Script, "$(params.", "step %s: parameters reach scripts through env only", s.Name)
			}
		})
	}
}

// TestTektonTaskRejectsMistakes proves the check has teeth: a misspelt field
// and an undeclared parameter are both refused.
func TestTektonTaskRejectsMistakes(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(tasks(t)[0])
	require.NoError(t, err)
	var task pipelinev1.Task
	require.Error(t, yaml.UnmarshalStrict(bytes.Replace(b, []byte("\n  workspaces:\n"), []byte("\n  workspacez:\n"), 1), &task))

	bad := strings.Replace(string(b), "value: $(params.fail-on)", "value: $(params.fail-at)", 1)
	require.NoError(t, yaml.UnmarshalStrict([]byte(bad), &task))
	task.SetDefaults(context.Background())
	require.NotNil(t, task.Validate(context.Background()), "an undeclared parameter must be refused")
}

// TestChartCatalogMatchesDeploy: the chart ships a copy of the worker catalog
// (Helm cannot read files outside the chart); it must equal deploy/tekton.
func TestChartCatalogMatchesDeploy(t *testing.T) {
	t.Parallel()
	root, err := stack.RepoRoot()
	require.NoError(t, err)
	src, err := filepath.Glob(filepath.Join(root, "deploy", "tekton", "*.yaml"))
	require.NoError(t, err)
	dst, err := filepath.Glob(filepath.Join(root, "deploy", "helm", "ciss", "files", "catalog", "*.yaml"))
	require.NoError(t, err)
	fix := "cp deploy/tekton/*.yaml deploy/helm/ciss/files/catalog/"
	require.Equal(t, len(src), len(dst), "the chart's catalog has other files than deploy/tekton: %s", fix)
	for i := range src {
		require.Equal(t, filepath.Base(src[i]), filepath.Base(dst[i]), fix)
		a, err := os.ReadFile(src[i])
		require.NoError(t, err)
		b, err := os.ReadFile(dst[i])
		require.NoError(t, err)
		require.Equal(t, string(a), string(b), "%s drifted from deploy/tekton: %s", dst[i], fix)
	}
}
