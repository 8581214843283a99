// Package k8s starts a real single-node Kubernetes cluster with the real Tekton
// Pipelines controller on loopback (test/k8s/cluster.sh), for the tests of
// CISS's cluster backend, which runs tools as Tekton TaskRuns.
//
// Everything but this comment is behind the build tag k8s: the cluster needs
// root, a few Debian packages and binaries that take ~20 minutes to build the
// first time, so a plain `go test ./...` must not start one. Run with
//
//	go test -tags k8s -count=1 -v ciss.dev/test/k8s/...
//
// Other packages start a cluster with [Up] (in a file with the same tag).
package k8s
