package sign_test

import (
	"bytes"
	"crypto"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	sigsig "github.com/sigstore/sigstore/pkg/signature"
	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/workers/internal/sign"
)

// vaultDev starts a real Vault server in dev mode on a loopback port
// (CISS_VAULT: the binary deploy/tools/install-vault.sh builds), enables the
// Transit engine and creates an ECDSA P-256 key; it returns the address and
// root token.
func vaultDev(t *testing.T, key string) (addr, token string) {
	t.Helper()
	bin := os.Getenv("CISS_VAULT")
	if cache := os.Getenv("CISS_CACHE"); bin == "" && cache != "" {
		// Where deploy/tools/install-vault.sh (make vault, .ci/run) puts it.
		if p := filepath.Join(cache, "vault", "v1.21.4", "vault"); fileExists(p) {
			bin = p
		}
	}
	if bin == "" {
		t.Skip("no Vault server binary: set CISS_VAULT, or build it with deploy/tools/install-vault.sh into $CISS_CACHE")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hostport := l.Addr().String()
	require.NoError(t, l.Close())
	token = "ciss-test-root"
	cmd := exec.Command(bin, "server", "-dev", "-dev-listen-address="+hostport, "-dev-root-token-id="+token, "-dev-no-store-token")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "VAULT_DISABLE_MLOCK=true")
	var out lockedBuffer // written by the process's copier, read here
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("vault output:\n%s", out.String())
		}
	})
	addr = "http://" + hostport
	call := func(method, path string, body any) (int, []byte) {
		var rd *bytes.Reader
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
		req, err := http.NewRequest(method, addr+path, rd)
		require.NoError(t, err)
		req.Header.Set("X-Vault-Token", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, []byte(err.Error())
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.Bytes()
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, _ := call(http.MethodGet, "/v1/sys/health", nil)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault not ready in 60s: %s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, b := call(http.MethodPost, "/v1/sys/mounts/transit", map[string]string{"type": "transit"})
	require.True(t, code/100 == 2, "enable transit: %d %s", code, b)
	code, b = call(http.MethodPost, "/v1/transit/keys/"+key, map[string]string{"type": "ecdsa-p256"})
	require.True(t, code/100 == 2, "create key: %d %s", code, b)
	return addr, token
}

// TestVaultTransitKey signs with a key that never leaves a real Vault
// (cosign's hashivault:// KMS) and verifies with the public key alone: a
// result envelope, and an image signature + vuln attestation (cosign library,
// and the cosign CLI when CISS_COSIGN is set).
func TestVaultTransitKey(t *testing.T) {
	addr, token := vaultDev(t, "ciss-signing")
	t.Setenv("VAULT_ADDR", addr)
	t.Setenv("VAULT_TOKEN", token)
	t.Setenv("TRANSIT_SECRET_ENGINE_PATH", "transit")
	ctx := t.Context()

	k, err := sign.Load(ctx, "hashivault://ciss-signing", nil)
	require.NoError(t, err)
	pub, err := k.PublicKey(ctx)
	require.NoError(t, err)
	env, err := k.Envelope(ctx, schemas.PayloadTypeInToto, []byte(`{"x":1}`))
	require.NoError(t, err)
	_, err = env.Verify(pub)
	require.NoError(t, err, "a Vault Transit signature verifies with the stdlib verifier")

	_, err = sign.Load(ctx, "hashivault://no-such-key", nil)
	require.Error(t, err, "a missing Transit key fails at load, not at the first job")

	s := setupSignedWith(t, k)
	v, err := sigsig.LoadVerifier(pub, crypto.SHA256)
	require.NoError(t, err)
	d, err := name.NewDigest(s.ref)
	require.NoError(t, err)
	co := &cosign.CheckOpts{SigVerifier: v, IgnoreTlog: true, IgnoreSCT: true}
	_, _, err = cosign.VerifyImageSignatures(ctx, d, co)
	require.NoError(t, err)
	_, _, err = cosign.VerifyImageAttestations(ctx, d, co)
	require.NoError(t, err)

	if os.Getenv("CISS_COSIGN") != "" {
		pubFile := filepath.Join(t.TempDir(), "vault.pub")
		require.NoError(t, os.WriteFile(pubFile, k.PublicPEM, 0o644))
		bin := cosignCLI(t)
		out, err := runCosign(t, bin, "verify", "--key", pubFile, s.ref)
		require.NoError(t, err, out)
		out, err = runCosign(t, bin, "verify-attestation", "--key", pubFile, "--type", "vuln", s.ref)
		require.NoError(t, err, out)
	}
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// lockedBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
