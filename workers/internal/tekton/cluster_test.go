package tekton

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"github.com/tektoncd/pipeline/pkg/client/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	"ciss.dev/workers/internal/runner"
)

// The cluster backend itself is proven on a real cluster by the conformance
// suite (workers/backendtest, run from test/k8s). These unit tests pin the
// mapping of TaskRun conditions to errors, with hand-made statuses and a fake
// clientset as a seam.

func finishedRun(status corev1.ConditionStatus, reason, msg string, steps ...v1.StepState) *v1.TaskRun {
	tr := &v1.TaskRun{ObjectMeta: metav1.ObjectMeta{Name: "tr"}}
	tr.Status.Conditions = duckv1.Conditions{{Type: apis.ConditionSucceeded, Status: status, Reason: reason, Message: msg}}
	tr.Status.Steps = steps
	return tr
}

func terminated(name string, code int32, reason string) v1.StepState {
	return v1.StepState{Name: name, TerminationReason: reason,
		ContainerState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}
}

// TestOutcomeMapping: every way a TaskRun ends maps to the error kind the
// worker's classifyRun acts on, the same as the local backend's.
func TestOutcomeMapping(t *testing.T) {
	t.Parallel()
	ok := finishedRun(corev1.ConditionTrue, "Succeeded", "")
	ok.Status.Results = []v1.TaskRunResult{{Name: "r", Value: *v1.NewStructuredValues("v")}}
	out, err := outcome(ok)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"r": "v"}, out.Results)

	big := finishedRun(corev1.ConditionTrue, "Succeeded", "")
	big.Status.Results = []v1.TaskRunResult{{Name: "r", Value: *v1.NewStructuredValues(strings.Repeat("x", MaxResultSize+1))}}
	_, err = outcome(big)
	require.ErrorContains(t, err, "over the 4096 byte limit")

	_, err = outcome(finishedRun(corev1.ConditionUnknown, "Running", ""))
	require.ErrorContains(t, err, "has not finished")

	for _, c := range []struct {
		name string
		tr   *v1.TaskRun
		is   error
	}{
		{"task timeout", finishedRun(corev1.ConditionFalse, "TaskRunTimeout", "timed out"), runner.ErrTimeout},
		{"step timeout", finishedRun(corev1.ConditionFalse, "Failed", `"step-slow" exited because the step exceeded the specified timeout limit`,
			terminated("slow", 1, "TimeoutExceeded")), runner.ErrTimeout},
		{"cancelled by someone else", finishedRun(corev1.ConditionFalse, "TaskRunCancelled", "cancelled"), ErrCancelled},
		{"validation", finishedRun(corev1.ConditionFalse, "TaskRunValidationFailed", "bad"), ErrRunInvalid},
		{"invalid param", finishedRun(corev1.ConditionFalse, "InvalidParamValue", "bad"), ErrRunInvalid},
	} {
		_, err := outcome(c.tr)
		require.ErrorIs(t, err, c.is, c.name)
	}

	_, err = outcome(finishedRun(corev1.ConditionFalse, "Failed", `"step-fail" exited with code 3`,
		terminated("ok", 0, "Completed"), terminated("fail", 3, "Error"), terminated("never", 0, "Skipped")))
	var se *runner.StepError
	require.True(t, errors.As(err, &se), "%v", err)
	require.Equal(t, "fail", se.Step)
	require.Equal(t, 3, se.ExitCode)

	// Pod trouble (image pull, pod creation) is retryable: no sentinel.
	_, err = outcome(finishedRun(corev1.ConditionFalse, "TaskRunImagePullFailed", "pull"))
	require.Error(t, err)
	for _, s := range []error{runner.ErrTimeout, ErrRunInvalid, ErrCancelled} {
		require.NotErrorIs(t, err, s)
	}
}

func newFakeCluster(t *testing.T) (*Cluster, *fake.Clientset, *Uploads) {
	t.Helper()
	client := fake.NewSimpleClientset()
	// The fake's watches do not replay changes since a resourceVersion as an
	// API server does, so tests change a TaskRun only once the backend
	// watches it (see created).
	var n atomic.Int32
	watches.Store(client, &n)
	client.PrependWatchReactor("taskruns", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := client.Tracker().Watch(a.GetResource(), a.GetNamespace())
		n.Add(1) // counted once the watch is registered
		return true, w, err
	})
	up := &Uploads{}
	c, err := NewCluster(ClusterConfig{Client: client, Namespace: "ns", HelperImage: "busybox:1",
		Uploads: up, UploadURL: "http://127.0.0.1:1", Claims: map[string]string{"db": "db-claim"}})
	require.NoError(t, err)
	return c, client, up
}

