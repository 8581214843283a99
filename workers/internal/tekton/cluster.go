package tekton

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"github.com/tektoncd/pipeline/pkg/client/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"knative.dev/pkg/apis"

	"ciss.dev/workers/internal/runner"
)

// Labels and annotations on every TaskRun the cluster backend creates.
const (
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	ManagedBy        = "ciss-worker"
	LabelTool        = "ciss.dev/tool"
	LabelJob         = "ciss.dev/job"
	LabelTask        = "ciss.dev/task"
	AnnotationTenant = "ciss.dev/tenant"
	AnnotationJob    = "ciss.dev/job-id"
	AnnotationTask   = "ciss.dev/task-id"
	AnnotationTool   = "ciss.dev/tool"
	AnnotationWorker = "ciss.dev/worker"
)

// UploadStep is the name of the step the cluster backend appends to bring
// the reports back; a Task may not use it.
const UploadStep = "ciss-upload-reports"

// Errors of the cluster backend.
var (
	// ErrRunInvalid means the TaskRun cannot run as asked (Tekton's
	// validation, an unknown param, an unbound workspace): permanent.
	ErrRunInvalid = errors.New("invalid TaskRun")
	// ErrCancelled means the TaskRun was cancelled by someone else than this
	// worker (a cluster operator).
	ErrCancelled = errors.New("TaskRun cancelled")
)

// ClusterConfig configures a Cluster.
type ClusterConfig struct {
	// Client is Tekton's clientset. Required.
	Client versioned.Interface
	// Namespace is where TaskRuns are created. Required.
	Namespace string
	// Claims maps worker-provided data names (a manifest's `from:`) to
	// PersistentVolumeClaims in Namespace holding that data.
	Claims map[string]string
	// HelperImage runs the report upload step: any image with sh and a
	// busybox-compatible wget (--post-file, --header). Required when a Task
	// has reports.
	HelperImage string
	// Uploads receives the reports, at UploadURL as pods reach it
	// (http://host:port, no trailing slash).
	Uploads   *Uploads
	UploadURL string
	// Worker names this worker instance in annotations.
	Worker string
	// Grace is how long past a run's timeout the backend waits for Tekton to
	// end it before it cancels the run itself; default 2m.
	Grace time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Cluster runs Tasks as Tekton TaskRuns: each run creates one TaskRun with
// the Task inline (taskSpec, so the cluster needs no Task objects and a run
// always uses the worker's validated catalog version), watches it to the
// end, reads its results, uploads its reports to the worker and deletes it.
type Cluster struct {
	cfg ClusterConfig
	log *slog.Logger
}

var _ Backend = (*Cluster)(nil)

// NewCluster checks cfg and returns the backend.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("tekton: ClusterConfig.Client is required")
	case cfg.Namespace == "":
		return nil, errors.New("tekton: ClusterConfig.Namespace is required")
	case cfg.Uploads != nil && !strings.HasPrefix(cfg.UploadURL, "http"):
		return nil, fmt.Errorf("tekton: ClusterConfig.UploadURL %q: want http(s)://host:port", cfg.UploadURL)
	}
	cfg.UploadURL = strings.TrimSuffix(cfg.UploadURL, "/")
	cfg.Grace = cmp.Or(cfg.Grace, 2*time.Minute)
	return &Cluster{cfg: cfg, log: cmp.Or(cfg.Logger, slog.Default())}, nil
}

// RestConfig is the in-cluster configuration when kubeconfig is empty, else
// the kubeconfig file's current context.
func RestConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (or give a kubeconfig): %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return c, nil
}

