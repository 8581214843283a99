// Command ciss-k8s-pause is the sandbox process of every pod in the test
// cluster that test/k8s/cluster.sh runs: what the upstream pause image
// (registry.k8s.io/pause, a C program) does, in Go, so that no image has to be
// pulled. It holds the pod's namespaces open, reaps orphaned children (it is
// PID 1 when the pod shares its process namespace) and exits 0 on SIGINT or
// SIGTERM.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