func simpleTask(t *testing.T) *v1.Task {
	t.Helper()
	tk, err := parseTask(t.Context(), []byte(okTask))
	require.NoError(t, err)
	return tk
}

// watches counts, per fake clientset, the TaskRun watches started on it.
var watches sync.Map // *fake.Clientset → *atomic.Int32

// created waits for the backend's TaskRun to appear in the fake and for the
// backend to watch it, so that a change the test makes next is seen.
func created(t *testing.T, client *fake.Clientset) *v1.TaskRun {
	t.Helper()
	n, _ := watches.Load(client)
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := client.TektonV1().TaskRuns("ns").List(context.Background(), metav1.ListOptions{})
		require.NoError(t, err)
		if len(list.Items) == 1 && (n == nil || n.(*atomic.Int32).Load() > 0) {
			return &list.Items[0]
		}
		require.True(t, time.Now().Before(deadline), "no TaskRun created and watched")
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClusterTaskRunShape: the TaskRun carries the Task inline, params,
// workspace bindings (emptyDir output, PVC for worker data), labels,
// annotations, the timeout and the upload step; finishing it returns its
// results and deletes it.
func TestClusterTaskRunShape(t *testing.T) {
	t.Parallel()
	c, client, _ := newFakeCluster(t)
	task := simpleTask(t)
	task.Spec.Workspaces = append(task.Spec.Workspaces, v1.WorkspaceDeclaration{Name: "db", ReadOnly: true})
	task.Spec.Results = []v1.TaskResult{{Name: "r", Type: v1.ResultsTypeString}}
	out := t.TempDir()
	type res struct {
		out Outcome
		err error
	}
	done := make(chan res, 1)
	go func() {
		o, err := c.RunTask(t.Context(), Run{Task: task, Name: "Job-1.Trivy", Params: map[string]string{"image": "x"},
			Workspaces: map[string]string{"out": out, "db": "/local/db"}, Sources: map[string]string{"db": "db"},
			Output: "out", Reports: []string{"r.json"}, Timeout: time.Minute,
			Owner: Owner{Tenant: "acme", Job: "Job-1", Task: "Job-1.Trivy", Tool: "trivy"}})
		done <- res{o, err}
	}()
	tr := created(t, client)
	require.True(t, strings.HasPrefix(tr.Name, "ciss-job-1-trivy-"), tr.Name)
	require.Equal(t, "ciss-worker", tr.Labels[LabelManagedBy])
	require.Equal(t, "Job-1", tr.Labels[LabelJob])
	require.Equal(t, "acme", tr.Annotations[AnnotationTenant])
	require.Equal(t, time.Minute, tr.Spec.Timeout.Duration)
	require.NotNil(t, tr.Spec.TaskSpec)
	require.Nil(t, tr.Spec.TaskRef)
	steps := tr.Spec.TaskSpec.Steps
	require.Equal(t, UploadStep, steps[len(steps)-1].Name)
	require.Contains(t, steps[len(steps)-1].Script, "'r.json'")
	require.Equal(t, v1.Params{{Name: "image", Value: *v1.NewStructuredValues("x")}}, tr.Spec.Params)
	ws := map[string]v1.WorkspaceBinding{}
	for _, b := range tr.Spec.Workspaces {
		ws[b.Name] = b
	}
	require.NotNil(t, ws["out"].EmptyDir)
	require.Equal(t, "db-claim", ws["db"].PersistentVolumeClaim.ClaimName)
	require.True(t, ws["db"].PersistentVolumeClaim.ReadOnly)

	tr.Status.Conditions = duckv1.Conditions{{Type: apis.ConditionSucceeded, Status: corev1.ConditionTrue, Reason: "Succeeded"}}
	tr.Status.Results = []v1.TaskRunResult{{Name: "r", Value: *v1.NewStructuredValues("done")}}
	_, err := client.TektonV1().TaskRuns("ns").UpdateStatus(context.Background(), tr, metav1.UpdateOptions{})
	require.NoError(t, err)
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, "done", r.out.Results["r"])
	list, err := client.TektonV1().TaskRuns("ns").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	require.Empty(t, list.Items, "a finished TaskRun is deleted")
}