// RunTask creates a TaskRun for r, waits for it to finish and deletes it.
// Cancelling ctx cancels the TaskRun (spec.status TaskRunCancelled).
func (c *Cluster) RunTask(ctx context.Context, r Run) (Outcome, error) {
	tr, done, err := c.taskRun(ctx, r)
	if err != nil {
		return Outcome{}, fmt.Errorf("Task %s: %w", r.Task.Name, err)
	}
	defer done()
	trs := c.cfg.Client.TektonV1().TaskRuns(c.cfg.Namespace)
	created, err := trs.Create(ctx, tr, metav1.CreateOptions{})
	if err != nil {
		if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
			err = fmt.Errorf("%w: %w", ErrRunInvalid, err)
		}
		return Outcome{}, fmt.Errorf("Task %s: create TaskRun: %w", r.Task.Name, err)
	}
	log := c.log.With("taskrun", created.Name, "task", r.Task.Name)
	log.Debug("TaskRun created")
	defer func() {
		// Finished (or given up on): delete it and, through its owner
		// reference, its pod.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		bg := metav1.DeletePropagationBackground
		if err := trs.Delete(dctx, created.Name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
			log.Warn("cannot delete TaskRun; start-up garbage collection will", "err", err)
		}
	}()

	wctx := ctx
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeoutCause(ctx, r.Timeout+c.cfg.Grace, runner.ErrTimeout)
		defer cancel()
	}
	final, err := c.wait(wctx, created.Name, created.ResourceVersion)
	if err != nil && wctx.Err() != nil {
		cause := context.Cause(wctx)
		// Ours to stop: cancel the TaskRun, wait (briefly) until Tekton has
		// stopped its pod, then the deferred delete removes it.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		patch := []byte(`{"spec":{"status":"` + v1.TaskRunSpecStatusCancelled + `","statusMessage":"cancelled by CISS"}}`)
		if _, perr := trs.Patch(cctx, created.Name, types.MergePatchType, patch, metav1.PatchOptions{}); perr != nil {
			log.Warn("cannot cancel TaskRun", "err", perr)
		} else if _, werr := c.wait(cctx, created.Name, ""); werr != nil {
			log.Warn("cancelled TaskRun did not finish", "err", werr)
		}
		return Outcome{}, fmt.Errorf("Task %s: TaskRun %s: %w", r.Task.Name, created.Name, cause)
	}
	if err != nil {
		return Outcome{}, fmt.Errorf("Task %s: TaskRun %s: %w", r.Task.Name, created.Name, err)
	}
	out, err := outcome(final)
	if err != nil {
		return out, fmt.Errorf("Task %s: %w", r.Task.Name, err)
	}
	return out, nil
}

