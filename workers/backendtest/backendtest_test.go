package backendtest

import "testing"

// TestLocal: the local backend passes the conformance suite.
func TestLocal(t *testing.T) {
	t.Parallel()
	RunLocal(t)
}