// TestClusterCancel: cancelling ctx patches spec.status TaskRunCancelled,
// and RunTask returns the cancellation once the TaskRun ended.
func TestClusterCancel(t *testing.T) {
	t.Parallel()
	c, client, _ := newFakeCluster(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.RunTask(ctx, Run{Task: simpleTask(t), Name: "cancel", Params: map[string]string{"image": "x"},
			Workspaces: map[string]string{"out": t.TempDir()}, Output: "out"})
		done <- err
	}()
	tr := created(t, client)
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := client.TektonV1().TaskRuns("ns").Get(context.Background(), tr.Name, metav1.GetOptions{})
		require.NoError(t, err)
		if got.Spec.Status == v1.TaskRunSpecStatusCancelled {
			got.Status.Conditions = duckv1.Conditions{{Type: apis.ConditionSucceeded, Status: corev1.ConditionFalse, Reason: "TaskRunCancelled"}}
			_, err = client.TektonV1().TaskRuns("ns").UpdateStatus(context.Background(), got, metav1.UpdateOptions{})
			require.NoError(t, err)
			break
		}
		require.True(t, time.Now().Before(deadline), "TaskRun not cancelled")
		time.Sleep(10 * time.Millisecond)
	}
	require.ErrorIs(t, <-done, context.Canceled)
}

// TestClusterRefusesBeforeCreate: unknown params, missing claims, reserved
// step names and unsafe report paths never reach the cluster.
func TestClusterRefusesBeforeCreate(t *testing.T) {
	t.Parallel()
	c, client, _ := newFakeCluster(t)
	base := Run{Task: simpleTask(t), Name: "x", Params: map[string]string{"image": "x"}, Workspaces: map[string]string{"out": t.TempDir()}, Output: "out"}
	for name, mut := range map[string]func(r *Run){
		"unknown param":  func(r *Run) { r.Params = map[string]string{"image": "x", "evil": "y"} },
		"missing param":  func(r *Run) { r.Params = nil },
		"no claim":       func(r *Run) { r.Sources = map[string]string{"out": "nope"}; r.Output = "" },
		"unsafe report":  func(r *Run) { r.Reports = []string{"../../etc/passwd"} },
		"quote in path":  func(r *Run) { r.Reports = []string{"a'; rm -rf /; '"} },
		"local dir only": func(r *Run) { r.Output = "" },
	} {
		r := base
		mut(&r)
		_, err := c.RunTask(t.Context(), r)
		require.ErrorIs(t, err, ErrRunInvalid, name)
	}
	list, err := client.TektonV1().TaskRuns("ns").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	require.Empty(t, list.Items)
}

