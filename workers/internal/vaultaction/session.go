package vaultaction

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/vault/api"
)

// AppRole is CISS's own Vault identity. SecretID is a credential: it is never
// logged (LogValue) and never part of a result.
type AppRole struct {
	// Mount is the AppRole mount path; default "approle".
	Mount string
	// RoleID and SecretID are the login pair.
	RoleID   string
	SecretID string
}

// LogValue keeps the secret ID out of logs.
func (a AppRole) LogValue() slog.Value {
	return slog.GroupValue(slog.String("mount", cmp.Or(a.Mount, "approle")), slog.String("role_id", "<redacted>"))
}

// Session keeps a Vault client logged in with an AppRole: it logs in, renews the
// token while it is renewable, and logs in again when it is not.
type Session struct {
	client *api.Client
	role   AppRole
	log    *slog.Logger
	secret *api.Secret
}

// Login logs c in with role and returns a Session. The token is set on c.
func Login(ctx context.Context, c *api.Client, role AppRole, log *slog.Logger) (*Session, error) {
	s := &Session{client: c, role: role, log: cmp.Or(log, slog.Default())}
	if err := s.login(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Session) login(ctx context.Context) error {
	c := s.client
	c.ClearToken()
	sec, err := c.Logical().WriteWithContext(ctx, "auth/"+cmp.Or(s.role.Mount, "approle")+"/login",
		map[string]any{"role_id": s.role.RoleID, "secret_id": s.role.SecretID})
	if err != nil {
		return fmt.Errorf("vaultaction: approle login: %w", err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return errors.New("vaultaction: approle login returned no token")
	}
	c.SetToken(sec.Auth.ClientToken)
	s.secret = sec
	s.log.InfoContext(ctx, "vault login", "role", s.role, "policies", sec.Auth.Policies,
		"ttl", time.Duration(sec.Auth.LeaseDuration)*time.Second, "renewable", sec.Auth.Renewable)
	return nil
}

// Run renews the token until ctx ends, logging in again whenever renewal stops
// (max TTL reached, token revoked). It returns ctx's cause.
func (s *Session) Run(ctx context.Context) error {
	backoff := time.Second
	for {
		w, err := s.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: s.secret})
		if err != nil {
			return fmt.Errorf("vaultaction: lifetime watcher: %w", err)
		}
		go w.Start()
	watch:
		for {
			select {
			case <-ctx.Done():
				w.Stop()
				return context.Cause(ctx)
			case r := <-w.RenewCh():
				s.log.DebugContext(ctx, "vault token renewed", "ttl", time.Duration(r.Secret.Auth.LeaseDuration)*time.Second)
			case err := <-w.DoneCh():
				if err != nil {
					s.log.WarnContext(ctx, "vault token renewal stopped", "error", err)
				}
				break watch
			}
		}
		w.Stop()
		for {
			if err := s.login(ctx); err == nil {
				backoff = time.Second
				break
			} else {
				s.log.WarnContext(ctx, "vault login failed", "error", err, "retry_in", backoff)
			}
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Minute)
		}
	}
}
