package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"ciss.dev/gateway/client"
	"ciss.dev/gateway/internal/report"
	"ciss.dev/schemas"
)

// Output formats.
const (
	outTable     = "table"
	outJSON      = "json"
	outSARIF     = "sarif"
	outCycloneDX = "cyclonedx"
)

// reportFormat maps --output to the API's ?format=.
func reportFormat(output string) string {
	switch output {
	case outSARIF:
		return schemas.FormatSARIF
	case outCycloneDX:
		return schemas.FormatCycloneDX
	}
	return schemas.FormatNative
}

// paramsFlag collects repeated --param k=v.
type paramsFlag map[string]string

func (p paramsFlag) String() string { return "" }

func (p paramsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not key=value", s)
	}
	p[k] = v
	return nil
}

// reportOpts are the flags of the commands that print a report.
type reportOpts struct {
	output, out, failOn string
	top                 int
	threshold           report.Severity
}

func (o *reportOpts) register(fs *flag.FlagSet) {
	fs.StringVar(&o.output, "output", outTable, "table, sarif, cyclonedx or json (the tool's native report)")
	fs.StringVar(&o.out, "out", "", "write the report to this file instead of stdout; the table then goes to stdout")
	fs.StringVar(&o.failOn, "fail-on", "", "exit 1 when a finding is at or above this severity: critical, high, medium, low or unknown (any finding)")
	fs.IntVar(&o.top, "top", 20, "findings listed in the table")
}

func (o *reportOpts) check() error {
	switch o.output {
	case outTable, outJSON, outSARIF, outCycloneDX:
	default:
		return &usageError{msg: fmt.Sprintf("--output %q: want table, sarif, cyclonedx or json", o.output)}
	}
	if o.failOn != "" {
		sev, ok := report.ParseSeverity(o.failOn)
		if !ok {
			return &usageError{msg: fmt.Sprintf("--fail-on %q: want critical, high, medium, low or unknown", o.failOn)}
		}
		o.threshold = sev
	}
	return nil
}

func cmdSubmit(ctx context.Context, args []string, env *Env) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	var (
		cn                        conn
		ro                        reportOpts
		image, repo, commit, lane string
		idemKey                   string
		wait, noCache             bool
		params                    = paramsFlag{}
	)
	cn.register(fs, 10*time.Minute)
	ro.register(fs)
	fs.StringVar(&image, "image", "", "image reference to scan: host[:port]/repo[:tag][@sha256:…] (image-scan)")
	fs.StringVar(&repo, "repo", "", "source repository URL (source job types)")
	fs.StringVar(&commit, "commit", "", "commit SHA in --repo (source job types)")
	fs.Var(params, "param", "type-specific option key=value (repeatable)")
	fs.StringVar(&lane, "lane", "", "priority lane: interactive (default) or bulk")
	fs.BoolVar(&noCache, "no-cache", false, "do not answer from the result cache")
	fs.StringVar(&idemKey, "idempotency-key", "", "same key and request → same job (default: a fresh key per run, so retries never duplicate)")
	fs.BoolVar(&wait, "wait", false, "wait for the job to finish, then print its report")
	pos, err := parse(fs, args, env, "<type>")
	if err != nil {
		return err
	}
	if err := ro.check(); err != nil {
		return err
	}
	if !wait && (ro.failOn != "" || ro.out != "") {
		return &usageError{msg: "--fail-on and --out need --wait"}
	}
	c, err := cn.client(env)
	if err != nil {
		return err
	}
	// Built as a map so that target fields newer than this client's schemas
	// (--repo, --commit) reach the gateway, which decides.
	target := map[string]string{}
	for k, v := range map[string]string{"image": image, "repo": repo, "commit": commit} {
		if v != "" {
			target[k] = v
		}
	}
	req := map[string]any{"type": pos[0], "target": target}
	if len(params) > 0 {
		req["params"] = map[string]string(params)
	}
	if lane != "" {
		req["lane"] = lane
	}
	if noCache {
		req["cache"] = false
	}
	if idemKey == "" {
		idemKey = randomKey()
	}
	ctx, cancel := withTimeout(ctx, cn.timeout)
	defer cancel()
	p := newProgress(env)
	defer p.stop()
	var job *schemas.Job
	err = client.Retry(ctx, p.retryOptions(), func(ctx context.Context) error {
		var err error
		job, err = c.Submit(ctx, req, client.SubmitOptions{IdempotencyKey: idemKey})
		return err
	})
	if err != nil {
		return requestError(c, "submit", err)
	}
	if !wait {
		if ro.output == outJSON {
			return writeJSON(env.Stdout, job)
		}
		_, err := fmt.Fprintln(env.Stdout, job.ID)
		return err
	}
	p.note("submitted job %s", job.ID)
	return waitAndReport(ctx, c, p, job.ID, &ro, env)
}

