package tekton

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"

	"ciss.dev/workers/internal/runner"
)

// Run is one execution of a Task.
type Run struct {
	Task *v1.Task
	// Name is the run's name ($(context.taskRun.name)).
	Name string
	// Params are string values for the Task's params; missing ones take the
	// Task's defaults.
	Params map[string]string
	// Workspaces maps workspace names to directories.
	Workspaces map[string]string
	// Timeout bounds the whole run; zero means ctx only.
	Timeout time.Duration
	// Dir is a scratch directory for results and scripts; it must exist.
	Dir string
	// Nice lowers the steps' CPU priority (runner.Spec.Nice); 0 keeps it.
	// The cluster backend ignores it (pods get their priority from the
	// cluster's own configuration).
	Nice int
	// Output names the workspace the reports are written to ("" for none)
	// and Reports their paths in it. The local backend binds it to
	// Workspaces[Output] directly; the cluster backend to a volume in the pod,
	// from which the reports are uploaded into Workspaces[Output].
	Output  string
	Reports []string
	// Sources maps workspaces bound to worker-provided data to the names of
	// that data (a manifest's `from:`); the cluster backend binds each to the
	// volume configured for the name.
	Sources map[string]string
	// Owner identifies the run on a cluster (labels and annotations).
	Owner Owner
}

// Owner is whose work a run is.
type Owner struct {
	Tenant, Job, Task, Tool string
}

// Outcome is what a successful run produced.
type Outcome struct {
	// Results are the Task results, as written by the steps.
	Results map[string]string
	Steps   []runner.StepResult
}

// Backend runs Tasks. Local runs them as processes on this host; a cluster
// backend creates TaskRuns.
type Backend interface {
	RunTask(ctx context.Context, r Run) (Outcome, error)
}

// MaxResultSize is Tekton's default limit for one result (4 KiB).
const MaxResultSize = 4096

// ErrUnresolved means a step refers to a variable the run does not provide.
var ErrUnresolved = errors.New("unresolved variable")

// Local runs a Task's steps in order as local processes, with Tekton's
// semantics for $(params.x), $(results.x.path), $(workspaces.x.path) and
// $(context.*), env, scripts with or without a shebang (sh by default), and
// step timeouts. Step images are mapped to local binaries by Runner: the
// mapped binary is put on PATH under its own name, so both `command: [trivy]`
// and a script calling trivy find it.
type Local struct {
	Runner *runner.Local
}

var _ Backend = (*Local)(nil)

// varRE matches Tekton variable references: only the params, results,
// workspaces, context and steps namespaces, as Tekton does, so a shell's own
// $(command substitution) in a script is left alone.
var varRE = regexp.MustCompile(`\$\((?:params|results|workspaces|context|steps)[.\[][^)]*\)`)

