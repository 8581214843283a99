package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"ciss.dev/gateway"
	"ciss.dev/schemas"
)

func TestKeysPublishesPublicKeysOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	require.NoError(t, err)
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	require.NoError(t, err)
	// A careless operator's file: the public key next to a private one and a comment.
	keyFile := filepath.Join(dir, "cosign.pub")
	writeFile(t, keyFile, "operator note\n"+string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))+
		string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	signers := filepath.Join(dir, "allowed_signers")
	writeFile(t, signers, `ciss@ciss.dev namespaces="git" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb8`)
	missing := filepath.Join(dir, "missing.pub")

	e := setup(t, setupOpt{config: func(c *gateway.Config) {
		c.PublicKeyFiles = []string{keyFile}
		c.AllowedSignersFile = signers
	}})
	r := e.client(e.acme()).do(http.MethodGet, "/v1/keys", "")
	require.Equal(t, http.StatusOK, r.StatusCode, string(r.body))
	var keys schemas.Keys
	require.NoError(t, json.Unmarshal(r.body, &keys))
	require.Len(t, keys.Keys, 1)
	wantID, err := schemas.KeyIDOf(&priv.PublicKey)
	require.NoError(t, err)
	require.Equal(t, wantID, keys.Keys[0].ID)
	parsed, err := schemas.ParsePublicKeys([]byte(keys.Keys[0].PEM))
	require.NoError(t, err)
	require.True(t, priv.PublicKey.Equal(parsed[0]))
	require.NotContains(t, string(r.body), "PRIVATE", "never publish a private key")
	require.NotContains(t, string(r.body), "operator note")
	require.Contains(t, keys.AllowedSigners, `namespaces="git"`)

	// Without a binding: no keys.
	e.client(e.nobody()).do(http.MethodGet, "/v1/keys", "").problem(t, http.StatusForbidden, "forbidden")

	// A file that went missing is a server error, not an empty key list.
	bad := setup(t, setupOpt{config: func(c *gateway.Config) { c.PublicKeyFiles = []string{missing} }})
	bad.client(bad.acme()).do(http.MethodGet, "/v1/keys", "").problem(t, http.StatusInternalServerError, "internal")

	// Signing off: an empty list.
	off := setup(t)
	r = off.client(off.acme()).do(http.MethodGet, "/v1/keys", "")
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.JSONEq(t, `{"keys":[]}`, string(r.body))
}
