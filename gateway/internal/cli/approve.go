package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"time"

	"ciss.dev/gateway/client"
	"ciss.dev/schemas"
)

// cmdApprove approves a protected action waiting in pending-approval.
func cmdApprove(ctx context.Context, args []string, env *Env) error {
	fs := flag.NewFlagSet("approve", flag.ContinueOnError)
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
	// Approving again while undispatched re-publishes (deduplicated), so retrying is safe.
	err = client.Retry(ctx, p.retryOptions(), func(ctx context.Context) error {
		var err error
		job, err = c.Approve(ctx, pos[0])
		return err
	})
	if client.IsStatus(err, http.StatusConflict) || client.IsStatus(err, http.StatusForbidden) {
		var ae *client.APIError
		errors.As(err, &ae)
		return &refusedError{msg: "cannot approve: " + ae.Problem.Detail}
	}
	if err != nil {
		return requestError(c, "approve", err)
	}
	if output == outJSON {
		return writeJSON(env.Stdout, job)
	}
	return writeStatus(env.Stdout, job)
}
