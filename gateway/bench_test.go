package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"ciss.dev/gateway"
)

// BenchmarkSubmit measures POST /v1/jobs over mTLS with keep-alive against an
// embedded JetStream: decode, validate, publish with PubAck, KV create.
func BenchmarkSubmit(b *testing.B) {
	e := setup(b, setupOpt{config: func(c *gateway.Config) { c.Logger = nil }}) // one log line per request would dominate
	c := e.client(e.acme())
	b.ReportAllocs()
	for b.Loop() {
		req, err := http.NewRequest(http.MethodPost, c.base+"/v1/jobs", strings.NewReader(validRequest))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.http.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body) // drain, so the connection is reused
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
