package vaultaction

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"ciss.dev/schemas"
	"github.com/stretchr/testify/require"
)

// call is one request the documented-API server received.
type call struct{ Method, Path, Namespace string }

// enterpriseAPI answers like Vault Enterprise as its API documentation describes
// it (sys/health with "enterprise": true; sys/namespaces/:path; requests in a
// namespace carry X-Vault-Namespace) and records every call. It is a unit-test
// seam: Vault Enterprise cannot run here, and TestNamespacesUnsupported covers the
// real Community Edition server.
func enterpriseAPI(t *testing.T, failPath string) (*httptest.Server, func() []call) {
	var mu sync.Mutex
	var calls []call
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/v1/sys/health" {
			_, _ = io.WriteString(w, `{"initialized":true,"sealed":false,"standby":false,"enterprise":true,"version":"1.21.4+ent"}`)
			return
		}
		mu.Lock()
		calls = append(calls, call{r.Method, r.URL.Path, r.Header.Get("X-Vault-Namespace")})
		mu.Unlock()
		switch {
		case r.Method == http.MethodGet:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errors":[]}`)
		case r.URL.Path == failPath:
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"errors":["injected"]}`)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() []call { mu.Lock(); defer mu.Unlock(); return append([]call(nil), calls...) }
}

func TestNamespacePlanFollowsDocumentedAPI(t *testing.T) {
	srv, calls := enterpriseAPI(t, "")
	c := newClient(t, srv.URL, "s.ciss")
	e, err := New(Config{Client: c, NamespaceParent: "tenants/{tenant}"})
	require.NoError(t, err)
	a := parse(t, schemas.JobTypeVaultNamespaceCreate, "acme", map[string]string{"name": "payments", "token_ttl": "1h", "secret_id_ttl": "1h"})
	res, err := e.Run(context.Background(), a)
	require.NoError(t, err)
	want := []call{
		{"GET", "/v1/sys/namespaces/payments", "tenants/acme"},
		{"PUT", "/v1/sys/namespaces/payments", "tenants/acme"},
		{"PUT", "/v1/sys/policies/acl/baseline", "tenants/acme/payments"},
		{"PUT", "/v1/sys/auth/approle", "tenants/acme/payments"},
		{"PUT", "/v1/auth/approle/role/admin", "tenants/acme/payments"},
	}
	require.Equal(t, want, calls())
	require.Len(t, res.Applied, 4)
	b, _ := json.Marshal(res.Plan)
	require.Contains(t, string(b), `"token_policies":["baseline"]`)
	require.Contains(t, string(b), `secret/data/acme/*`)
}

func TestNamespaceRollback(t *testing.T) {
	srv, calls := enterpriseAPI(t, "/v1/auth/approle/role/admin")
	e, err := New(Config{Client: newClient(t, srv.URL, "s.ciss")})
	require.NoError(t, err)
	res, err := e.Run(context.Background(), parse(t, schemas.JobTypeVaultNamespaceCreate, "acme", map[string]string{"name": "payments"}))
	var se *StepError
	require.True(t, errors.As(err, &se), "%v", err)
	got := calls()
	require.Equal(t, call{"DELETE", "/v1/sys/namespaces/payments", "acme"}, got[len(got)-1])
	require.Len(t, res.RolledBack, 1)
	require.True(t, strings.Contains(err.Error(), "rolled back"))
}

func TestCheckPolicyRefusesEscapes(t *testing.T) {
	for _, p := range []string{
		`path "secret/data/other/x" {`,
		`path "sys/policies/acl/x" {`,
		`path "secret/data/acme/../other/x" {`,
		`path "secret/data/acme/{{identity.entity.id}}" {`,
		`path "secret/data/acme/+/x" {`,
		`path "secret/data/acmex/y" {`,
	} {
		require.ErrorIs(t, checkPolicy(p+"\n}", "secret", "acme"), ErrPolicyEscapes, p)
	}
	require.NoError(t, checkPolicy(`path "secret/data/acme/x/*" {`, "secret", "acme"))
}
