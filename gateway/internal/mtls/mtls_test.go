package mtls_test

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"

	"ciss.dev/gateway/internal/certtest"
	"ciss.dev/gateway/internal/mtls"
	"github.com/stretchr/testify/require"
)

func TestIdentity(t *testing.T) {
	t.Parallel()
	ca := certtest.NewCA(t, "ca")
	both := ca.Issue(t, certtest.Options{CommonName: "ci", Organization: []string{"Acme"},
		URIs: []string{"https://example.com/x", "spiffe://ciss.dev/tenant/acme/ci"}})
	id := mtls.IdentityOf(both.Cert)
	require.Equal(t, "spiffe://ciss.dev/tenant/acme/ci", id.SPIFFEID)
	require.Equal(t, "ci", id.CommonName)
	require.Equal(t, "spiffe://ciss.dev/tenant/acme/ci", id.String(), "the SPIFFE ID comes first")

	subj := ca.Issue(t, certtest.Options{CommonName: "runner, 1", Organization: []string{"Acme"}, OrganizationalUnit: []string{"ci", "build"}})
	id = mtls.IdentityOf(subj.Cert)
	require.Empty(t, id.SPIFFEID)
	require.Equal(t, []string{"ci", "build"}, id.OrganizationalUnit)
	require.Equal(t, `CN=runner\, 1,OU=ci+OU=build,O=Acme`, id.String(), "RFC 2253, escaped")
	require.Equal(t, id.String(), id.LogValue().String())

	_, err := mtls.PeerIdentity(nil)
	require.ErrorIs(t, err, mtls.ErrNoClientCertificate)
	_, err = mtls.PeerIdentity(&tls.ConnectionState{})
	require.ErrorIs(t, err, mtls.ErrNoClientCertificate)
	got, err := mtls.PeerIdentity(&tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{subj.Cert, ca.Cert}}})
	require.NoError(t, err)
	require.Equal(t, "runner, 1", got.CommonName)
}

func TestReloader(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "ca")
	first := ca.Server(t)
	cert, key := first.WriteFiles(t, dir, "server")
	bundle := filepath.Join(dir, "ca.pem")
	certtest.WriteFile(t, bundle, ca.PEM)
	files := mtls.Files{CertFile: cert, KeyFile: key, ClientCAFile: bundle}

	r, err := mtls.NewReloader(files)
	require.NoError(t, err)
	cfg := r.TLSConfig()
	require.Equal(t, uint16(tls.VersionTLS13), cfg.MinVersion)
	require.Equal(t, tls.RequireAndVerifyClientCert, cfg.ClientAuth)
	per, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{})
	require.NoError(t, err)
	require.Equal(t, uint16(tls.VersionTLS13), per.MinVersion)
	require.Equal(t, tls.RequireAndVerifyClientCert, per.ClientAuth)
	require.Equal(t, first.Cert.Raw, per.Certificates[0].Certificate[0])

	// A key that does not match the certificate: keep the old pair.
	other := ca.Server(t)
	certtest.WriteFile(t, key, other.KeyPEM)
	var le *mtls.LoadError
	require.ErrorAs(t, r.Reload(), &le)
	require.Equal(t, "server certificate and key", le.What)
	require.Equal(t, first.Cert.Raw, r.Certificate().Certificate[0])

	// Both files replaced: the new pair applies to new handshakes.
	certtest.WriteFile(t, cert, other.CertPEM)
	require.NoError(t, r.Reload())
	per, err = cfg.GetConfigForClient(&tls.ClientHelloInfo{})
	require.NoError(t, err)
	require.Equal(t, other.Cert.Raw, per.Certificates[0].Certificate[0])

	// An empty or corrupt CA bundle is an error, not an empty pool.
	certtest.WriteFile(t, bundle, []byte("# nothing here\n"))
	require.ErrorIs(t, r.Reload(), mtls.ErrNoCertificates)
	certtest.WriteFile(t, bundle, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	require.ErrorContains(t, r.Reload(), "client CA bundle")

	_, err = mtls.NewReloader(mtls.Files{CertFile: cert, KeyFile: key, ClientCAFile: filepath.Join(dir, "missing")})
	require.Error(t, err)
}
