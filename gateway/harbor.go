package gateway

import (
	"net/http"
	"runtime/debug"

	"ciss.dev/gateway/internal/harbor"
)

// mountAPI puts the Harbor scanner adapter (Pluggable Scanner API, under
// /api/v1/) next to the job API (/v1/) on the mTLS listener: both share the
// listener's client-certificate authentication and the policy.
func (g *Gateway) mountAPI() (http.Handler, error) {
	hb, err := harbor.New(harbor.Config{
		Store:      g.store,
		Authorizer: g.policy,
		Metrics:    g.metrics,
		Logger:     g.log.With("component", "harbor"),
		Source:     g.cfg.Source,
		Version:    buildVersion(),
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", hb)
	mux.Handle("/", g.api)
	return mux, nil
}

// buildVersion is the gateway module's version, or "dev" in a work tree.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range append([]*debug.Module{&bi.Main}, bi.Deps...) {
			if m.Path == "ciss.dev/gateway" && m.Version != "" && m.Version != "(devel)" {
				return m.Version
			}
		}
	}
	return "dev"
}
