package vaultaction

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ciss.dev/schemas"
	"github.com/hashicorp/vault/api"
	"github.com/stretchr/testify/require"
)

// startVault starts the pinned real Vault (CISS_VAULT, from
// deploy/tools/install-vault.sh) in dev mode on loopback. It is a copy of
// test/vaultdev's few lines: the workers module does not depend on the test module.
func startVault(t *testing.T) (addr, root string) {
	t.Helper()
	bin := os.Getenv("CISS_VAULT")
	if bin == "" {
		t.Skip("CISS_VAULT is not set: run deploy/tools/install-vault.sh and export its output (make unit does)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hostport := l.Addr().String()
	require.NoError(t, l.Close())
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	root = "root-" + hex.EncodeToString(b)
	dir := t.TempDir()
	var out bytes.Buffer
	var mu sync.Mutex
	cmd := exec.Command(bin, "server", "-dev", "-dev-listen-address="+hostport, "-dev-root-token-id="+root, "-dev-no-store-token")
	cmd.Dir, cmd.Env = dir, []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH")}
	cmd.Stdout = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			mu.Lock()
			t.Logf("vault output:\n%s", out.String())
			mu.Unlock()
		}
	})
	addr = "http://" + hostport
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr, root
			}
		}
		select {
		case <-done:
			t.Fatalf("vault exited: %s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault not ready: %s", out.String())
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// env is a real Vault with CISS's AppRole bound to deploy/vault/ciss-policy.hcl,
// an executor logged in with it (not root), and a file audit device.
type env struct {
	root     *api.Client
	ciss     *api.Client
	exec     *Executor
	session  *Session
	logs     *bytes.Buffer
	auditLog string
	cissRole AppRole
}

func newClient(t *testing.T, addr, token string) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	require.NoError(t, err)
	c.SetToken(token)
	return c
}