// taskRun builds, defaults and validates the TaskRun for r (no admission
// webhook is assumed). done unregisters its uploads.
func (c *Cluster) taskRun(ctx context.Context, r Run) (*v1.TaskRun, func(), error) {
	done := func() {}
	t := r.Task
	spec := t.Spec.DeepCopy()
	declared := map[string]bool{}
	var params v1.Params
	for _, p := range spec.Params {
		declared[p.Name] = true
		if p.Type != "" && p.Type != v1.ParamTypeString {
			return nil, done, fmt.Errorf("%w: param %s: only string params are supported", ErrRunInvalid, p.Name)
		}
		v, ok := r.Params[p.Name]
		if !ok {
			if p.Default == nil {
				return nil, done, fmt.Errorf("%w: param %s has no value and no default", ErrRunInvalid, p.Name)
			}
			continue
		}
		params = append(params, v1.Param{Name: p.Name, Value: *v1.NewStructuredValues(v)})
	}
	for name := range r.Params {
		if !declared[name] {
			return nil, done, fmt.Errorf("%w: Task has no param %q", ErrRunInvalid, name)
		}
	}
	slices.SortFunc(params, func(a, b v1.Param) int { return strings.Compare(a.Name, b.Name) })

	var bindings []v1.WorkspaceBinding
	for _, ws := range spec.Workspaces {
		src, sourced := r.Sources[ws.Name]
		_, bound := r.Workspaces[ws.Name]
		switch {
		case ws.Name == r.Output:
			bindings = append(bindings, v1.WorkspaceBinding{Name: ws.Name, EmptyDir: &corev1.EmptyDirVolumeSource{}})
		case sourced:
			claim, ok := c.cfg.Claims[src]
			if !ok {
				return nil, done, fmt.Errorf("%w: workspace %s: no PersistentVolumeClaim configured for %q", ErrRunInvalid, ws.Name, src)
			}
			bindings = append(bindings, v1.WorkspaceBinding{Name: ws.Name,
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: ws.ReadOnly}})
		case bound:
			return nil, done, fmt.Errorf("%w: workspace %s is bound to a local directory, which a cluster cannot mount", ErrRunInvalid, ws.Name)
		case !ws.Optional:
			return nil, done, fmt.Errorf("%w: workspace %s is not bound", ErrRunInvalid, ws.Name)
		}
	}

	var env []corev1.EnvVar
	if r.Output != "" && len(r.Reports) > 0 {
		dir, ok := r.Workspaces[r.Output]
		if !ok || c.cfg.Uploads == nil || c.cfg.HelperImage == "" {
			return nil, done, fmt.Errorf("%w: reports need an output directory, an upload endpoint and a helper image", ErrRunInvalid)
		}
		if slices.ContainsFunc(spec.Steps, func(s v1.Step) bool { return s.Name == UploadStep }) {
			return nil, done, fmt.Errorf("%w: step name %s is reserved", ErrRunInvalid, UploadStep)
		}
		id, token, unregister, err := c.cfg.Uploads.register(dir, r.Reports)
		if err != nil {
			return nil, done, fmt.Errorf("%w: %w", ErrRunInvalid, err)
		}
		done = unregister
		env = []corev1.EnvVar{
			{Name: "CISS_UPLOAD_URL", Value: c.cfg.UploadURL + "/v1/runs/" + id + "/reports"},
			{Name: "CISS_UPLOAD_TOKEN", Value: token},
		}
		spec.Steps = append(spec.Steps, uploadStep(c.cfg.HelperImage, r.Output, r.Reports, env))
	}

	name := runName(r.Name)
	tr := &v1.TaskRun{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: c.cfg.Namespace,
			Labels: map[string]string{
				LabelManagedBy: ManagedBy,
				LabelTool:      labelValue(r.Owner.Tool),
				LabelJob:       labelValue(r.Owner.Job),
				LabelTask:      labelValue(r.Owner.Task),
			},
			Annotations: map[string]string{
				AnnotationTenant: r.Owner.Tenant,
				AnnotationJob:    r.Owner.Job,
				AnnotationTask:   r.Owner.Task,
				AnnotationTool:   r.Owner.Tool,
				AnnotationWorker: c.cfg.Worker,
			},
		},
		Spec: v1.TaskRunSpec{TaskSpec: spec, Params: params, Workspaces: bindings},
	}
	for k, v := range tr.Labels {
		if v == "" {
			delete(tr.Labels, k)
		}
	}
	if r.Timeout > 0 {
		tr.Spec.Timeout = &metav1.Duration{Duration: r.Timeout}
	}
	tr.SetDefaults(ctx)
	if err := tr.Validate(apis.WithinCreate(ctx)); err != nil {
		done()
		return nil, func() {}, fmt.Errorf("%w: %w", ErrRunInvalid, err)
	}
	return tr, done, nil
}

// uploadStep posts each report that exists to the worker. A report the tool
// did not write is skipped: the worker then reports it missing, as the local
// backend does.
func uploadStep(image, output string, reports []string, env []corev1.EnvVar) v1.Step {
	var b strings.Builder
	b.WriteString("#!/bin/sh\nset -eu\ncd \"$(workspaces." + output + ".path)\"\nfor f in")
	for _, p := range reports { // checked by checkReportPath: no quoting needed
		b.WriteString(" '" + p + "'")
	}
	b.WriteString("; do\n  [ -f \"$f\" ] || continue\n" +
		"  wget -q -O /dev/null --header \"Authorization: Bearer $CISS_UPLOAD_TOKEN\" --post-file \"$f\" \"$CISS_UPLOAD_URL/$f\"\ndone\n")
	return v1.Step{Name: UploadStep, Image: image, Env: env, Script: b.String()}
}