// waitAndReport waits for a job, then prints its report and applies --fail-on.
func waitAndReport(ctx context.Context, c *client.Client, p *progress, id string, ro *reportOpts, env *Env) error {
	job, err := c.Wait(ctx, id, client.WaitOptions{Retry: p.retryOptions(), OnChange: p.change})
	p.stop()
	if err != nil {
		return requestError(c, "read", err)
	}
	return printResult(ctx, c, job, ro, env, p)
}

// printResult writes a finished job's report as asked and applies --fail-on.
// The document (report or table) goes to --out, else stdout; with --out the
// severity summary goes to stdout. A --fail-on verdict adds the summary on
// stderr when stdout holds a machine-readable document.
func printResult(ctx context.Context, c *client.Client, job *schemas.Job, ro *reportOpts, env *Env, p *progress) error {
	if job.Status != schemas.StatusSucceeded {
		return &jobError{job: job}
	}
	docW, summaryW := env.Stdout, io.Writer(nil)
	if ro.out != "" {
		f, err := os.Create(ro.out)
		if err != nil {
			return &usageError{msg: fmt.Sprintf("--out: %v", err)}
		}
		defer f.Close()
		docW, summaryW = f, env.Stdout
	}
	if ro.output == outTable {
		if err := writeJobTable(docW, job, fetchFindings(ctx, c, job, p), ro.top); err != nil {
			return err
		}
	} else {
		var rep *client.Report
		err := client.Retry(ctx, p.retryOptions(), func(ctx context.Context) error {
			var err error
			rep, err = c.Result(ctx, job.ID, reportFormat(ro.output))
			return err
		})
		if err != nil {
			return requestError(c, "read", err)
		}
		if _, err := docW.Write(rep.Body); err != nil {
			return err
		}
	}
	if summaryW != nil {
		if err := writeSummary(summaryW, job); err != nil {
			return err
		}
	}
	if ro.failOn == "" {
		return nil
	}
	n := countAtOrAbove(job.Result.Summary, ro.threshold)
	if n == 0 {
		return nil
	}
	if summaryW == nil && ro.output != outTable {
		_ = writeSummary(env.Stderr, job)
	}
	return &policyError{job: job.ID, count: n, threshold: ro.threshold.String()}
}

// fetchFindings reads the findings for the table: SARIF first (any tool),
// else the native report if it is Trivy's. A failure only shortens the table.
func fetchFindings(ctx context.Context, c *client.Client, job *schemas.Job, p *progress) []report.Finding {
	for _, f := range []struct {
		format string
		parse  func([]byte) ([]report.Finding, error)
	}{{schemas.FormatSARIF, report.ParseSARIF}, {schemas.FormatNative, report.ParseTrivy}} {
		if job.Result != nil {
			if _, ok := job.Result.ReportFor(f.format); !ok {
				continue
			}
		}
		var rep *client.Report
		err := client.Retry(ctx, p.retryOptions(), func(ctx context.Context) error {
			var err error
			rep, err = c.Result(ctx, job.ID, f.format)
			return err
		})
		if err != nil {
			continue
		}
		if fs, err := f.parse(rep.Body); err == nil {
			report.Sort(fs)
			return fs
		}
	}
	return nil
}

func countAtOrAbove(s schemas.Summary, t report.Severity) int {
	n := 0
	for sev, count := range map[report.Severity]int{
		report.SeverityCritical: s.Critical, report.SeverityHigh: s.High, report.SeverityMedium: s.Medium,
		report.SeverityLow: s.Low, report.SeverityUnknown: s.Unknown,
	} {
		if sev >= t {
			n += count
		}
	}
	return n
}

func cmdStatus(ctx context.Context, args []string, env *Env) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	var (
		cn     conn
		wait   bool
		output string
	)
	cn.register(fs, 10*time.Minute)
	fs.BoolVar(&wait, "wait", false, "wait until the job has finished")
	fs.StringVar(&output, "output", outTable, "table or json")
	pos, err := parse(fs, args, env, "ID")
	if err != nil {
		return err
	}
	if output != outTable && output != outJSON {
		return &usageError{msg: fmt.Sprintf("--output %q: want table or json", output)}
	}
	c, err := cn.client(env)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, cn.timeout)
	defer cancel()
	p := newProgress(env)
	var job *schemas.Job
	if wait {
		job, err = c.Wait(ctx, pos[0], client.WaitOptions{Retry: p.retryOptions(), OnChange: p.change})
	} else {
		err = client.Retry(ctx, p.retryOptions(), func(ctx context.Context) error {
			var err error
			job, err = c.Job(ctx, pos[0])
			return err
		})
	}
	p.stop()
	if err != nil {
		return requestError(c, "read", err)
	}
	if output == outJSON {
		err = writeJSON(env.Stdout, job)
	} else {
		err = writeStatus(env.Stdout, job)
	}
	if err == nil && wait && job.Status != schemas.StatusSucceeded {
		return &jobError{job: job}
	}
	return err
}

