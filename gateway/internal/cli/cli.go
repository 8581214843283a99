// Package cli implements the ciss command: a pipeline step's one-line client
// for the CISS API (submit, status, result, cancel, jobs).
//
// Every failure ends as one line on stderr and one of the documented exit
// codes, so a pipeline can tell a policy failure (1) from a mistake in its own
// configuration (2) and from the service being unavailable (3):
//
//	0  passed (or the command did what was asked)
//	1  policy failure: --fail-on found findings at or above the threshold
//	2  usage or configuration error: bad flags, certificate or CA problems,
//	   no permission, a request the gateway refused (4xx)
//	3  service error: gateway unreachable after retries, 5xx, timeout,
//	   the job failed or was cancelled
//
// Standard output carries only the requested document (a job id, a report, a
// table); progress goes to standard error, and only when it is a terminal.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"ciss.dev/gateway/client"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitPolicy  = 1
	ExitUsage   = 2
	ExitService = 3
)

// Env is everything the command reads from and writes to its surroundings.
type Env struct {
	// Stdout receives the requested output; Stderr progress and errors.
	Stdout, Stderr io.Writer
	// LookupEnv reads environment variables (os.LookupEnv); the only way the
	// environment is read.
	LookupEnv func(string) (string, bool)
	// Interactive is true when Stderr is a terminal: progress is shown.
	Interactive bool
	// Now is the clock; default time.Now.
	Now func() time.Time
	// MinBackoff overrides the first retry delay (tests); default 500ms.
	MinBackoff time.Duration
	// UserAgent is sent to the gateway; default "ciss".
	UserAgent string
}

// Environment variables read for the connection settings.
const (
	EnvURL  = "CISS_URL"
	EnvCert = "CISS_CERT"
	EnvKey  = "CISS_KEY"
	EnvCA   = "CISS_CA"
)

const usage = `Usage: ciss <command> [arguments] [flags]

Commands:
  submit <type>  submit a job, e.g. ciss submit image-scan --image REF --wait --fail-on high
  status ID      show a job (--wait: until it finishes)
  result ID      print a finished job's report
  cancel ID      cancel a queued or running job
  approve ID     approve a protected action waiting for approval (approver role)
  jobs           list your tenant's jobs

Connection (every command): --url, --cert, --key, --ca, or the environment:
  CISS_URL, CISS_CERT, CISS_KEY, CISS_CA

Exit codes: 0 passed, 1 policy failure (--fail-on), 2 usage or configuration
error, 3 service error or timeout.

Run "ciss <command> -h" for a command's flags.
`

// Run runs the command line args (without the program name) and returns the
// exit code.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.LookupEnv == nil {
		env.LookupEnv = func(string) (string, bool) { return "", false }
	}
	if env.UserAgent == "" {
		env.UserAgent = "ciss"
	}
	err := run(ctx, args, &env)
	code, msg := exitFor(err)
	if msg != "" {
		fmt.Fprintln(env.Stderr, "ciss: "+msg)
	}
	return code
}

func run(ctx context.Context, args []string, env *Env) error {
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return &usageError{msg: "no command given"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "submit":
		return cmdSubmit(ctx, rest, env)
	case "status":
		return cmdStatus(ctx, rest, env)
	case "result":
		return cmdResult(ctx, rest, env)
	case "cancel":
		return cmdCancel(ctx, rest, env)
	case "jobs":
		return cmdJobs(ctx, rest, env)
	case "approve":
		return cmdApprove(ctx, rest, env)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(env.Stdout, usage)
		return nil
	}
	fmt.Fprint(env.Stderr, usage)
	return &usageError{msg: fmt.Sprintf("unknown command %q", cmd)}
}

// conn holds the connection flags every command takes.
type conn struct {
	url, cert, key, ca string
	timeout            time.Duration
}

func (c *conn) register(fs *flag.FlagSet, defaultTimeout time.Duration) {
	fs.StringVar(&c.url, "url", "", "gateway URL, e.g. https://ciss.example.com:8443 [$"+EnvURL+"]")
	fs.StringVar(&c.cert, "cert", "", "client certificate, PEM [$"+EnvCert+"]")
	fs.StringVar(&c.key, "key", "", "client key, PEM [$"+EnvKey+"]")
	fs.StringVar(&c.ca, "ca", "", "CA bundle trusted for the gateway's certificate, PEM; default: system roots [$"+EnvCA+"]")
	fs.DurationVar(&c.timeout, "timeout", defaultTimeout, "give up after this long, retries included")
}

// client builds the API client from flags, falling back to the environment.
func (c *conn) client(env *Env) (*client.Client, error) {
	for _, f := range []struct {
		v   *string
		env string
	}{{&c.url, EnvURL}, {&c.cert, EnvCert}, {&c.key, EnvKey}, {&c.ca, EnvCA}} {
		if *f.v == "" {
			if v, ok := env.LookupEnv(f.env); ok {
				*f.v = v
			}
		}
	}
	if c.timeout <= 0 {
		return nil, &usageError{msg: "--timeout must be positive"}
	}
	return client.New(client.Config{
		URL: c.url, CertFile: c.cert, KeyFile: c.key, CAFile: c.ca,
		UserAgent: env.UserAgent, Now: env.Now,
	})
}

// parse parses flags and positional arguments in any order ("submit
// image-scan --image X" and "submit --image X image-scan" both work) and
// checks the number of positionals.
func parse(fs *flag.FlagSet, args []string, env *Env, positional ...string) ([]string, error) {
	fs.SetOutput(env.Stderr)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, &usageError{msg: err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != len(positional) {
		want := "no arguments"
		if len(positional) > 0 {
			want = strings.Join(positional, " ")
		}
		return nil, &usageError{msg: fmt.Sprintf("%s: want %s, got %q", fs.Name(), want, pos)}
	}
	return pos, nil
}

// withTimeout bounds the whole command.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, fmt.Errorf("timed out after %s (--timeout)", d))
}
