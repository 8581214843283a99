package sign_test

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/empty"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/cosign/v2/pkg/types"
	sigsig "github.com/sigstore/sigstore/pkg/signature"
	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/workers/internal/sign"
)

func newKey(t *testing.T) (*sign.Key, string) {
	t.Helper()
	dir := t.TempDir()
	path, err := sign.GenerateFiles(dir, []byte("pw"))
	require.NoError(t, err)
	k, err := sign.Load(t.Context(), path, []byte("pw"))
	require.NoError(t, err)
	return k, filepath.Join(dir, sign.PublicKeyFile)
}

func TestGenerateFilesIsIdempotentAndKeyLoads(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p1, err := sign.GenerateFiles(dir, nil)
	require.NoError(t, err)
	pub1, _ := os.ReadFile(filepath.Join(dir, sign.PublicKeyFile))
	p2, err := sign.GenerateFiles(dir, nil)
	require.NoError(t, err)
	pub2, _ := os.ReadFile(filepath.Join(dir, sign.PublicKeyFile))
	require.Equal(t, p1, p2)
	require.Equal(t, pub1, pub2, "an existing dev key is kept")
	k, err := sign.Load(t.Context(), p1, nil)
	require.NoError(t, err)
	require.Equal(t, pub1, k.PublicPEM)
	require.True(t, strings.HasPrefix(k.ID, "sha256:"))

	_, err = sign.Load(t.Context(), p1, []byte("wrong"))
	require.Error(t, err, "wrong password")
	_, err = sign.Load(t.Context(), "awskms://x", nil)
	require.Error(t, err, "unsupported KMS")
	_, err = sign.Load(t.Context(), filepath.Join(dir, "missing"), nil)
	require.Error(t, err)
}

func TestEnvelopeVerifiesWithStdlibAndTamperingFails(t *testing.T) {
	t.Parallel()
	k, pubFile := newKey(t)
	other, _ := newKey(t)
	pemBytes, err := os.ReadFile(pubFile)
	require.NoError(t, err)
	keys, err := schemas.ParsePublicKeys(pemBytes)
	require.NoError(t, err)

	env, err := k.Envelope(t.Context(), schemas.PayloadTypeInToto, []byte(`{"a":1}`))
	require.NoError(t, err)
	got, err := env.Verify(keys...)
	require.NoError(t, err)
	require.Equal(t, `{"a":1}`, string(got))

	otherPub, err := other.PublicKey(t.Context())
	require.NoError(t, err)
	_, err = env.Verify(otherPub)
	require.ErrorIs(t, err, schemas.ErrBadSignature, "another key")

	tampered := *env
	tampered.Payload = base64.StdEncoding.EncodeToString([]byte(`{"a":2}`))
	_, err = tampered.Verify(keys...)
	require.ErrorIs(t, err, schemas.ErrBadSignature, "changed payload")

	retyped := *env
	retyped.PayloadType = "text/plain"
	_, err = retyped.Verify(keys...)
	require.ErrorIs(t, err, schemas.ErrBadSignature, "changed payload type")
}

// signed pushes a random image to an in-process registry and signs it with a
// vuln attestation.
type signed struct {
	key     *sign.Key
	pubFile string
	ref     string // repo@sha256:…
	other   string // another image in the same repo, unsigned
	report  json.RawMessage
}

func setupSigned(t *testing.T) signed {
	t.Helper()
	return setupSignedWith(t, nil)
}

// setupSignedWith signs with key (nil: a fresh key file).
func setupSignedWith(t *testing.T, key *sign.Key) signed {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	push := func(tag string) string {
		img, err := random.Image(512, 1)
		require.NoError(t, err)
		ref, err := name.NewTag(host + "/demo/app:" + tag)
		require.NoError(t, err)
		require.NoError(t, remote.Write(ref, img))
		d, err := img.Digest()
		require.NoError(t, err)
		return ref.Context().Digest(d.String()).String()
	}
	s := signed{ref: push("1"), other: push("2"), report: json.RawMessage(`{"SchemaVersion":2,"Results":[]}`)}
	if key == nil {
		s.key, s.pubFile = newKey(t)
	} else {
		s.key = key
	}
	pred, err := sign.VulnPredicate("https://github.com/aquasecurity/trivy", "0.69.0", "db-1", s.report, time.Now(), time.Now())
	require.NoError(t, err)
	is, err := sign.SignImage(t.Context(), s.key, s.ref, []sign.Attestation{{PredicateType: schemas.PredicateTypeVuln, Predicate: pred}}, sign.ImageOptions{})
	require.NoError(t, err)
	require.Equal(t, s.key.ID, is.KeyID)
	require.Equal(t, []string{schemas.PredicateTypeVuln}, is.PredicateTypes)
	require.True(t, strings.HasSuffix(is.Signature, ".sig"), is.Signature)
	return s
}

