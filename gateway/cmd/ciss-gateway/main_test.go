package main

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"CISS_GATEWAY_API_ADDR":        "0.0.0.0:8443",
		"CISS_GATEWAY_POLICY":          "/etc/ciss/policy.yaml",
		"CISS_GATEWAY_MAX_WAIT":        "45s",
		"CISS_GATEWAY_TLS_CERT":        "/env/cert.pem",
		"CISS_GATEWAY_LOG_LEVEL":       "debug",
		"CISS_GATEWAY_RELOAD_INTERVAL": "5s",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, opt, err := parseConfig([]string{"-tls-cert", "/flag/cert.pem", "-nats-url", "nats://n:4222"}, lookup, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0:8443", cfg.APIAddr)
	require.Equal(t, "/etc/ciss/policy.yaml", cfg.PolicyFile)
	require.Equal(t, "/flag/cert.pem", cfg.TLSCertFile, "flags win over the environment")
	require.Equal(t, "nats://n:4222", cfg.NATSURL)
	require.Equal(t, 45*time.Second, cfg.MaxWait)
	require.Equal(t, 5*time.Second, cfg.ReloadInterval)
	require.Equal(t, slog.LevelDebug, opt.logLevel)
	require.Empty(t, cfg.AdminAddr, "unset means the gateway default")

	env["CISS_GATEWAY_MAX_WAIT"] = "forever"
	_, _, err = parseConfig(nil, lookup, io.Discard)
	require.ErrorContains(t, err, "CISS_GATEWAY_MAX_WAIT")

	_, _, err = parseConfig([]string{"extra"}, func(string) (string, bool) { return "", false }, io.Discard)
	require.Error(t, err)
}