// RunTask runs r and returns its results.
func (l *Local) RunTask(ctx context.Context, r Run) (Outcome, error) {
	vars, err := variables(r)
	if err != nil {
		return Outcome{}, err
	}
	for _, d := range []string{"results", "scripts", "bin", "work"} {
		if err := os.MkdirAll(filepath.Join(r.Dir, d), 0o700); err != nil {
			return Outcome{}, err
		}
	}
	spec := runner.Spec{Dir: filepath.Join(r.Dir, "work"), Timeout: r.Timeout, Nice: r.Nice}
	for i, st := range r.Task.Spec.Steps {
		step, err := l.step(r, vars, i, st)
		if err != nil {
			return Outcome{}, fmt.Errorf("Task %s: %w", r.Task.Name, err)
		}
		spec.Steps = append(spec.Steps, step)
	}
	out, err := l.Runner.Run(ctx, spec)
	if err != nil {
		return Outcome{Steps: out.Steps}, fmt.Errorf("Task %s: %w", r.Task.Name, err)
	}
	res := Outcome{Results: map[string]string{}, Steps: out.Steps}
	for _, d := range r.Task.Spec.Results {
		b, err := os.ReadFile(filepath.Join(r.Dir, "results", d.Name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return res, fmt.Errorf("Task %s: result %s: %w", r.Task.Name, d.Name, err)
		}
		if len(b) > MaxResultSize {
			return res, fmt.Errorf("Task %s: result %s is %d bytes, over the %d byte limit", r.Task.Name, d.Name, len(b), MaxResultSize)
		}
		res.Results[d.Name] = string(b)
	}
	return res, nil
}

// variables computes every $(…) value the run provides.
func variables(r Run) (map[string]string, error) {
	t := r.Task
	vars := map[string]string{
		"context.taskRun.name": r.Name,
		"context.task.name":    t.Name,
	}
	declared := map[string]bool{}
	for _, p := range t.Spec.Params {
		declared[p.Name] = true
		if p.Type != "" && p.Type != v1.ParamTypeString {
			return nil, fmt.Errorf("Task %s param %s: only string params are supported", t.Name, p.Name)
		}
		v, ok := r.Params[p.Name]
		if !ok {
			if p.Default == nil {
				return nil, fmt.Errorf("Task %s: param %s has no value and no default", t.Name, p.Name)
			}
			v = p.Default.StringVal
		}
		for _, k := range []string{"params." + p.Name, "params['" + p.Name + "']", `params["` + p.Name + `"]`} {
			vars[k] = v
		}
	}
	for name := range r.Params {
		if !declared[name] {
			return nil, fmt.Errorf("Task %s has no param %q", t.Name, name)
		}
	}
	for _, res := range t.Spec.Results {
		vars["results."+res.Name+".path"] = filepath.Join(r.Dir, "results", res.Name)
	}
	for _, ws := range t.Spec.Workspaces {
		dir, ok := r.Workspaces[ws.Name]
		if !ok {
			if !ws.Optional {
				return nil, fmt.Errorf("Task %s: workspace %s is not bound", t.Name, ws.Name)
			}
			vars["workspaces."+ws.Name+".bound"] = "false"
			vars["workspaces."+ws.Name+".path"] = ""
			continue
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("Task %s: workspace %s: %s is not a directory", t.Name, ws.Name, dir)
		}
		vars["workspaces."+ws.Name+".bound"] = "true"
		vars["workspaces."+ws.Name+".path"] = dir
	}
	return vars, nil
}

func substitute(vars map[string]string, where, s string) (string, error) {
	var missing []string
	out := varRE.ReplaceAllStringFunc(s, func(m string) string {
		v, ok := vars[m[2:len(m)-1]]
		if !ok {
			missing = append(missing, m)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%s: %w %s", where, ErrUnresolved, strings.Join(missing, ", "))
	}
	return out, nil
}

func (l *Local) step(r Run, vars map[string]string, i int, st v1.Step) (runner.Step, error) {
	where := fmt.Sprintf("step %s", st.Name)
	bin, err := l.Runner.Binary(st.Image)
	if err != nil {
		return runner.Step{}, fmt.Errorf("%s: %w", where, err)
	}
	// The image's tool, on PATH under its own name.
	binDir := filepath.Join(r.Dir, "bin", fmt.Sprint(i))
	if err := os.MkdirAll(binDir, 0o700); err != nil {
		return runner.Step{}, err
	}
	link := filepath.Join(binDir, filepath.Base(bin))
	if err := os.Symlink(bin, link); err != nil && !errors.Is(err, os.ErrExist) {
		return runner.Step{}, err
	}
	out := runner.Step{Name: st.Name, Image: st.Image, PathDirs: []string{binDir}}
	if st.Timeout != nil {
		out.Timeout = st.Timeout.Duration
	}
	for _, e := range st.Env {
		if e.ValueFrom != nil {
			return runner.Step{}, fmt.Errorf("%s: env %s: valueFrom is not supported", where, e.Name)
		}
		v, err := substitute(vars, where+" env "+e.Name, e.Value)
		if err != nil {
			return runner.Step{}, err
		}
		out.Env = append(out.Env, e.Name+"="+v)
	}
	for _, a := range st.Args {
		v, err := substitute(vars, where+" args", a)
		if err != nil {
			return runner.Step{}, err
		}
		out.Args = append(out.Args, v)
	}
	if st.Script != "" {
		script, err := substitute(vars, where+" script", st.Script)
		if err != nil {
			return runner.Step{}, err
		}
		if !strings.HasPrefix(script, "#!") {
			script = "#!/bin/sh\nset -e\n" + script // Tekton's default interpreter
		}
		path := filepath.Join(r.Dir, "scripts", fmt.Sprintf("%d-%s", i, st.Name))
		if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
			return runner.Step{}, err
		}
		out.Command, out.Executable = []string{path}, path
		return out, nil
	}
	for _, c := range st.Command {
		v, err := substitute(vars, where+" command", c)
		if err != nil {
			return runner.Step{}, err
		}
		out.Command = append(out.Command, v)
	}
	// A bare command naming the image's tool runs the mapped binary; any other
	// command is looked up on the step's PATH.
	switch c := out.Command[0]; {
	case c == filepath.Base(bin):
		out.Executable = link
	case filepath.IsAbs(c):
		out.Executable = c
	default:
		return runner.Step{}, fmt.Errorf("%s: command %q is not the image's tool %q; use an absolute path or a script", where, c, filepath.Base(bin))
	}
	return out, nil
}