func TestSignImageVerifiesWithCosignLibrary(t *testing.T) {
	t.Parallel()
	s := setupSigned(t)
	ctx := t.Context()
	pub, err := s.key.PublicKey(ctx)
	require.NoError(t, err)
	verifier, err := sigsig.LoadVerifier(pub, crypto.SHA256)
	require.NoError(t, err)
	co := &cosign.CheckOpts{SigVerifier: verifier, IgnoreTlog: true, IgnoreSCT: true}

	d, err := name.NewDigest(s.ref)
	require.NoError(t, err)
	sigs, _, err := cosign.VerifyImageSignatures(ctx, d, co)
	require.NoError(t, err)
	require.Len(t, sigs, 1)
	atts, _, err := cosign.VerifyImageAttestations(ctx, d, co)
	require.NoError(t, err)
	require.Len(t, atts, 1)

	// Re-signing (a rescan) neither duplicates the signature nor keeps the
	// older attestation of the same predicate type.
	pred, err := sign.VulnPredicate("https://github.com/aquasecurity/trivy", "0.69.0", "db-2", s.report, time.Now(), time.Now())
	require.NoError(t, err)
	_, err = sign.SignImage(ctx, s.key, s.ref, []sign.Attestation{{PredicateType: schemas.PredicateTypeVuln, Predicate: pred}}, sign.ImageOptions{})
	require.NoError(t, err)
	sigs, _, err = cosign.VerifyImageSignatures(ctx, d, co)
	require.NoError(t, err)
	require.Len(t, sigs, 1)
	atts, _, err = cosign.VerifyImageAttestations(ctx, d, co)
	require.NoError(t, err)
	require.Len(t, atts, 1)
	p, err := atts[0].Payload()
	require.NoError(t, err)
	var env schemas.Envelope
	require.NoError(t, json.Unmarshal(p, &env))
	stmt, err := base64.StdEncoding.DecodeString(env.Payload)
	require.NoError(t, err)
	require.Contains(t, string(stmt), `"version":"db-2"`, "the newest attestation replaced the older one")

	// An unsigned image of the same repository does not verify.
	od, err := name.NewDigest(s.other)
	require.NoError(t, err)
	_, _, err = cosign.VerifyImageSignatures(ctx, od, co)
	require.Error(t, err)

	// Another key does not verify.
	other, _ := newKey(t)
	opub, _ := other.PublicKey(ctx)
	ov, _ := sigsig.LoadVerifier(opub, crypto.SHA256)
	_, _, err = cosign.VerifyImageSignatures(ctx, d, &cosign.CheckOpts{SigVerifier: ov, IgnoreTlog: true, IgnoreSCT: true})
	require.Error(t, err)
}

// cosignCLI returns the cosign binary the project installs
// (deploy/tools/install-cosign.sh; CISS_COSIGN), or skips.
func cosignCLI(t *testing.T) string {
	t.Helper()
	p := os.Getenv("CISS_COSIGN")
	if p == "" {
		t.Skip("CISS_COSIGN is not set: run `make unit` (it builds cosign with deploy/tools/install-cosign.sh)")
	}
	return p
}