// TestCollect deletes only finished CISS TaskRuns older than the minimum age.
func TestCollect(t *testing.T) {
	t.Parallel()
	c, client, _ := newFakeCluster(t)
	mk := func(name string, managed bool, status corev1.ConditionStatus, age time.Duration) {
		tr := finishedRun(status, "x", "")
		tr.Name, tr.Namespace = name, "ns"
		if managed {
			tr.Labels = map[string]string{LabelManagedBy: ManagedBy}
		}
		tr.Status.CompletionTime = &metav1.Time{Time: time.Now().Add(-age)}
		_, err := client.TektonV1().TaskRuns("ns").Create(context.Background(), tr, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	mk("old-done", true, corev1.ConditionTrue, time.Hour)
	mk("old-failed", true, corev1.ConditionFalse, time.Hour)
	mk("fresh", true, corev1.ConditionTrue, time.Second)
	mk("running", true, corev1.ConditionUnknown, time.Hour)
	mk("not-ours", false, corev1.ConditionTrue, time.Hour)
	n, err := c.Collect(t.Context(), 10*time.Minute)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	list, err := client.TektonV1().TaskRuns("ns").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	var left []string
	for _, tr := range list.Items {
		left = append(left, tr.Name)
	}
	require.ElementsMatch(t, []string{"fresh", "running", "not-ours"}, left)
}

// TestUploadsRefuseHostileRequests: only the registered run, with its token,
// for its report paths, within the size limit, while registered.
func TestUploadsRefuseHostileRequests(t *testing.T) {
	t.Parallel()
	up := &Uploads{MaxBytes: 16}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	id, token, done, err := up.register(dir, []string{"r.json", "sub/x.sarif"})
	require.NoError(t, err)
	post := func(method, path, tok, body string) int {
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	base := "/v1/runs/" + id + "/reports/"
	require.Equal(t, http.StatusUnauthorized, post("POST", base+"r.json", "", "x"))
	require.Equal(t, http.StatusUnauthorized, post("POST", base+"r.json", strings.Repeat("0", 64), "x"))
	require.Equal(t, http.StatusUnauthorized, post("POST", base+"r.json", "not-hex", "x"))
	require.Equal(t, http.StatusUnauthorized, post("POST", "/v1/runs/other/reports/r.json", token, "x"))
	require.Equal(t, http.StatusForbidden, post("POST", base+"other.json", token, "x"))
	require.Equal(t, http.StatusForbidden, post("POST", base+"../r.json", token, "x"))
	require.Equal(t, http.StatusMethodNotAllowed, post("GET", base+"r.json", token, ""))
	require.Equal(t, http.StatusNotFound, post("POST", "/elsewhere", token, "x"))
	require.Equal(t, http.StatusRequestEntityTooLarge, post("POST", base+"r.json", token, strings.Repeat("x", 17)))
	require.NoFileExists(t, filepath.Join(dir, "r.json"))
	require.Equal(t, http.StatusNoContent, post("POST", base+"r.json", token, `{"ok":1}`))
	require.Equal(t, http.StatusNoContent, post("PUT", base+"sub/x.sarif", token, `{}`))
	b, err := os.ReadFile(filepath.Join(dir, "r.json"))
	require.NoError(t, err)
	require.Equal(t, `{"ok":1}`, string(b))
	done()
	require.Equal(t, http.StatusUnauthorized, post("POST", base+"r.json", token, "x"), "a finished run takes no uploads")
}

// FuzzCheckReportPath: an accepted path is relative, stays inside the output
// directory and needs no quoting in the upload script or URL.
func FuzzCheckReportPath(f *testing.F) {
	for _, s := range []string{"report.json", "sub/r.sarif.json", "../x", "/etc/passwd", "a//b", "a/./b", "a b", "a'b", "..", "a/..", "$(x)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if checkReportPath(p) != nil {
			return
		}
		if filepath.IsAbs(p) || strings.ContainsAny(p, "'\"$`\\ \n;&|") {
			t.Fatalf("accepted unsafe path %q", p)
		}
		if rel, err := filepath.Rel("/out", filepath.Join("/out", p)); err != nil || strings.HasPrefix(rel, "..") || rel == "." {
			t.Fatalf("accepted path %q escaping the directory", p)
		}
	})
}

// TestWatchResumes: a watch the server closes is resumed from the last
// resourceVersion seen, and an expired one ("410 Gone") re-reads the TaskRun
// and watches again from there; the run still ends with its results.
func TestWatchResumes(t *testing.T) {
	t.Parallel()
	c, client, _ := newFakeCluster(t)
	var mu sync.Mutex
	var rvs []string
	watches := 0
	client.PrependReactor("create", "taskruns", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*v1.TaskRun)
		tr.ResourceVersion = "42"
		return false, nil, nil
	})
	client.PrependWatchReactor("taskruns", func(a k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		watches++
		rvs = append(rvs, a.(k8stesting.WatchActionImpl).WatchRestrictions.ResourceVersion)
		switch watches {
		case 1: // closed by the server straight away
			w := watch.NewFake()
			go w.Stop()
			return true, w, nil
		case 2: // expired
			w := watch.NewFake()
			go w.Error(&metav1.Status{Status: metav1.StatusFailure, Code: http.StatusGone, Reason: metav1.StatusReasonExpired, Message: "too old resource version"})
			return true, w, nil
		}
		return false, nil, nil // the fake's own watch
	})
	done := make(chan error, 1)
	go func() {
		out, err := c.RunTask(t.Context(), Run{Task: simpleTask(t), Name: "w", Params: map[string]string{"image": "x"},
			Workspaces: map[string]string{"out": t.TempDir()}, Output: "out"})
		if err == nil && out.Results["r"] != "ok" {
			err = fmt.Errorf("results %v", out.Results)
		}
		done <- err
	}()
	tr := created(t, client)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := watches
		mu.Unlock()
		if n >= 3 {
			break
		}
		require.True(t, time.Now().Before(deadline), "watch not resumed (%d watches)", n)
		time.Sleep(10 * time.Millisecond)
	}
	tr.Status.Conditions = duckv1.Conditions{{Type: apis.ConditionSucceeded, Status: corev1.ConditionTrue, Reason: "Succeeded"}}
	tr.Status.Results = []v1.TaskRunResult{{Name: "r", Value: *v1.NewStructuredValues("ok")}}
	_, err := client.TektonV1().TaskRuns("ns").UpdateStatus(context.Background(), tr, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, <-done)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, "42", rvs[0], "the first watch starts at the created TaskRun's resourceVersion")
	require.Equal(t, rvs[0], rvs[1], "a closed watch resumes from the same resourceVersion")
	gets := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "taskruns" {
			gets++
		}
	}
	require.Positive(t, gets, "an expired watch re-reads the TaskRun")
}
