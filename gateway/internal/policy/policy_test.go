package policy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ciss.dev/gateway/internal/mtls"
	"ciss.dev/gateway/internal/policy"
	"github.com/stretchr/testify/require"
)

const acme = `
version: 1
bindings:
  - name: acme-ci
    match: {spiffe_id: "spiffe://ciss.dev/tenant/acme/*"}
    tenant: acme
    roles: [submitter, reader]
  - name: acme-dash
    match: {cn: "dash*", o: "Acme", ou: "sec"}
    tenant: acme
    roles: [reader]
  - name: fallback-acme
    match: {o: "Acme"}
    tenant: acme-other
    roles: [admin]
`

func TestExamplePolicyIsValid(t *testing.T) {
	t.Parallel()
	p, err := policy.Load(filepath.Join("..", "..", "testdata", "policy.yaml"))
	require.NoError(t, err)
	require.Len(t, p.Bindings, 3)
}

func TestMatch(t *testing.T) {
	t.Parallel()
	p, err := policy.Parse([]byte(acme))
	require.NoError(t, err)
	for _, tc := range []struct {
		name    string
		id      mtls.Identity
		binding string // "" = no match
	}{
		{"spiffe", mtls.Identity{SPIFFEID: "spiffe://ciss.dev/tenant/acme/ci"}, "acme-ci"},
		{"spiffe star does not cross slash", mtls.Identity{SPIFFEID: "spiffe://ciss.dev/tenant/acme/ci/x"}, ""},
		{"spiffe other tenant", mtls.Identity{SPIFFEID: "spiffe://ciss.dev/tenant/globex/ci"}, ""},
		{"all subject fields", mtls.Identity{CommonName: "dashboard", Organization: []string{"Acme"}, OrganizationalUnit: []string{"x", "sec"}}, "acme-dash"},
		{"first match wins", mtls.Identity{CommonName: "other", Organization: []string{"Acme"}}, "fallback-acme"},
		{"one field missing falls through", mtls.Identity{CommonName: "dashboard", Organization: []string{"Acme"}}, "fallback-acme"},
		{"nothing", mtls.Identity{CommonName: "dashboard"}, ""},
		{"empty identity", mtls.Identity{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, ok := p.Match(tc.id)
			if tc.binding == "" {
				require.False(t, ok, "matched %+v", b)
				return
			}
			require.True(t, ok)
			require.Equal(t, tc.binding, b.Name)
		})
	}
}

func TestRoles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		roles        []policy.Role
		read, submit bool
	}{
		{[]policy.Role{policy.RoleReader}, true, false},
		{[]policy.Role{policy.RoleSubmitter}, false, true},
		{[]policy.Role{policy.RoleAdmin}, true, true},
		{[]policy.Role{policy.RoleReader, policy.RoleSubmitter}, true, true},
		{nil, false, false},
	} {
		b := &policy.Binding{Roles: tc.roles}
		require.Equal(t, tc.read, b.Can(policy.ActionRead), "%v read", tc.roles)
		require.Equal(t, tc.submit, b.Can(policy.ActionSubmit), "%v submit", tc.roles)
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	binding := func(s string) string {
		return "version: 1\nbindings:\n  - " + strings.ReplaceAll(s, "\n", "\n    ") + "\n"
	}
	ok := "name: a\nmatch: {cn: x}\ntenant: acme\nroles: [reader]"
	require.NotPanics(t, func() { _, err := policy.Parse([]byte(binding(ok))); require.NoError(t, err) })
	for _, tc := range []struct{ name, doc, want string }{
		{"version", "version: 2\nbindings: []\n", "version"},
		{"no version", "bindings: []\n", "version"},
		{"unknown top field", "version: 1\nbindingz: []\n", "unknown field"},
		{"unknown match field", binding("name: a\nmatch: {cn: x, spiffe: y}\ntenant: acme\nroles: [reader]"), "unknown field"},
		{"duplicate key", binding("name: a\nname: b\nmatch: {cn: x}\ntenant: acme\nroles: [reader]"), "name"},
		{"empty match", binding("name: a\nmatch: {}\ntenant: acme\nroles: [reader]"), "bindings[0].match"},
		{"missing match", binding("name: a\ntenant: acme\nroles: [reader]"), "bindings[0].match"},
		{"bad glob", binding("name: a\nmatch: {cn: \"x[\"}\ntenant: acme\nroles: [reader]"), "bindings[0].match.cn"},
		{"bad tenant", binding("name: a\nmatch: {cn: x}\ntenant: Acme\nroles: [reader]"), "bindings[0].tenant"},
		{"tenant with dot", binding("name: a\nmatch: {cn: x}\ntenant: a.b\nroles: [reader]"), "bindings[0].tenant"},
		{"no roles", binding("name: a\nmatch: {cn: x}\ntenant: acme\nroles: []"), "bindings[0].roles"},
		{"unknown role", binding("name: a\nmatch: {cn: x}\ntenant: acme\nroles: [root]"), "bindings[0].roles[0]"},
		{"no name", binding("match: {cn: x}\ntenant: acme\nroles: [reader]"), "bindings[0].name"},
		{"not yaml", "version: [1\n", "invalid policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := policy.Parse([]byte(tc.doc))
			require.ErrorIs(t, err, policy.ErrInvalid)
			require.ErrorContains(t, err, tc.want)
		})
	}
	dup := "version: 1\nbindings:\n  - {name: a, match: {cn: x}, tenant: acme, roles: [reader]}\n  - {name: a, match: {cn: y}, tenant: acme, roles: [reader]}\n"
	_, err := policy.Parse([]byte(dup))
	require.ErrorContains(t, err, "bindings[1].name")
}

func TestFileReloadKeepsPolicyOnError(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	require.NoError(t, os.WriteFile(path, []byte(acme), 0o600))
	f, err := policy.OpenFile(path)
	require.NoError(t, err)
	id := mtls.Identity{SPIFFEID: "spiffe://ciss.dev/tenant/acme/ci"}
	_, ok := f.Match(id)
	require.True(t, ok)

	require.NoError(t, os.WriteFile(path, []byte("version: 1\nbindings: [{name: x}]\n"), 0o600))
	require.Error(t, f.Reload())
	_, ok = f.Match(id)
	require.True(t, ok, "a failed reload must keep the old policy")

	require.NoError(t, os.WriteFile(path, []byte("version: 1\nbindings: []\n"), 0o600))
	require.NoError(t, f.Reload())
	_, ok = f.Match(id)
	require.False(t, ok, "an empty policy denies everyone")

	_, err = policy.OpenFile(filepath.Join(t.TempDir(), "missing.yaml"))
	require.Error(t, err)
}

func BenchmarkPolicyMatch(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("version: 1\nbindings:\n")
	for i := range 50 {
		sb.WriteString("  - {name: t" + string(rune('a'+i%26)) + strings.Repeat("x", i/26) +
			", match: {spiffe_id: \"spiffe://ciss.dev/tenant/t" + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + "/*\", ou: \"ci-*\"}, tenant: acme, roles: [reader]}\n")
	}
	p, err := policy.Parse([]byte(sb.String()))
	require.NoError(b, err)
	id := mtls.Identity{SPIFFEID: "spiffe://ciss.dev/tenant/txx/build", OrganizationalUnit: []string{"ci-main"}} // the last binding
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := p.Match(id); !ok {
			b.Fatal("no match")
		}
	}
}
