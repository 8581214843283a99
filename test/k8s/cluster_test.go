//go:build k8s

package k8s

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"github.com/tektoncd/pipeline/pkg/client/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"knative.dev/pkg/apis"
)

// TestClusterRunsTaskRun brings a cluster up, runs one TaskRun through
// Tekton's own clientset (a script step that writes a result), and takes the
// cluster down, checking that nothing is left behind.
func TestClusterRunsTaskRun(t *testing.T) {
	start := time.Now()
	c := Up(t)
	upTook := time.Since(start)

	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	require.NoError(t, err)
	tekton, err := versioned.NewForConfig(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	task := &pipelinev1.Task{
		ObjectMeta: metav1.ObjectMeta{Name: "ciss-k8s-greet", Namespace: corev1.NamespaceDefault},
		Spec: pipelinev1.TaskSpec{
			Results: []pipelinev1.TaskResult{{Name: "greeting", Type: pipelinev1.ResultsTypeString}},
			Steps: []pipelinev1.Step{{
				Name:  "greet",
				Image: c.StepImage,
				// A script (or an explicit command): without one the controller
				// looks the image's entrypoint up in a registry.
				Script: "#!/bin/sh\nset -e\nprintf 'hello from %s' \"$(uname -m)\" > $(results.greeting.path)\n",
			}},
		},
	}
	// No admission webhook runs in this cluster: default and validate here,
	// as it would, so that nothing invalid is ever stored.
	task.SetDefaults(ctx)
	require.Nil(t, task.Validate(apis.WithinCreate(ctx)))
	_, err = tekton.TektonV1().Tasks(task.Namespace).Create(ctx, task, metav1.CreateOptions{})
	require.NoError(t, err)

	tr := &pipelinev1.TaskRun{
		// A name, not generateName: validation (the webhook's, here the
		// client's) runs on the final name.
		ObjectMeta: metav1.ObjectMeta{Name: "ciss-k8s-greet-1", Namespace: corev1.NamespaceDefault},
		Spec:       pipelinev1.TaskRunSpec{TaskRef: &pipelinev1.TaskRef{Name: task.Name}},
	}
	tr.SetDefaults(ctx)
	require.Nil(t, tr.Validate(apis.WithinCreate(ctx)))
	runStart := time.Now()
	tr, err = tekton.TektonV1().TaskRuns(tr.Namespace).Create(ctx, tr, metav1.CreateOptions{})
	require.NoError(t, err)

	var cond *apis.Condition
	for {
		got, err := tekton.TektonV1().TaskRuns(tr.Namespace).Get(ctx, tr.Name, metav1.GetOptions{})
		require.NoError(t, err)
		if cond = got.Status.GetCondition(apis.ConditionSucceeded); cond != nil && !cond.IsUnknown() {
			tr = got
			break
		}
		select {
		case <-ctx.Done():
			c.LogPods(t)
			t.Fatalf("TaskRun %s not done after %s: %v", tr.Name, time.Since(runStart), cond)
		case <-time.After(200 * time.Millisecond):
		}
	}
	runTook := time.Since(runStart)
	if !cond.IsTrue() {
		c.LogPods(t)
		t.Fatalf("TaskRun %s: %s: %s", tr.Name, cond.Reason, cond.Message)
	}
	require.Len(t, tr.Status.Results, 1)
	require.Equal(t, "greeting", tr.Status.Results[0].Name)
	require.True(t, strings.HasPrefix(tr.Status.Results[0].Value.StringVal, "hello from "), tr.Status.Results[0].Value.StringVal)

	downStart := time.Now()
	require.NoError(t, c.Down(t))
	require.Empty(t, c.Leftovers())
	t.Logf("timings: up %s (install check included), TaskRun %s, down %s",
		upTook.Round(100*time.Millisecond), runTook.Round(100*time.Millisecond), time.Since(downStart).Round(100*time.Millisecond))
}
