//go:build k8s

package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/require"
	"github.com/tektoncd/pipeline/pkg/client/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"ciss.dev/schemas"
	"ciss.dev/test/fixture"
	"ciss.dev/test/k8s"
	"ciss.dev/test/stack"
)

// TestClusterBackend: CISS jobs submitted through the gateway become real
// Tekton TaskRuns on a real Kubernetes (test/k8s): the catalog's unchanged
// Trivy Task runs in a pod (the project's trivy in an image named as the Task
// says) against the loopback registry and the fixture DB (a PVC over the
// stack's DB directory), and its reports come back as the job's result. A
// failing step, a timeout and a cancel end the job accordingly, and no
// TaskRun is left behind. It also prints the job latency of the same scan
// through the local backend, in the same run.
func TestClusterBackend(t *testing.T) {
	requireTools(t)
	c := k8s.Up(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	require.NoError(t, err)
	tekton, err := versioned.NewForConfig(cfg)
	require.NoError(t, err)
	clusterArgs := func(claim string, extra ...string) map[string][]string {
		return map[string][]string{stack.Worker: append([]string{
			"-backend", "cluster", "-kubeconfig", c.Kubeconfig, "-namespace", corev1.NamespaceDefault,
			"-cluster-claims", "trivy-db=" + claim, "-helper-image", c.StepImage, "-upload-addr", "127.0.0.1:0",
			"-tools", "trivy", // sast needs a go-cache claim and a checkout the cluster backend cannot deliver yet
		}, extra...)}
	}
	taskRunsLeft := func(t *testing.T) []string {
		list, err := tekton.TektonV1().TaskRuns(corev1.NamespaceDefault).List(context.Background(),
			metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=ciss-worker"})
		require.NoError(t, err)
		var names []string
		for _, tr := range list.Items {
			names = append(names, tr.Name)
		}
		return names
	}
	defer func() {
		if t.Failed() {
			c.LogPods(t)
		}
	}()

	// A failing scan step is retried like any tool failure: two deliveries.
	e := newEnv(t, clusterArgs("ciss-e2e-trivy-db", "-max-deliver", "2"))
	k8s.HostPathClaim(t, c, "ciss-e2e-trivy-db", e.s.DB.CacheDir)

	var clusterTook time.Duration
	t.Run("scan result comes back from a TaskRun", func(t *testing.T) {
		start := time.Now()
		job := e.admin.submit(noCache(scan(e.s.Images.Vulnerable)), nil)
		done := e.admin.waitDone(job.ID)
		clusterTook = time.Since(start)
		require.Equal(t, schemas.StatusSucceeded, done.Status, "error: %+v", done.Error)
		require.Equal(t, "0.69.0", done.ToolVersion)
		require.Equal(t, "2@2026-11-01T00:00:00Z", done.Result.DBVersion)
		want := fixture.VulnerableFindings()
		require.Equal(t, len(want), done.Result.Summary.Total())
		resp, native := e.admin.result(job.ID, "application/json")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		for _, f := range want {
			require.Contains(t, string(native), `"VulnerabilityID": "`+f.ID+`"`)
		}
		resp, sarif := e.admin.result(job.ID, schemas.MediaTypeSARIF)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, string(sarif), `"version": "2.1.0"`)
		resp, cdx := e.admin.result(job.ID, schemas.MediaTypeCycloneDX)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, string(cdx), `"bomFormat": "CycloneDX"`)
	})

	t.Run("failing step fails the job", func(t *testing.T) {
		// An image whose only layer is not an archive: it resolves, Trivy's
		// scan step then exits non-zero in the pod.
		img, err := mutate.AppendLayers(empty.Image, static.NewLayer([]byte("not a layer archive"), types.DockerLayer))
		require.NoError(t, err)
		ref, err := e.s.Registry.Push(t.Context(), "demo/corrupt:1.0", img)
		require.NoError(t, err)
		j := e.admin.waitDone(e.admin.submit(noCache(scan(ref)), nil).ID)
		require.Equal(t, schemas.StatusFailed, j.Status)
		require.NotNil(t, j.Error)
		require.Contains(t, j.Error.Message, "step scan exited", "%+v", j.Error)
	})

	t.Run("cancelling the job cancels its TaskRun", func(t *testing.T) {
		release := e.s.Registry.Hold("demo/vulnerable")
		defer release()
		job := e.admin.submit(noCache(scan(e.s.Images.Vulnerable)), nil)
		e.admin.waitFor(job.ID, time.Minute, func(j schemas.Job) bool { return j.Status == schemas.StatusRunning })
		// Wait for the scan's TaskRun (the version Task's is cached by now).
		deadline := time.Now().Add(time.Minute)
		for len(taskRunsLeft(t)) == 0 {
			require.True(t, time.Now().Before(deadline), "no TaskRun created")
			time.Sleep(100 * time.Millisecond)
		}
		resp, b := e.admin.do(http.MethodDelete, "/v1/jobs/"+job.ID, nil, nil)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", b)
		require.Equal(t, schemas.StatusCancelled, e.admin.waitDone(job.ID).Status)
		deadline = time.Now().Add(time.Minute)
		for e.countMsgs(schemas.StreamResults, schemas.SubjectResultCompleted("trivy"), `"outcome":"cancelled"`) == 0 {
			require.True(t, time.Now().Before(deadline), "worker did not report the task cancelled")
			time.Sleep(100 * time.Millisecond)
		}
		// The worker cancelled (spec.status) and then deleted the TaskRun.
		for len(taskRunsLeft(t)) > 0 {
			require.True(t, time.Now().Before(deadline), "TaskRuns left: %v", taskRunsLeft(t))
			time.Sleep(100 * time.Millisecond)
		}
	})
	require.Empty(t, taskRunsLeft(t), "finished TaskRuns must be deleted")
	e.s.Close()

	t.Run("a TaskRun timeout fails the job with code timeout", func(t *testing.T) {
		e := newEnv(t, clusterArgs("ciss-e2e-trivy-db-2", "-max-deliver", "1", "-task-timeout", "5s"))
		k8s.HostPathClaim(t, c, "ciss-e2e-trivy-db-2", e.s.DB.CacheDir)
		release := e.s.Registry.Hold("demo/vulnerable")
		defer release()
		j := e.admin.waitDone(e.admin.submit(noCache(scan(e.s.Images.Vulnerable)), nil).ID)
		require.Equal(t, schemas.StatusFailed, j.Status)
		require.Equal(t, schemas.CodeTimeout, j.Error.Code, "%+v", j.Error)
		require.Contains(t, j.Error.Message, "TaskRunTimeout")
		e.s.Close()
	})
	require.Empty(t, taskRunsLeft(t), "finished TaskRuns must be deleted")

	t.Run("same scan through the local backend (baseline)", func(t *testing.T) {
		e := newEnv(t, nil)
		start := time.Now()
		done := e.admin.waitDone(e.admin.submit(noCache(scan(e.s.Images.Vulnerable)), nil).ID)
		localTook := time.Since(start)
		require.Equal(t, schemas.StatusSucceeded, done.Status)
		t.Logf("latency: image-scan job submit→succeeded (version Task + scan Task, no cache): cluster backend %s, local backend %s (%.0fx)",
			clusterTook.Round(time.Millisecond), localTook.Round(time.Millisecond), float64(clusterTook)/float64(localTook))
	})
}
