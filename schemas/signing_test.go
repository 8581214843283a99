package schemas

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// signTest signs a result the way a worker does (ECDSA P-256 over SHA-256 of
// the PAE, ASN.1), with the standard library.
func signTest(t testing.TB, k *ecdsa.PrivateKey, res *TaskResult) {
	t.Helper()
	st, err := ResultStatement(res)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(st)
	d := sha256.Sum256(PAE(PayloadTypeInToto, b))
	sig, err := ecdsa.SignASN1(rand.Reader, k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	id, _ := KeyIDOf(&k.PublicKey)
	res.Result.Signature = &Envelope{PayloadType: PayloadTypeInToto, Payload: base64.StdEncoding.EncodeToString(b),
		Signatures: []EnvelopeSignature{{KeyID: id, Sig: base64.StdEncoding.EncodeToString(sig)}}}
}

func testResult() *TaskResult {
	return &TaskResult{TaskID: "j.trivy", JobID: "j", Tenant: "dev", Tool: "trivy", ToolVersion: "0.69.0", Worker: "w",
		Result: &Result{ImageDigest: "sha256:" + strings.Repeat("a", 64), Summary: Summary{High: 1},
			Reports: []Report{{Format: FormatSARIF, MediaType: MediaTypeSARIF, Object: "sha256/" + strings.Repeat("b", 64), Digest: "sha256:" + strings.Repeat("b", 64), Size: 3}},
			Policy:  &PolicyDecision{Passed: false, Threshold: "HIGH", Reason: "1 finding", Blocking: []string{"CVE-1"}}}}
}

func TestPAE(t *testing.T) {
	t.Parallel()
	// The DSSE specification's example.
	if got := string(PAE("http://example.com/HelloWorld", []byte("hello world"))); got != "DSSEv1 29 http://example.com/HelloWorld 11 hello world" {
		t.Fatalf("PAE = %q", got)
	}
}

func TestVerifyTaskResult(t *testing.T) {
	t.Parallel()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	res := testResult()
	signTest(t, k, res)
	if err := VerifyTaskResult(res, &k.PublicKey); err != nil {
		t.Fatal(err)
	}
	// JSON round trip (the event stream) keeps it valid.
	b, _ := json.Marshal(res)
	var back TaskResult
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := VerifyTaskResult(&back, &k.PublicKey); err != nil {
		t.Fatalf("after a JSON round trip: %v", err)
	}
	if err := VerifyTaskResult(res, &other.PublicKey); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other key: %v", err)
	}
	if err := VerifyTaskResult(res); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("no keys: %v", err)
	}
	res.Result.Policy.Passed = true
	if err := VerifyTaskResult(res, &k.PublicKey); !errors.Is(err, ErrStatementMismatch) {
		t.Fatalf("verdict flipped: %v", err)
	}
	if err := VerifyTaskResult(&TaskResult{}, &k.PublicKey); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned: %v", err)
	}
}

// FuzzVerifyTaskResult: a hostile event never verifies unless it is the
// signed one, and never panics.
func FuzzVerifyTaskResult(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	res := testResult()
	signTest(f, k, res)
	good, _ := json.Marshal(res)
	f.Add(good)
	f.Add([]byte(`{"result":{"summary":{},"reports":[],"signature":{"payloadType":"application/vnd.in-toto+json","payload":"!!","signatures":[{"sig":"AA=="}]}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r TaskResult
		if json.Unmarshal(b, &r) != nil {
			return
		}
		err := VerifyTaskResult(&r, &k.PublicKey)
		if err == nil {
			// Only semantically the signed result may verify.
			want, _ := ResultStatement(res)
			got, gerr := ResultStatement(&r)
			wb, _ := json.Marshal(want)
			gb, _ := json.Marshal(got)
			if gerr != nil || string(wb) != string(gb) {
				t.Fatalf("a different result verified: %s", b)
			}
		}
	})
}

func FuzzParsePublicKeys(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, _ := KeyIDOf(&k.PublicKey)
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"))
	f.Add([]byte(id))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParsePublicKeys(b)
		if err == nil && len(keys) == 0 {
			t.Fatal("no error and no keys")
		}
	})
}