func setup(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	addr, rootToken := startVault(t)
	root := newClient(t, addr, rootToken)
	e := &env{root: root, logs: &bytes.Buffer{}}
	e.auditLog = filepath.Join(t.TempDir(), "audit.log")
	require.NoError(t, root.Sys().EnableAuditWithOptionsWithContext(ctx, "file", &api.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": e.auditLog}}))
	hcl, err := os.ReadFile("../../../deploy/vault/ciss-policy.hcl")
	require.NoError(t, err)
	require.NoError(t, root.Sys().PutPolicyWithContext(ctx, "ciss", string(hcl)))
	require.NoError(t, root.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"}))
	_, err = root.Logical().WriteWithContext(ctx, "auth/approle/role/ciss", map[string]any{
		"token_policies": []string{"ciss"}, "token_ttl": "20m", "token_max_ttl": "1h"})
	require.NoError(t, err)
	e.cissRole = roleCreds(t, root, "approle", "ciss")
	e.ciss = newClient(t, addr, "")
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.session, err = Login(ctx, e.ciss, e.cissRole, log)
	require.NoError(t, err)
	e.exec, err = New(Config{Client: e.ciss, Logger: log})
	require.NoError(t, err)
	return e
}

func roleCreds(t *testing.T, c *api.Client, mount, role string) AppRole {
	t.Helper()
	r, err := c.Logical().Read("auth/" + mount + "/role/" + role + "/role-id")
	require.NoError(t, err)
	s, err := c.Logical().Write("auth/"+mount+"/role/"+role+"/secret-id", nil)
	require.NoError(t, err)
	return AppRole{Mount: mount, RoleID: r.Data["role_id"].(string), SecretID: s.Data["secret_id"].(string)}
}

func parse(t *testing.T, typ, tenant string, params map[string]string) *schemas.VaultAction {
	t.Helper()
	a, err := schemas.ParseVaultAction(typ, tenant, params)
	require.NoError(t, err)
	return a
}

func mountExists(t *testing.T, c *api.Client, mount string) bool {
	t.Helper()
	mounts, err := c.Sys().ListAuth()
	require.NoError(t, err)
	_, ok := mounts[mount+"/"]
	return ok
}

var approleParams = map[string]string{"name": "ci-deploy", "auth_type": "approle", "token_ttl": "15m",
	"token_max_ttl": "1h", "secret_id_ttl": "1h", "bound_cidrs": "127.0.0.0/8", "paths": "app/*", "capabilities": "read,list"}

// TestAppRoleOnboard: dry run, real run, login with the new role (reads only under
// the tenant prefix), second run is a no-op, and a change is an update.
func TestAppRoleOnboard(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	dry := parse(t, schemas.JobTypeVaultAuthOnboard, "acme", with(approleParams, "dry_run", "true"))
	res, err := e.exec.Run(ctx, dry)
	require.NoError(t, err)
	require.True(t, res.DryRun)
	require.False(t, res.Changed)
	require.Len(t, res.Plan.Steps, 3, res.Plan.Summary)
	require.Equal(t, "sys/auth/ciss/acme/ci-deploy", res.Plan.Steps[0].Path)
	require.Equal(t, "sys/policies/acl/ciss.acme.ci-deploy", res.Plan.Steps[1].Path)
	require.Equal(t, "auth/ciss/acme/ci-deploy/role/default", res.Plan.Steps[2].Path)
	require.False(t, mountExists(t, e.root, "ciss/acme/ci-deploy"), "a dry run changed Vault")

	a := parse(t, schemas.JobTypeVaultAuthOnboard, "acme", approleParams)
	res, err = e.exec.Run(ctx, a)
	require.NoError(t, err)
	require.True(t, res.Changed)
	require.Len(t, res.Applied, 3)
	require.True(t, mountExists(t, e.root, "ciss/acme/ci-deploy"))

	again, err := e.exec.Run(ctx, a)
	require.NoError(t, err)
	require.False(t, again.Changed)
	require.Empty(t, again.Plan.Steps)
	require.Equal(t, "no changes", again.Plan.Summary)

	// The team logs in with its new role and reads only under acme/app/.
	_, err = e.root.Logical().Write("secret/data/acme/app/db", map[string]any{"data": map[string]any{"pw": "x"}})
	require.NoError(t, err)
	_, err = e.root.Logical().Write("secret/data/other/app/db", map[string]any{"data": map[string]any{"pw": "y"}})
	require.NoError(t, err)
	team := newClient(t, e.root.Address(), "")
	_, err = Login(ctx, team, roleCreds(t, e.root, "ciss/acme/ci-deploy", "default"), nil)
	require.NoError(t, err)
	s, err := team.Logical().Read("secret/data/acme/app/db")
	require.NoError(t, err)
	require.Equal(t, "x", s.Data["data"].(map[string]any)["pw"])
	for _, p := range []string{"secret/data/other/app/db", "secret/data/acme/other", "sys/policies/acl/ciss"} {
		_, err = team.Logical().Read(p)
		requireStatus(t, err, http.StatusForbidden, p)
	}
	_, err = team.Logical().Write("secret/data/acme/app/new", map[string]any{"data": map[string]any{"a": "b"}})
	requireStatus(t, err, http.StatusForbidden, "write with read,list")

	// A changed TTL is an update of the role only.
	up, err := e.exec.Run(ctx, parse(t, schemas.JobTypeVaultAuthOnboard, "acme", with(approleParams, "token_ttl", "20m")))
	require.NoError(t, err)
	require.Len(t, up.Applied, 1)
	require.Equal(t, "update token_ttl", up.Applied[0].Change)
}

func requireStatus(t *testing.T, err error, status int, what string) {
	t.Helper()
	var re *api.ResponseError
	require.True(t, errors.As(err, &re), "%s: want HTTP %d, got %v", what, status, err)
	require.Equal(t, status, re.StatusCode, what)
}

// TestRollback fails the last step of a real run and checks that Vault is back to
// where it was: the new mount and policy are gone; an updated policy is restored.
func TestRollback(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	boom := errors.New("injected failure")
	e.exec.beforeStep = func(i int, s Step) error {
		if strings.Contains(s.Path, "/role/") {
			return boom
		}
		return nil
	}
	res, err := e.exec.Run(ctx, parse(t, schemas.JobTypeVaultAuthOnboard, "acme", approleParams))
	require.ErrorIs(t, err, boom)
	var se *StepError
	require.ErrorAs(t, err, &se)
	require.Empty(t, se.RollbackErrs)
	require.Len(t, res.RolledBack, 2)
	require.False(t, res.Changed)
	require.False(t, mountExists(t, e.root, "ciss/acme/ci-deploy"))
	p, err := e.root.Sys().GetPolicy("ciss.acme.ci-deploy")
	require.NoError(t, err)
	require.Empty(t, p, "policy created by a failed run survived")

	// With the mount and policy in place, a failing role update restores the policy.
	e.exec.beforeStep = nil
	_, err = e.exec.Run(ctx, parse(t, schemas.JobTypeVaultAuthOnboard, "acme", approleParams))
	require.NoError(t, err)
	before, err := e.root.Sys().GetPolicy("ciss.acme.ci-deploy")
	require.NoError(t, err)
	e.exec.beforeStep = func(i int, s Step) error {
		if strings.Contains(s.Path, "/role/") {
			return boom
		}
		return nil
	}
	_, err = e.exec.Run(ctx, parse(t, schemas.JobTypeVaultAuthOnboard, "acme", with(approleParams, "capabilities", "read,list,create", "token_ttl", "5m")))
	require.ErrorIs(t, err, boom)
	after, err := e.root.Sys().GetPolicy("ciss.acme.ci-deploy")
	require.NoError(t, err)
	require.Equal(t, before, after)
	role, err := e.root.Logical().Read("auth/ciss/acme/ci-deploy/role/default")
	require.NoError(t, err)
	require.EqualValues(t, json.Number("900"), role.Data["token_ttl"])
}

// TestJWTAndKubernetes onboards the other auth types for real and reads back what
// Vault stored.
func TestJWTAndKubernetes(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	pub, priv := ecKey(t)
	jwtParams := map[string]string{"name": "ci-gitlab", "auth_type": "jwt", "jwt_validation_pubkeys": pub,
		"bound_issuer": "https://gitlab.example.com", "bound_audiences": "vault", "bound_claims": "project_path=acme/payments",
		"token_ttl": "10m", "paths": "ci/*"}
	res, err := e.exec.Run(ctx, parse(t, schemas.JobTypeVaultAuthOnboard, "acme", jwtParams))
	require.NoError(t, err)
	require.Len(t, res.Applied, 4, res.Plan.Summary) // mount, config, policy, role
	again, err := e.exec.Run(ctx, parse(t, schemas.JobTypeVaultAuthOnboard, "acme", jwtParams))
	require.NoError(t, err)
	require.Equal(t, "no changes", again.Plan.Summary)

	// A CI job's token with the bound claim logs in; one for another project does not.
	_, err = e.root.Logical().Write("secret/data/acme/ci/key", map[string]any{"data": map[string]any{"k": "v"}})
	require.NoError(t, err)
	login := func(project string) (*api.Secret, error) {
		tok := signJWT(t, priv, map[string]any{"iss": "https://gitlab.example.com", "aud": "vault", "sub": "job-1",
			"project_path": project, "exp": time.Now().Add(time.Minute).Unix(), "iat": time.Now().Unix()})
		return newClient(t, e.root.Address(), "").Logical().Write("auth/ciss/acme/ci-gitlab/login", map[string]any{"role": "default", "jwt": tok})
	}
	s, err := login("acme/payments")
	require.NoError(t, err)
	require.Contains(t, s.Auth.Policies, "ciss.acme.ci-gitlab")
	_, err = login("evil/payments")
	require.Error(t, err)

	k8s := map[string]string{"name": "cluster", "auth_type": "kubernetes", "kubernetes_host": "https://127.0.0.1:6443",
		"bound_service_account_names": "deployer", "bound_service_account_namespaces": "acme-prod", "token_ttl": "10m"}
	res, err = e.exec.Run(ctx, parse(t, schemas.JobTypeVaultAuthOnboard, "acme", k8s))
	require.NoError(t, err)
	require.Len(t, res.Applied, 4)
	role, err := e.root.Logical().Read("auth/ciss/acme/cluster/role/default")
	require.NoError(t, err)
	require.Equal(t, []any{"deployer"}, role.Data["bound_service_account_names"])
	again, err = e.exec.Run(ctx, parse(t, schemas.JobTypeVaultAuthOnboard, "acme", k8s))
	require.NoError(t, err)
	require.Equal(t, "no changes", again.Plan.Summary)

	// A mount of another type at the derived path is a conflict, not a replacement.
	_, err = e.exec.Run(ctx, parse(t, schemas.JobTypeVaultAuthOnboard, "acme", with(approleParams, "name", "cluster")))
	require.ErrorIs(t, err, ErrConflict)
}

// TestNamespacesUnsupported: Vault Community Edition has no namespaces; the action
// fails with the specific error and changes nothing, dry run or not.
func TestNamespacesUnsupported(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	ok, err := e.exec.NamespacesSupported(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	for _, dry := range []string{"true", "false"} {
		_, err = e.exec.Run(ctx, parse(t, schemas.JobTypeVaultNamespaceCreate, "acme", map[string]string{"name": "payments", "dry_run": dry}))
		require.ErrorIs(t, err, ErrNamespacesUnsupported)
	}
}

// TestPolicyApply creates and updates a tenant policy with the CISS token.
func TestPolicyApply(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	p := map[string]string{"name": "readers", "paths": "a/*,b", "capabilities": "read"}
	res, err := e.exec.Run(ctx, parse(t, schemas.JobTypeVaultPolicyApply, "acme", p))
	require.NoError(t, err)
	require.Len(t, res.Applied, 1)
	got, err := e.root.Sys().GetPolicy("ciss.acme.readers")
	require.NoError(t, err)
	require.Contains(t, got, `path "secret/data/acme/a/*"`)
	res, err = e.exec.Run(ctx, parse(t, schemas.JobTypeVaultPolicyApply, "acme", with(p, "capabilities", "read,list")))
	require.NoError(t, err)
	require.Equal(t, "update policy", res.Applied[0].Change)
}

// TestTokensNeverLeak runs actions and a renewal, then looks for every token and
// secret ID in CISS's logs and results.
func TestTokensNeverLeak(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	res, err := e.exec.Run(ctx, parse(t, schemas.JobTypeVaultAuthOnboard, "acme", approleParams))
	require.NoError(t, err)
	out, err := json.Marshal(res)
	require.NoError(t, err)
	for _, secret := range []string{e.ciss.Token(), e.cissRole.SecretID, e.cissRole.RoleID} {
		require.NotContains(t, string(out), secret)
		require.NotContains(t, e.logs.String(), secret)
	}
	require.Contains(t, e.logs.String(), "vault call") // the log is not empty
}

// TestSessionRenewsAndRelogs gives CISS a short-lived token and checks that the
// session keeps the client usable past its max TTL by renewing and logging in again.
func TestSessionRenewsAndRelogs(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := e.root.Logical().Write("auth/approle/role/short", map[string]any{
		"token_policies": []string{"ciss"}, "token_ttl": "2s", "token_max_ttl": "4s"})
	require.NoError(t, err)
	c := newClient(t, e.root.Address(), "")
	s, err := Login(ctx, c, roleCreds(t, e.root, "approle", "short"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	first := c.Token()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for c.Token() == first {
		require.True(t, time.Now().Before(deadline), "no re-login after the max TTL")
		time.Sleep(100 * time.Millisecond)
	}
	_, err = c.Auth().Token().LookupSelf()
	require.NoError(t, err)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

func with(base map[string]string, kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

var _ = strconv.Itoa
