package client_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"ciss.dev/gateway/client"
	"ciss.dev/gateway/internal/certtest"
	"github.com/stretchr/testify/require"
)

// The end-to-end behaviour (TLS refusals, 403, retries across a gateway
// restart) is tested against the real gateway in internal/cli and test/e2e;
// these cover the rest.

func TestNewRefusesUnusableConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "ca")
	cert, key := ca.Issue(t, certtest.Options{CommonName: "ci", NotBefore: time.Now().Add(-2 * time.Hour),
		NotAfter: time.Now().Add(-time.Hour)}).WriteFiles(t, dir, "expired")
	future, futureKey := ca.Issue(t, certtest.Options{CommonName: "ci", NotBefore: time.Now().Add(time.Hour),
		NotAfter: time.Now().Add(2 * time.Hour)}).WriteFiles(t, dir, "future")
	for _, tc := range []struct {
		cfg  client.Config
		want string
	}{
		{client.Config{}, "URL is required"},
		{client.Config{URL: "ciss.example.com:8443"}, "is not an https://host:port URL"},
		{client.Config{URL: "http://ciss.example.com"}, "must use https"},
		{client.Config{URL: "https://h:1"}, "CertFile is required"},
		{client.Config{URL: "https://h:1", CertFile: cert, KeyFile: key}, "client certificate " + cert + " expired on "},
		{client.Config{URL: "https://h:1", CertFile: future, KeyFile: futureKey}, "is not valid before"},
		{client.Config{URL: "https://h:1", CertFile: filepath.Join(dir, "nope.pem"), KeyFile: key}, "no such file"},
	} {
		_, err := client.New(tc.cfg)
		require.ErrorContains(t, err, tc.want)
	}
	_, err := client.New(client.Config{URL: "https://h:1", CertFile: cert, KeyFile: key})
	require.ErrorIs(t, err, client.ErrCertificateExpired)
}

func TestIdentityOf(t *testing.T) {
	t.Parallel()
	u, _ := url.Parse("spiffe://ciss.dev/tenant/acme/ci")
	require.Equal(t, "spiffe://ciss.dev/tenant/acme/ci", client.IdentityOf(&x509.Certificate{URIs: []*url.URL{u}}))
	require.Equal(t, "CN=ci,O=Acme", client.IdentityOf(&x509.Certificate{Subject: pkix.Name{CommonName: "ci", Organization: []string{"Acme"}}}))
}

func TestRetryable(t *testing.T) {
	t.Parallel()
	require.True(t, client.Retryable(&client.TransportError{Op: "GET", Err: errors.New("connection refused")}))
	require.False(t, client.Retryable(&client.TransportError{Op: "GET", Err: context.Canceled}))
	for code, want := range map[int]bool{400: false, 403: false, 404: false, 429: true, 500: false, 502: true, 503: true, 504: true} {
		require.Equal(t, want, client.Retryable(&client.APIError{Status: code}), code)
	}
	require.False(t, client.Retryable(&client.TLSError{Reason: client.TLSServerUntrusted}))
}

func TestRetryGivesUpWithTheLastError(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	calls := 0
	err := client.Retry(ctx, client.RetryOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond},
		func(context.Context) error { calls++; return &client.APIError{Status: http.StatusServiceUnavailable} })
	var gu *client.GiveUpError
	require.ErrorAs(t, err, &gu)
	require.True(t, client.IsStatus(gu.LastErr, http.StatusServiceUnavailable))
	require.Greater(t, calls, 3)

	calls = 0
	err = client.Retry(context.Background(), client.RetryOptions{}, func(context.Context) error {
		calls++
		return &client.APIError{Status: http.StatusNotFound}
	})
	require.True(t, client.IsStatus(err, http.StatusNotFound))
	require.Equal(t, 1, calls, "a 404 is not retried")
}
