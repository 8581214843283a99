package policy_test

import (
	"path"
	"strings"
	"testing"

	"ciss.dev/gateway/internal/mtls"
	"ciss.dev/gateway/internal/policy"
)

// FuzzMatch checks that matching never panics, that a returned binding really
// matches every pattern it has, and that identities without any attribute
// never match.
func FuzzMatch(f *testing.F) {
	f.Add("spiffe://ciss.dev/tenant/acme/*", "", "", "", "spiffe://ciss.dev/tenant/acme/ci", "", "", "")
	f.Add("", "ci-*", "Acme", "build", "", "ci-1", "Acme", "build")
	f.Add("", "[a-", "", "", "", "a", "", "")
	f.Add("", "", "*", "", "", "", "", "")
	f.Add("", "\\*", "", "", "spiffe://x", "*", "", "")
	f.Fuzz(func(t *testing.T, mSPIFFE, mCN, mO, mOU, spiffe, cn, o, ou string) {
		b := policy.Binding{
			Name:   "b",
			Match:  policy.Match{SPIFFEID: mSPIFFE, CN: mCN, O: mO, OU: mOU},
			Tenant: "acme",
			Roles:  []policy.Role{policy.RoleReader},
		}
		p := &policy.Policy{Version: 1, Bindings: []policy.Binding{b}}
		id := mtls.Identity{SPIFFEID: spiffe, CommonName: cn}
		if o != "" {
			id.Organization = strings.Split(o, ",")
		}
		if ou != "" {
			id.OrganizationalUnit = strings.Split(ou, ",")
		}
		got, ok := p.Match(id)
		if !ok {
			return
		}
		if got.Match == (policy.Match{}) {
			t.Fatal("an empty match matched")
		}
		check := func(pattern string, values ...string) {
			if pattern == "" {
				return
			}
			for _, v := range values {
				if m, err := path.Match(pattern, v); err == nil && m && v != "" {
					return
				}
			}
			t.Fatalf("pattern %q matched none of %q", pattern, values)
		}
		check(mSPIFFE, spiffe)
		check(mCN, cn)
		check(mO, id.Organization...)
		check(mOU, id.OrganizationalUnit...)
	})
}

// FuzzParse checks that no document makes Parse panic, and that an accepted
// policy has only bindings with a non-empty match and a valid tenant.
func FuzzParse(f *testing.F) {
	f.Add([]byte("version: 1\nbindings:\n  - {name: a, match: {cn: x}, tenant: acme, roles: [reader]}\n"))
	f.Add([]byte("version: 1\nbindings: []\n"))
	f.Add([]byte("version: 1\nbindings:\n  - {name: a, match: {}, tenant: acme, roles: [reader]}\n"))
	f.Add([]byte("{\"version\": 1, \"bindings\": null}"))
	f.Add([]byte("- 1\n- 2\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		p, err := policy.Parse(doc)
		if err != nil {
			return
		}
		for _, b := range p.Bindings {
			if b.Match == (policy.Match{}) || b.Tenant == "" || len(b.Roles) == 0 {
				t.Fatalf("accepted invalid binding %+v", b)
			}
		}
	})
}
