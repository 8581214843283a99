package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
)

// Authentication headers. Neither is ever logged or audited.
const (
	headerGitHubSignature256  = "X-Hub-Signature-256"
	headerGitHubSignatureSHA1 = "X-Hub-Signature"
	headerGitLabToken         = "X-Gitlab-Token"
)

// VerifyGitHub checks GitHub's X-Hub-Signature-256 header: "sha256=" and the
// hex HMAC-SHA256 of the raw body under secret, compared in constant time. The
// legacy SHA-1 header X-Hub-Signature is never accepted. Failures are
// *AuthError.
func VerifyGitHub(secret Secret, hdr http.Header, body []byte) error {
	vals := hdr.Values(headerGitHubSignature256)
	switch {
	case len(vals) == 0 && hdr.Get(headerGitHubSignatureSHA1) != "":
		return &AuthError{Reason: "only the SHA-1 signature X-Hub-Signature was sent; X-Hub-Signature-256 is required"}
	case len(vals) == 0:
		return &AuthError{Reason: "X-Hub-Signature-256 header missing"}
	case len(vals) > 1:
		return &AuthError{Reason: "X-Hub-Signature-256 header repeated"}
	}
	sig, ok := strings.CutPrefix(vals[0], "sha256=")
	if !ok {
		return &AuthError{Reason: "X-Hub-Signature-256 is not of the form sha256=<hex>"}
	}
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return &AuthError{Reason: "X-Hub-Signature-256 is not 64 hex digits"}
	}
	mac := hmac.New(sha256.New, secret.bytes())
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return &AuthError{Reason: "signature mismatch"}
	}
	return nil
}

// VerifyGitLab checks GitLab's X-Gitlab-Token header against secret in
// constant time (comparing digests, so not even the length leaks). Failures
// are *AuthError.
func VerifyGitLab(secret Secret, hdr http.Header) error {
	vals := hdr.Values(headerGitLabToken)
	switch {
	case len(vals) == 0 || vals[0] == "":
		return &AuthError{Reason: "X-Gitlab-Token header missing"}
	case len(vals) > 1:
		return &AuthError{Reason: "X-Gitlab-Token header repeated"}
	}
	got, want := sha256.Sum256([]byte(vals[0])), sha256.Sum256(secret.bytes())
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return &AuthError{Reason: "token mismatch"}
	}
	return nil
}

// SignGitHub returns the X-Hub-Signature-256 value GitHub would send for body;
// for tests, tools and the dev stack.
func SignGitHub(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// NewSecret wraps key material; for tests and tools that sign.
func NewSecret(b []byte) Secret { return Secret{b: append([]byte(nil), b...)} }