// wait watches the TaskRun until its Succeeded condition is True or False.
// A closed watch resumes from the last resourceVersion seen; an expired one
// ("410 Gone") re-reads the TaskRun and resumes from there.
func (c *Cluster) wait(ctx context.Context, name, rv string) (*v1.TaskRun, error) {
	trs := c.cfg.Client.TektonV1().TaskRuns(c.cfg.Namespace)
	backoff := 100 * time.Millisecond
	for {
		if rv == "" {
			tr, err := trs.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if apierrors.IsNotFound(err) {
					return nil, fmt.Errorf("TaskRun deleted before it finished: %w", err)
				}
				if err := sleep(ctx, &backoff); err != nil {
					return nil, err
				}
				continue
			}
			if finished(tr) {
				return tr, nil
			}
			rv = tr.ResourceVersion
		}
		w, err := trs.Watch(ctx, metav1.ListOptions{
			FieldSelector:       "metadata.name=" + name,
			ResourceVersion:     rv,
			AllowWatchBookmarks: true,
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
				rv = ""
				continue
			}
			c.log.Debug("watch failed; retrying", "taskrun", name, "err", err)
			if err := sleep(ctx, &backoff); err != nil {
				return nil, err
			}
			continue
		}
		tr, next, err := c.drain(ctx, w, rv)
		w.Stop()
		if tr != nil || err != nil {
			return tr, err
		}
		rv = next
		backoff = 100 * time.Millisecond
	}
}

// drain reads events until the TaskRun finishes (tr), the watch ends (the
// resourceVersion to resume from; "" to re-read), or ctx is done.
func (c *Cluster) drain(ctx context.Context, w watch.Interface, rv string) (*v1.TaskRun, string, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, rv, nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				tr, ok := ev.Object.(*v1.TaskRun)
				if !ok {
					continue
				}
				if finished(tr) {
					return tr, "", nil
				}
				rv = tr.ResourceVersion
			case watch.Bookmark:
				if m, err := metaOf(ev.Object); err == nil {
					rv = m
				}
			case watch.Deleted:
				return nil, "", errors.New("TaskRun deleted before it finished")
			case watch.Error:
				err := apierrors.FromObject(ev.Object)
				c.log.Debug("watch error; resuming", "err", err)
				if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
					return nil, "", nil
				}
				return nil, rv, nil
			}
		}
	}
}

func metaOf(o any) (string, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return "", errors.New("no metadata")
	}
	return m.GetResourceVersion(), nil
}

