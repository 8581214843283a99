package api

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"strings"

	"ciss.dev/schemas"
)

// keys serves GET /v1/keys: the public keys results and images are signed
// with, and the ssh allowed-signers file for signed git tags, so anyone
// holding an identity can verify what CISS produced with standard tools
// (`cosign verify --key`, `git verify-tag`, schemas.VerifyTaskResult).
//
// The gateway never holds a private key: it publishes the PEM files it is
// configured with, read at each request so a rotation needs no restart.
func (h *Handler) keys(w http.ResponseWriter, _ *http.Request) error {
	out := schemas.Keys{Keys: []schemas.PublicKey{}}
	for _, f := range h.cfg.PublicKeyFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("api: public key file: %w", err)
		}
		keys, err := schemas.ParsePublicKeys(b)
		if err != nil {
			return fmt.Errorf("api: public key file %s: %w", f, err)
		}
		for _, k := range keys {
			id, err := schemas.KeyIDOf(k)
			if err != nil {
				return err
			}
			pemText, err := publicPEM(k)
			if err != nil {
				return err
			}
			out.Keys = append(out.Keys, schemas.PublicKey{ID: id, PEM: pemText})
		}
	}
	if f := h.cfg.AllowedSignersFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("api: allowed signers file: %w", err)
		}
		out.AllowedSigners = strings.TrimSpace(string(b)) + "\n"
	}
	w.Header().Set("Cache-Control", "no-cache")
	return writeJSON(w, http.StatusOK, out)
}

// publicPEM re-encodes a parsed key, so only the key itself is published,
// never other PEM blocks or comments of the file.
func publicPEM(k crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}
