package workers

import (
	"context"
	"errors"
	"testing"
)

// TestRegistryAllowList checks the SSRF guard on hostile registry names before
// any connection is made.
func TestRegistryAllowList(t *testing.T) {
	t.Parallel()
	open := RegistryResolver{}
	listed := RegistryResolver{Allowed: []string{"registry.example.com", "127.0.0.1:*", "*.corp.example:5000"}}
	for _, c := range []struct {
		r        RegistryResolver
		registry string
		allowed  bool
	}{
		{open, "registry.example.com", true},
		{open, "127.0.0.1:5000", true},
		{open, "169.254.169.254", false},    // cloud metadata
		{open, "169.254.169.254:80", false}, // with a port
		{open, "[fe80::1]:5000", false},     // IPv6 link-local
		{open, "0.0.0.0:5000", false},
		{open, "[::ffff:169.254.169.254]:80", false}, // v4-mapped
		{listed, "registry.example.com", true},
		{listed, "registry.example.com:443", false}, // globs match host[:port] exactly
		{listed, "127.0.0.1:5000", true},
		{listed, "a.corp.example:5000", true},
		{listed, "a.b.corp.example:5000", true},
		{listed, "evil.example.com", false},
		{listed, "169.254.169.254", false},
	} {
		err := c.r.Check(c.registry)
		if got := err == nil; got != c.allowed {
			t.Errorf("Check(%q) with %v: allowed=%v, want %v (err %v)", c.registry, c.r.Allowed, got, c.allowed, err)
		}
		if err != nil && (!errors.Is(err, ErrTargetNotAllowed) || !errors.Is(err, ErrPermanent)) {
			t.Errorf("Check(%q): %v does not wrap ErrTargetNotAllowed and ErrPermanent", c.registry, err)
		}
	}
}

// TestResolveRefusesMetadataBeforeConnecting: Resolve fails permanently on a
// metadata address without a network round trip (the context is already done,
// so any dial attempt would fail differently).
func TestResolveRefusesMetadataBeforeConnecting(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := RegistryResolver{}.Resolve(ctx, "169.254.169.254/latest/meta-data:1")
	if !errors.Is(err, ErrTargetNotAllowed) || !errors.Is(err, ErrPermanent) {
		t.Fatalf("Resolve: %v, want ErrTargetNotAllowed and ErrPermanent", err)
	}
}
