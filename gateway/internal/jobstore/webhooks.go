package jobstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/schemas"
)

// maxAuditPending bounds audit records published but not yet acknowledged;
// beyond it an audit publish stalls briefly and then fails (and is logged).
const maxAuditPending = 4096

// Audit reads are bounded: a page scans at most maxAuditScan stream
// sequences, in windows of auditWindow.
const (
	maxAuditScan = 20000
	auditWindow  = 500
)

// bindWebhooks checks the webhook and audit streams and binds the delivery
// bucket.
func bindWebhooks(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	for _, name := range []string{schemas.StreamWebhooks, schemas.StreamAudit} {
		if _, err := js.Stream(ctx, name); err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
	}
	kv, err := js.KeyValue(ctx, schemas.BucketWebhookDeliveries)
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", schemas.BucketWebhookDeliveries, err)
	}
	return kv, nil
}

func (s *Store) deliveries(op string) (jetstream.KeyValue, error) {
	h, err := s.handles()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if h.deliveries == nil {
		return nil, fmt.Errorf("%s: %w", op, ErrNotBound)
	}
	return h.deliveries, nil
}

// Delivered reports whether a webhook delivery key was recorded.
func (s *Store) Delivered(ctx context.Context, key string) (bool, error) {
	kv, err := s.deliveries("delivered " + key)
	if err != nil {
		return false, err
	}
	_, err = kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return false, nil
	case err != nil:
		return false, unavailable("delivered "+key, err)
	}
	return true, nil
}

// MarkDelivered records a webhook delivery key; created is false when it was
// recorded already.
func (s *Store) MarkDelivered(ctx context.Context, key string, value []byte) (bool, error) {
	kv, err := s.deliveries("mark delivered " + key)
	if err != nil {
		return false, err
	}
	_, err = kv.Create(ctx, key, value)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return false, nil
	case err != nil:
		return false, unavailable("mark delivered "+key, err)
	}
	return true, nil
}

// PublishWebhook stores a webhook event in the webhook stream with msgID as
// its deduplication id and returns once JetStream acknowledged it; duplicate
// reports that the stream already had that id. Failures wrap ErrUnavailable.
func (s *Store) PublishWebhook(ctx context.Context, subject, msgID string, data []byte) (bool, error) {
	if _, err := s.deliveries("publish " + subject); err != nil {
		return false, err
	}
	ack, err := s.js.Publish(ctx, subject, data, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(schemas.StreamWebhooks))
	if err != nil {
		return false, unavailable("publish "+subject, err)
	}
	return ack.Duplicate, nil
}

// Audit publishes an audit record to the audit stream without waiting for
// the acknowledgement; a failed acknowledgement is logged by the connection's
// asynchronous error handler.
func (s *Store) Audit(subject string, data []byte) error {
	if _, err := s.deliveries("audit " + subject); err != nil {
		return err
	}
	if _, err := s.js.PublishAsync(subject, data, jetstream.WithExpectStream(schemas.StreamAudit)); err != nil {
		return unavailable("audit "+subject, err)
	}
	return nil
}

// AuditEntry is one stored audit record.
type AuditEntry struct {
	// Sequence is the record's stream sequence.
	Sequence uint64
	// Data is the record as stored: a dev.ciss.webhook.audited.v1 event.
	Data []byte
}

// AuditRecords returns up to limit records of the audit stream whose subject
// matches filter (a subject with wildcards), newest first, from those with a
// sequence below before (0: from the newest). next is the before of the
// following page, 0 when there is none. One call scans at most maxAuditScan
// sequences; a sparse filter may therefore return a short page with a next.
// No audit stream (webhooks never enabled) reads as empty.
func (s *Store) AuditRecords(ctx context.Context, filter string, before uint64, limit int) (out []AuditEntry, next uint64, err error) {
	if !s.nc.IsConnected() {
		return nil, 0, fmt.Errorf("audit records: %w", ErrNotConnected)
	}
	st, err := s.js.Stream(ctx, schemas.StreamAudit)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, 0, nil
	case err != nil:
		return nil, 0, unavailable("audit records", err)
	}
	state := st.CachedInfo().State
	if state.Msgs == 0 || state.LastSeq < state.FirstSeq {
		return nil, 0, nil
	}
	first, hi := state.FirstSeq, state.LastSeq
	if before > 0 {
		if before <= first {
			return nil, 0, nil
		}
		hi = min(hi, before-1)
	}
	for scanned := uint64(0); len(out) < limit; {
		if scanned >= maxAuditScan {
			return out, hi + 1, nil
		}
		lo := first
		if hi-first >= auditWindow {
			lo = hi - auditWindow + 1
		}
		win, err := readRange(ctx, st, filter, lo, hi)
		if err != nil {
			return nil, 0, err
		}
		for i := len(win) - 1; i >= 0 && len(out) < limit; i-- {
			out = append(out, win[i])
		}
		scanned += hi - lo + 1
		if lo == first {
			if len(out) == limit && out[len(out)-1].Sequence > first && len(win) > 0 && win[0].Sequence < out[len(out)-1].Sequence {
				return out, out[len(out)-1].Sequence, nil
			}
			return out, 0, nil
		}
		hi = lo - 1
	}
	return out, out[len(out)-1].Sequence, nil
}

// readRange reads the messages matching filter with sequences lo..hi, in
// order, one direct get per match.
func readRange(ctx context.Context, st jetstream.Stream, filter string, lo, hi uint64) ([]AuditEntry, error) {
	var out []AuditEntry
	for seq := lo; seq <= hi; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return out, nil
		case err != nil:
			return nil, unavailable("audit records", err)
		}
		if m.Sequence > hi {
			return out, nil
		}
		out = append(out, AuditEntry{Sequence: m.Sequence, Data: m.Data})
		seq = m.Sequence + 1
	}
	return out, nil
}