// runCosign runs the cosign CLI offline: no Rekor, no TUF, a private HOME.
func runCosign(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	root := filepath.Join(home, "trusted_root.json")
	require.NoError(t, os.WriteFile(root, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o644))
	full := append([]string{args[0], "--insecure-ignore-tlog", "--allow-insecure-registry", "--trusted-root", root}, args[1:]...)
	cmd := exec.CommandContext(t.Context(), bin, full...)
	cmd.Env = append(os.Environ(), "HOME="+home, "TUF_ROOT="+filepath.Join(home, "tuf"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestSignImageVerifiesWithCosignCLI(t *testing.T) {
	t.Parallel()
	bin := cosignCLI(t)
	s := setupSigned(t)

	out, err := runCosign(t, bin, "verify", "--key", s.pubFile, s.ref)
	require.NoError(t, err, out)
	require.Contains(t, out, `"docker-manifest-digest"`)

	out, err = runCosign(t, bin, "verify-attestation", "--key", s.pubFile, "--type", "vuln", s.ref)
	require.NoError(t, err, out)
	var env schemas.Envelope
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(lastLine(out))), &env), out)
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	require.Contains(t, string(payload), schemas.PredicateTypeVuln)
	require.Contains(t, string(payload), `"SchemaVersion":2`)

	t.Run("different image digest", func(t *testing.T) {
		out, err := runCosign(t, bin, "verify", "--key", s.pubFile, s.other)
		require.Error(t, err, out)
		require.Contains(t, out, "no signatures found", out)
	})
	t.Run("wrong key", func(t *testing.T) {
		_, otherPub := newKey(t)
		out, err := runCosign(t, bin, "verify", "--key", otherPub, s.ref)
		require.Error(t, err, out)
	})
	t.Run("changed report", func(t *testing.T) {
		// Rewrite the attestation with the old signature: first unchanged
		// (the rewrite itself keeps it valid), then with a changed report.
		t.Parallel()
		tampered := setupSigned(t)
		rewriteAttestation(t, tampered.ref, nil)
		out, err := runCosign(t, bin, "verify-attestation", "--key", tampered.pubFile, "--type", "vuln", tampered.ref)
		require.NoError(t, err, "an unchanged rewrite still verifies: %s", out)
		rewriteAttestation(t, tampered.ref, func(p []byte) []byte {
			return bytes.Replace(p, []byte(`"Results":[]`), []byte(`"Results":null`), 1)
		})
		out, err = runCosign(t, bin, "verify-attestation", "--key", tampered.pubFile, "--type", "vuln", tampered.ref)
		require.Error(t, err, out)
		require.Contains(t, out, "no matching attestations", out)
	})
}

// rewriteAttestation replaces ref's attestation image by one holding the
// same envelope with its payload passed through change (nil: unchanged),
// keeping the old signature.
func rewriteAttestation(t *testing.T, ref string, change func([]byte) []byte) {
	t.Helper()
	d, err := name.NewDigest(ref)
	require.NoError(t, err)
	se, err := ociremote.SignedEntity(d)
	require.NoError(t, err)
	atts, err := se.Attestations()
	require.NoError(t, err)
	list, err := atts.Get()
	require.NoError(t, err)
	require.Len(t, list, 1)
	raw, err := list[0].Payload()
	require.NoError(t, err)
	var e schemas.Envelope
	require.NoError(t, json.Unmarshal(raw, &e))
	if change != nil {
		p, _ := base64.StdEncoding.DecodeString(e.Payload)
		e.Payload = base64.StdEncoding.EncodeToString(change(p))
	}
	eb, _ := json.Marshal(e)
	att, err := static.NewAttestation(eb, static.WithLayerMediaType(types.DssePayloadType),
		static.WithAnnotations(map[string]string{"predicateType": schemas.PredicateTypeVuln}))
	require.NoError(t, err)
	clean, err := ociremote.SignedImage(d)
	require.NoError(t, err)
	// Hide the existing attestations: the .att image is replaced, not appended to.
	se2, err := mutate.AttachAttestationToEntity(withoutAttestations{clean}, att)
	require.NoError(t, err)
	require.NoError(t, ociremote.WriteAttestations(d.Repository, se2))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// withoutAttestations hides an image's existing attestations, so attaching
// one and writing replaces the .att image.
type withoutAttestations struct{ oci.SignedImage }

func (withoutAttestations) Attestations() (oci.Signatures, error) { return empty.Signatures(), nil }
