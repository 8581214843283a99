// Command ciss is the CISS client a pipeline step runs in one line:
//
//	ciss submit image-scan --image registry.example.com/app@sha256:… --wait --fail-on high --output sarif --out ciss.sarif
//
// Connection settings come from --url, --cert, --key and --ca or from
// CISS_URL, CISS_CERT, CISS_KEY and CISS_CA. Exit codes: 0 passed, 1 policy
// failure (--fail-on), 2 usage or configuration error, 3 service error or
// timeout. See package ciss.dev/gateway/internal/cli and "ciss -h".
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"ciss.dev/gateway/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], cli.Env{
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		LookupEnv:   os.LookupEnv,
		Interactive: isTerminal(os.Stderr),
	})
	stop()
	os.Exit(code)
}

// isTerminal reports whether f is a character device (a terminal), without
// a dependency on x/term.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
