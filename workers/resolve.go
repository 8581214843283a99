package workers

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// RegistryResolver resolves references against their registry with
// go-containerregistry, using the Docker config keychain for credentials. Plain
// HTTP is used only where go-containerregistry allows it by default (localhost,
// 127.0.0.1, *.local) unless Insecure is set.
type RegistryResolver struct {
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
	desc, err := remote.Head(parsed, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) {
			switch terr.StatusCode {
			case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden:
				return "", fmt.Errorf("%w: %w: %s: %w", ErrPermanent, ErrTargetNotFound, ref, err)
			}
		}
		return "", fmt.Errorf("resolve %s: %w", ref, err)
	}
	return desc.Digest.String(), nil
}