func sleep(ctx context.Context, backoff *time.Duration) error {
	t := time.NewTimer(*backoff)
	defer t.Stop()
	*backoff = min(*backoff*2, 5*time.Second)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func finished(tr *v1.TaskRun) bool {
	c := tr.Status.GetCondition(apis.ConditionSucceeded)
	return c != nil && !c.IsUnknown()
}

// Termination reasons Tekton's entrypoint records on a step (pkg/pod).
const (
	stepTimeoutExceeded = "TimeoutExceeded"
	stepSkipped         = "Skipped"
)

// outcome maps a finished TaskRun to the same results and errors the local
// backend gives: results on success; *runner.StepError for a step that
// exited non-zero; runner.ErrTimeout for a step or task timeout;
// ErrRunInvalid for what Tekton refused to run; ErrCancelled; any other
// failure (pod creation, image pull) as a plain, retryable error.
func outcome(tr *v1.TaskRun) (Outcome, error) {
	out := Outcome{Steps: steps(tr)}
	cond := tr.Status.GetCondition(apis.ConditionSucceeded)
	if cond == nil || cond.IsUnknown() {
		return out, fmt.Errorf("TaskRun %s has not finished", tr.Name)
	}
	if cond.IsTrue() {
		out.Results = map[string]string{}
		for _, res := range tr.Status.Results {
			v := res.Value.StringVal
			if len(v) > MaxResultSize {
				return out, fmt.Errorf("TaskRun %s: result %s is %d bytes, over the %d byte limit", tr.Name, res.Name, len(v), MaxResultSize)
			}
			out.Results[res.Name] = v
		}
		return out, nil
	}
	msg := fmt.Sprintf("TaskRun %s: %s: %s", tr.Name, cond.Reason, cond.Message)
	switch v1.TaskRunReason(cond.Reason) {
	case v1.TaskRunReasonTimedOut:
		return out, fmt.Errorf("%s: %w", msg, runner.ErrTimeout)
	case v1.TaskRunReasonCancelled:
		return out, fmt.Errorf("%s: %w", msg, ErrCancelled)
	case v1.TaskRunReasonFailedValidation, v1.TaskRunReasonTaskFailedValidation, v1.TaskRunReasonInvalidParamValue,
		v1.TaskRunReasonResourceVerificationFailed, v1.TaskRunReasonFailedResolution, v1.TaskRunReasonResultLargerThanAllowedLimit:
		return out, fmt.Errorf("%s: %w", msg, ErrRunInvalid)
	case v1.TaskRunReasonFailed:
		for _, s := range tr.Status.Steps {
			if s.Terminated == nil || s.TerminationReason == stepSkipped {
				continue
			}
			if s.TerminationReason == stepTimeoutExceeded {
				return out, fmt.Errorf("step %s: %s: %w", s.Name, msg, runner.ErrTimeout)
			}
			if s.Terminated.ExitCode != 0 {
				return out, &runner.StepError{Step: s.Name, ExitCode: int(s.Terminated.ExitCode), Stderr: msg}
			}
		}
	}
	return out, errors.New(msg)
}

func steps(tr *v1.TaskRun) []runner.StepResult {
	var out []runner.StepResult
	for _, s := range tr.Status.Steps {
		r := runner.StepResult{Name: s.Name}
		if t := s.Terminated; t != nil {
			r.ExitCode = int(t.ExitCode)
			r.Duration = t.FinishedAt.Sub(t.StartedAt.Time)
		}
		out = append(out, r)
	}
	return out
}

// Collect deletes finished TaskRuns this backend created (any worker's) that
// finished more than minAge ago: what a worker that crashed between a run's
// end and its delete left behind. Unfinished runs are left to Tekton, which
// ends them at their timeout; a later Collect removes them.
func (c *Cluster) Collect(ctx context.Context, minAge time.Duration) (int, error) {
	trs := c.cfg.Client.TektonV1().TaskRuns(c.cfg.Namespace)
	list, err := trs.List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedBy})
	if err != nil {
		return 0, fmt.Errorf("list TaskRuns: %w", err)
	}
	n := 0
	bg := metav1.DeletePropagationBackground
	for _, tr := range list.Items {
		if !finished(&tr) || tr.Status.CompletionTime == nil || time.Since(tr.Status.CompletionTime.Time) < minAge {
			continue
		}
		err := trs.Delete(ctx, tr.Name, metav1.DeleteOptions{PropagationPolicy: &bg,
			Preconditions: &metav1.Preconditions{UID: &tr.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return n, fmt.Errorf("delete TaskRun %s: %w", tr.Name, err)
		}
		n++
	}
	return n, nil
}

var nonDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// runName is a unique TaskRun name (a DNS label) derived from name.
func runName(name string) string {
	s := strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if len(s) > 40 {
		s = strings.TrimRight(s[:40], "-")
	}
	var b [5]byte
	_, _ = rand.Read(b[:])
	return "ciss-" + cmp.Or(s, "run") + "-" + hex.EncodeToString(b[:])
}

var nonLabel = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// labelValue makes s a valid label value (63 characters, alphanumeric at
// both ends); the exact value is in the annotations.
func labelValue(s string) string {
	s = nonLabel.ReplaceAllString(s, "_")
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.TrimFunc(s, func(r rune) bool { return r == '.' || r == '_' || r == '-' })
}
