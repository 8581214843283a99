package jobstore

import (
	"context"

	"ciss.dev/schemas"
	"github.com/nats-io/nats.go/jetstream"
)

// AuditAction stores a protected-action audit record in the audit stream and
// returns once JetStream acknowledged it: a guardrail decision is not answered
// before its record is durable.
func (s *Store) AuditAction(ctx context.Context, subject string, data []byte) error {
	if _, err := s.handles(); err != nil {
		return err
	}
	if _, err := s.js.Publish(ctx, subject, data, jetstream.WithExpectStream(schemas.StreamAudit)); err != nil {
		return unavailable("audit "+subject, err)
	}
	return nil
}
