package webhook

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const testSecret = "s3cr3t-for-tests-only-0123456789"

// TestVerifyGitHubHostile is the signature path under attack: every variant
// but the genuine one is refused, with a reason that names no secret.
func TestVerifyGitHubHostile(t *testing.T) {
	t.Parallel()
	body := fixture(t, "github-push.json")
	good := SignGitHub([]byte(testSecret), body)
	sha1Hex := strings.Repeat("ab", 20)
	for _, tc := range []struct {
		what   string
		hdr    http.Header
		body   []byte
		reason string // "" = accepted
	}{
		{"genuine", http.Header{"X-Hub-Signature-256": {good}}, body, ""},
		{"genuine, upper-case hex", http.Header{"X-Hub-Signature-256": {"sha256=" + strings.ToUpper(strings.TrimPrefix(good, "sha256="))}}, body, ""},
		{"no signature", http.Header{}, body, "missing"},
		{"empty signature", http.Header{"X-Hub-Signature-256": {""}}, body, "not of the form"},
		{"wrong secret", http.Header{"X-Hub-Signature-256": {SignGitHub([]byte("another-secret-0123456789abcdef"), body)}}, body, "mismatch"},
		{"truncated signature", http.Header{"X-Hub-Signature-256": {good[:len(good)-2]}}, body, "64 hex digits"},
		{"signature one digit short", http.Header{"X-Hub-Signature-256": {good[:len(good)-1]}}, body, "64 hex digits"},
		{"signature with extra digits", http.Header{"X-Hub-Signature-256": {good + "00"}}, body, "64 hex digits"},
		{"sha1= in the sha256 header", http.Header{"X-Hub-Signature-256": {"sha1=" + sha1Hex}}, body, "not of the form"},
		{"only the legacy sha1 header", http.Header{"X-Hub-Signature": {"sha1=" + sha1Hex}}, body, "SHA-1"},
		{"prefix only", http.Header{"X-Hub-Signature-256": {"sha256="}}, body, "64 hex digits"},
		{"not hex", http.Header{"X-Hub-Signature-256": {"sha256=" + strings.Repeat("zz", 32)}}, body, "64 hex digits"},
		{"upper-case prefix", http.Header{"X-Hub-Signature-256": {"SHA256=" + strings.TrimPrefix(good, "sha256=")}}, body, "not of the form"},
		{"repeated header", http.Header{"X-Hub-Signature-256": {good, good}}, body, "repeated"},
		{"signature over a different body", http.Header{"X-Hub-Signature-256": {good}}, mutated(t, "github-push.json", func(m map[string]any) {
			m["ref"] = "refs/heads/evil"
		}), "mismatch"},
		{"body with one byte appended", http.Header{"X-Hub-Signature-256": {good}}, append(append([]byte(nil), body...), ' '), "mismatch"},
		{"empty body", http.Header{"X-Hub-Signature-256": {good}}, nil, "mismatch"},
		{"signature of the empty body", http.Header{"X-Hub-Signature-256": {SignGitHub([]byte(testSecret), nil)}}, body, "mismatch"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			t.Parallel()
			err := VerifyGitHub(NewSecret([]byte(testSecret)), tc.hdr, tc.body)
			if tc.reason == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrUnauthenticated)
			require.ErrorContains(t, err, tc.reason)
			require.NotContains(t, err.Error(), testSecret)
		})
	}
}

func TestVerifyGitLabHostile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		what   string
		hdr    http.Header
		reason string
	}{
		{"genuine", http.Header{"X-Gitlab-Token": {testSecret}}, ""},
		{"missing", http.Header{}, "missing"},
		{"empty", http.Header{"X-Gitlab-Token": {""}}, "missing"},
		{"wrong", http.Header{"X-Gitlab-Token": {"another-secret-0123456789abcdef"}}, "mismatch"},
		{"prefix of the secret", http.Header{"X-Gitlab-Token": {testSecret[:len(testSecret)-1]}}, "mismatch"},
		{"secret plus a suffix", http.Header{"X-Gitlab-Token": {testSecret + "x"}}, "mismatch"},
		{"other case", http.Header{"X-Gitlab-Token": {strings.ToUpper(testSecret)}}, "mismatch"},
		{"repeated", http.Header{"X-Gitlab-Token": {testSecret, testSecret}}, "repeated"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			t.Parallel()
			err := VerifyGitLab(NewSecret([]byte(testSecret)), tc.hdr)
			if tc.reason == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrUnauthenticated)
			require.ErrorContains(t, err, tc.reason)
			require.NotContains(t, err.Error(), testSecret)
		})
	}
}
