//go:build k8s

package k8s

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"ciss.dev/workers/backendtest"
)

// TestBackendConformance runs the Task backend conformance suite against the
// cluster backend on a real cluster, and against the local backend in the
// same run (the latency baseline the log lines compare).
func TestBackendConformance(t *testing.T) {
	c := Up(t)
	input := t.TempDir()
	claim := HostPathClaim(t, c, "ciss-conformance-input", input)
	t.Run("local", backendtest.RunLocal)
	t.Run("cluster", func(t *testing.T) {
		backendtest.RunCluster(t, backendtest.ClusterEnv{
			Kubeconfig: c.Kubeconfig, Namespace: corev1.NamespaceDefault, StepImage: c.StepImage,
			InputClaim: claim, InputDir: input, UploadHost: "127.0.0.1",
		})
	})
	if t.Failed() {
		c.LogPods(t)
	}
}
