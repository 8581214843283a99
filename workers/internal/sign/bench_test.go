package sign_test

import (
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"ciss.dev/schemas"
	"ciss.dev/workers/internal/sign"
)

// BenchmarkEnvelope is the per-result cost of signing (a key file key).
func BenchmarkEnvelope(b *testing.B) {
	k, err := sign.Load(b.Context(), must(sign.GenerateFiles(b.TempDir(), nil)), nil)
	if err != nil {
		b.Fatal(err)
	}
	payload := []byte(strings.Repeat(`{"subject":"x"}`, 50))
	for b.Loop() {
		if _, err := k.Envelope(b.Context(), schemas.PayloadTypeInToto, payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignImage is the per-image cost of a signature plus one vuln
// attestation written to an in-process registry (baseline: a plain push of
// the same-size manifest is what BenchmarkPushOnly measures).
func BenchmarkSignImage(b *testing.B) {
	k, err := sign.Load(b.Context(), must(sign.GenerateFiles(b.TempDir(), nil)), nil)
	if err != nil {
		b.Fatal(err)
	}
	_, refs := benchRegistry(b)
	pred, _ := sign.VulnPredicate("https://github.com/aquasecurity/trivy", "0.69.0", "db", json.RawMessage(`{"Results":[]}`), time.Now(), time.Now())
	i := 0
	for b.Loop() {
		if _, err := sign.SignImage(b.Context(), k, refs[i%len(refs)], []sign.Attestation{{PredicateType: schemas.PredicateTypeVuln, Predicate: pred}}, sign.ImageOptions{}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkPushOnly pushes a small random image: the registry round-trip
// baseline that BenchmarkSignImage is compared with in the same run.
func BenchmarkPushOnly(b *testing.B) {
	host, _ := benchRegistry(b)
	img, _ := random.Image(256, 1)
	for b.Loop() {
		ref, _ := name.NewTag(host + "/bench/push:1")
		if err := remote.Write(ref, img); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRegistry(b *testing.B) (string, []string) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	b.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	var refs []string
	for i := range 8 {
		img, _ := random.Image(256, 1)
		ref, _ := name.NewTag(host + "/bench/app:" + string(rune('a'+i)))
		if err := remote.Write(ref, img); err != nil {
			b.Fatal(err)
		}
		d, _ := img.Digest()
		refs = append(refs, ref.Context().Digest(d.String()).String())
	}
	return host, refs
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