func cmdResult(ctx context.Context, args []string, env *Env) error {
	fs := flag.NewFlagSet("result", flag.ContinueOnError)
	var (
		cn conn
		ro reportOpts
	)
	cn.register(fs, 2*time.Minute)
	ro.register(fs)
	pos, err := parse(fs, args, env, "ID")
	if err != nil {
		return err
	}
	if err := ro.check(); err != nil {
		return err
	}
	c, err := cn.client(env)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, cn.timeout)
	defer cancel()
	p := newProgress(env)
	defer p.stop()
	var job *schemas.Job
	err = client.Retry(ctx, p.retryOptions(), func(ctx context.Context) error {
		var err error
		job, err = c.Job(ctx, pos[0])
		return err
	})
	if err != nil {
		return requestError(c, "read", err)
	}
	if !job.Status.Terminal() {
		return &refusedError{msg: fmt.Sprintf("job %s is %s: no result yet (use ciss status %s --wait)", job.ID, job.Status, job.ID)}
	}
	return printResult(ctx, c, job, &ro, env, p)
}

func cmdCancel(ctx context.Context, args []string, env *Env) error {
	fs := flag.NewFlagSet("cancel", flag.ContinueOnError)
	var (
		cn     conn
		output string
	)
	cn.register(fs, time.Minute)
	fs.StringVar(&output, "output", outTable, "table or json")
	pos, err := parse(fs, args, env, "ID")
	if err != nil {
		return err
	}
	if output != outTable && output != outJSON {
		return &usageError{msg: fmt.Sprintf("--output %q: want table or json", output)}
	}
	c, err := cn.client(env)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, cn.timeout)
	defer cancel()
	p := newProgress(env)
	defer p.stop()
	var job *schemas.Job
	// Cancelling twice is harmless (the second answers 409), so retrying is safe.
	err = client.Retry(ctx, p.retryOptions(), func(ctx context.Context) error {
		var err error
		job, err = c.Cancel(ctx, pos[0])
		return err
	})
	if client.IsStatus(err, http.StatusConflict) {
		var ae *client.APIError
		errors.As(err, &ae)
		return &refusedError{msg: "cannot cancel: " + ae.Problem.Detail}
	}
	if err != nil {
		return requestError(c, "submit", err)
	}
	if output == outJSON {
		return writeJSON(env.Stdout, job)
	}
	return writeStatus(env.Stdout, job)
}

func cmdJobs(ctx context.Context, args []string, env *Env) error {
	fs := flag.NewFlagSet("jobs", flag.ContinueOnError)
	var (
		cn             conn
		status, output string
		limit          int
	)
	cn.register(fs, time.Minute)
	fs.StringVar(&status, "status", "", "only jobs in this status: queued, running, succeeded, failed, cancelled, pending-approval")
	fs.IntVar(&limit, "limit", 50, "at most this many jobs (1-200)")
	fs.StringVar(&output, "output", outTable, "table or json")
	if _, err := parse(fs, args, env); err != nil {
		return err
	}
	if output != outTable && output != outJSON {
		return &usageError{msg: fmt.Sprintf("--output %q: want table or json", output)}
	}
	if status != "" && !schemas.Status(status).Valid() {
		return &usageError{msg: fmt.Sprintf("--status %q: want queued, running, succeeded, failed, cancelled or pending-approval", status)}
	}
	c, err := cn.client(env)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, cn.timeout)
	defer cancel()
	p := newProgress(env)
	defer p.stop()
	var list *client.JobList
	err = client.Retry(ctx, p.retryOptions(), func(ctx context.Context) error {
		var err error
		list, err = c.Jobs(ctx, client.ListOptions{Status: schemas.Status(status), Limit: limit})
		return err
	})
	if err != nil {
		return requestError(c, "read", err)
	}
	if output == outJSON {
		return writeJSON(env.Stdout, list)
	}
	return writeJobsTable(env.Stdout, list.Jobs)
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// randomKey is a fresh Idempotency-Key: retries within one run reuse it.
func randomKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return "ciss-cli-" + hex.EncodeToString(b)
}
