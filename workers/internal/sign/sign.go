// Package sign holds the workers' signing keys and what they sign with them:
// DSSE envelopes over in-toto statements (signed results) and, through cosign
// as a library, image signatures and attestations in the image's registry.
//
// Keys are pluggable by reference, as cosign names them: a path to a cosign
// key file (encrypted "ENCRYPTED SIGSTORE PRIVATE KEY" PEM, the dev default)
// or "hashivault://NAME" for a HashiCorp Vault Transit key (VAULT_ADDR,
// VAULT_TOKEN and TRANSIT_SECRET_ENGINE_PATH from the environment, as cosign
// reads them). Keyless (Fulcio) signing needs an OIDC provider and is not
// offered.
package sign

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/kms"
	"github.com/sigstore/sigstore/pkg/signature/kms/hashivault"
	"github.com/sigstore/sigstore/pkg/signature/options"

	"ciss.dev/schemas"
)

// Key is a loaded signing key.
type Key struct {
	sv signature.SignerVerifier
	// ID is schemas.KeyIDOf the public key: what envelopes and GET /v1/keys name it by.
	ID string
	// PublicPEM is the PKIX "PUBLIC KEY" PEM, what `cosign verify --key` takes.
	PublicPEM []byte
	// Ref is the reference the key was loaded from (a path or a KMS URI).
	Ref string
}

// LogValue keeps the key material out of logs: only the reference and id.
func (k *Key) String() string { return fmt.Sprintf("key %s (%s)", k.ID, k.Ref) }

// Load loads the key ref names: a hashivault:// URI or a cosign key file,
// decrypted with password.
func Load(ctx context.Context, ref string, password []byte) (*Key, error) {
	var sv signature.SignerVerifier
	switch {
	case strings.HasPrefix(ref, hashivault.ReferenceScheme):
		var err error
		if sv, err = kms.Get(ctx, ref, crypto.SHA256); err != nil {
			return nil, fmt.Errorf("sign: vault transit key %s: %w", ref, err)
		}
	case strings.Contains(ref, "://"):
		return nil, fmt.Errorf("sign: key %q: only cosign key files and hashivault:// are supported", ref)
	default:
		pemBytes, err := os.ReadFile(ref)
		if err != nil {
			return nil, fmt.Errorf("sign: read key: %w", err)
		}
		if sv, err = cosign.LoadPrivateKey(pemBytes, password, nil); err != nil {
			return nil, fmt.Errorf("sign: load key %s: %w", ref, err)
		}
	}
	return fromSignerVerifier(ctx, ref, sv)
}

func fromSignerVerifier(ctx context.Context, ref string, sv signature.SignerVerifier) (*Key, error) {
	pub, err := sv.PublicKey(options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("sign: public key of %s: %w", ref, err)
	}
	id, err := schemas.KeyIDOf(pub)
	if err != nil {
		return nil, err
	}
	pemBytes, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		return nil, fmt.Errorf("sign: public key PEM: %w", err)
	}
	return &Key{sv: sv, ID: id, PublicPEM: pemBytes, Ref: ref}, nil
}

// PublicKey is the key's public half.
func (k *Key) PublicKey(ctx context.Context) (crypto.PublicKey, error) {
	return k.sv.PublicKey(options.WithContext(ctx))
}

// Sign signs msg (hashing it with SHA-256) and returns the raw signature.
func (k *Key) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	sig, err := k.sv.SignMessage(bytes.NewReader(msg), options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return sig, nil
}

// Envelope signs payload as a DSSE envelope of payloadType.
func (k *Key) Envelope(ctx context.Context, payloadType string, payload []byte) (*schemas.Envelope, error) {
	sig, err := k.Sign(ctx, schemas.PAE(payloadType, payload))
	if err != nil {
		return nil, err
	}
	return &schemas.Envelope{
		PayloadType: payloadType,
		Payload:     base64.StdEncoding.EncodeToString(payload),
		Signatures:  []schemas.EnvelopeSignature{{KeyID: k.ID, Sig: base64.StdEncoding.EncodeToString(sig)}},
	}, nil
}

// Key file names GenerateFiles writes.
const (
	PrivateKeyFile = "cosign.key"
	PublicKeyFile  = "cosign.pub"
)

// GenerateFiles writes a new cosign key pair (ECDSA P-256, the private key
// encrypted with password) into dir as cosign.key and cosign.pub, unless
// cosign.key already exists: dev keys live as long as the dev state, like the
// dev CA. It returns the private key path.
func GenerateFiles(dir string, password []byte) (string, error) {
	priv := filepath.Join(dir, PrivateKeyFile)
	if _, err := os.Stat(priv); err == nil {
		return priv, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	kp, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return password, nil })
	if err != nil {
		return "", fmt.Errorf("sign: generate key pair: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, PublicKeyFile), kp.PublicBytes, 0o644); err != nil {
		return "", err
	}
	// The private key last, renamed into place: its presence means both are complete.
	tmp := priv + ".tmp"
	if err := os.WriteFile(tmp, kp.PrivateBytes, 0o600); err != nil {
		return "", err
	}
	return priv, os.Rename(tmp, priv)
}
