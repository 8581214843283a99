package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"strings"
)

// Identity is who a verified client certificate says the caller is.
type Identity struct {
	// SPIFFEID is the certificate's first URI SAN with the spiffe scheme, if any.
	SPIFFEID string
	// CommonName, Organization and OrganizationalUnit come from the subject.
	CommonName         string
	Organization       []string
	OrganizationalUnit []string
}

// IdentityOf derives the identity from a certificate. The certificate must
// already be verified; IdentityOf does not check anything.
func IdentityOf(c *x509.Certificate) Identity {
	id := Identity{
		CommonName:         c.Subject.CommonName,
		Organization:       c.Subject.Organization,
		OrganizationalUnit: c.Subject.OrganizationalUnit,
	}
	for _, u := range c.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") {
			id.SPIFFEID = u.String()
			break
		}
	}
	return id
}

// PeerIdentity returns the identity of the verified client certificate of a
// connection, or ErrNoClientCertificate.
func PeerIdentity(cs *tls.ConnectionState) (Identity, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, ErrNoClientCertificate
	}
	return IdentityOf(cs.VerifiedChains[0][0]), nil
}

// String is the identity recorded as a job's requester: the SPIFFE ID when
// there is one, otherwise the subject in RFC 2253 form ("CN=ci,OU=build,O=acme").
func (id Identity) String() string {
	if id.SPIFFEID != "" {
		return id.SPIFFEID
	}
	return pkix.Name{
		CommonName:         id.CommonName,
		Organization:       id.Organization,
		OrganizationalUnit: id.OrganizationalUnit,
	}.String()
}

// LogValue logs the identity as its string form.
func (id Identity) LogValue() slog.Value { return slog.StringValue(id.String()) }
