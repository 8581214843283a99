package workers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// RegistryResolver resolves references against their registry with
// go-containerregistry, using the Docker config keychain for credentials. Plain
// HTTP is used only where go-containerregistry allows it by default (localhost,
// 127.0.0.1, *.local) unless Insecure is set.
//
// A requester chooses the image reference, so the registry is untrusted input
// that makes the worker (and the tool) open connections: Allowed limits the
// registries, and link-local addresses (cloud metadata endpoints such as
// 169.254.169.254) are refused always, as literals and, for the worker's own
// requests, after DNS resolution at dial time. The tool's own pulls are not
// dial-guarded: deploy workers with an egress network policy too.
type RegistryResolver struct {
	// Allowed lists registry globs (path.Match against "host[:port]", e.g.
	// "registry.example.com", "*.corp.example:5000", "127.0.0.1:*"). Empty
	// allows any registry that is not in a forbidden address range.
	Allowed []string
	// Insecure allows plain HTTP and unverified TLS for every registry.
	Insecure bool
}

var _ Resolver = RegistryResolver{}

// Resolve returns the manifest digest of ref.
func (r RegistryResolver) Resolve(ctx context.Context, ref string) (string, error) {
	var opts []name.Option
	if r.Insecure {
		opts = append(opts, name.Insecure)
	}
	parsed, err := name.ParseReference(ref, append(opts, name.StrictValidation)...)
	if err != nil {
		return "", fmt.Errorf("%w: %w: %w", ErrPermanent, ErrInvalidTarget, err)
	}
	if err := r.Check(parsed.Context().RegistryStr()); err != nil {
		return "", err
	}
	desc, err := remote.Head(parsed, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithTransport(guardedTransport()))
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) {
			switch terr.StatusCode {
			case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden:
				return "", fmt.Errorf("%w: %w: %s: %w", ErrPermanent, ErrTargetNotFound, ref, err)
			}
		}
		if errors.Is(err, ErrTargetNotAllowed) {
			return "", fmt.Errorf("%w: %w", ErrPermanent, err)
		}
		return "", fmt.Errorf("resolve %s: %w", ref, err)
	}
	return desc.Digest.String(), nil
}

// Check tells whether a registry (host[:port]) may be contacted.
func (r RegistryResolver) Check(registry string) error {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	if ip, err := netip.ParseAddr(host); err == nil && forbiddenIP(ip) {
		return fmt.Errorf("%w: %w: %s is a link-local or unspecified address", ErrPermanent, ErrTargetNotAllowed, host)
	}
	if len(r.Allowed) == 0 {
		return nil
	}
	for _, glob := range r.Allowed {
		if ok, _ := path.Match(glob, registry); ok {
			return nil
		}
	}
	return fmt.Errorf("%w: %w: registry %q is not in the worker's allow-list", ErrPermanent, ErrTargetNotAllowed, registry)
}

// forbiddenIP reports addresses no registry should have: link-local (cloud
// metadata services live there), unspecified and multicast.
func forbiddenIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast()
}

// guardedTransport refuses to connect to forbidden addresses after DNS
// resolution, so a registry name pointing at a metadata endpoint fails too.
func guardedTransport() http.RoundTripper {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			if ip, err := netip.ParseAddr(host); err == nil && forbiddenIP(ip) {
				return fmt.Errorf("%w: dial %s: link-local or unspecified address", ErrTargetNotAllowed, address)
			}
			return nil
		}}
	t := remote.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = d.DialContext
	return t
}
