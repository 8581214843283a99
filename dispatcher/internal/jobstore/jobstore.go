// Package jobstore reads and changes job state in the job KV bucket with
// optimistic concurrency, so the gateway (cancel) and the dispatcher (progress)
// never overwrite each other's transitions.
package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/schemas"
)

// ErrUnchanged is returned by a mutate function to say no write is needed.
var ErrUnchanged = errors.New("job state unchanged")

// maxConflicts bounds compare-and-set retries against concurrent writers.
const maxConflicts = 10

// Store is the job state bucket.
type Store struct {
	kv jetstream.KeyValue
}

// New wraps a bound job state bucket.
func New(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// Get returns a job and its revision. A missing job is jetstream.ErrKeyNotFound.
func (s *Store) Get(ctx context.Context, tenant, id string) (schemas.Job, uint64, error) {
	e, err := s.kv.Get(ctx, schemas.JobKey(tenant, id))
	if err != nil {
		return schemas.Job{}, 0, fmt.Errorf("get job %s: %w", id, err)
	}
	var j schemas.Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return schemas.Job{}, 0, fmt.Errorf("decode job %s: %w", id, err)
	}
	return j, e.Revision(), nil
}

// Ensure creates the job's state if it does not exist yet and returns the stored
// state. The gateway normally creates it; this covers a gateway that published
// the request but failed to write the state.
func (s *Store) Ensure(ctx context.Context, j schemas.Job) (schemas.Job, error) {
	b, err := json.Marshal(j)
	if err != nil {
		return j, fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	if _, err := s.kv.Create(ctx, schemas.JobKey(j.Tenant, j.ID), b); err == nil {
		return j, nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return j, fmt.Errorf("create job %s: %w", j.ID, err)
	}
	cur, _, err := s.Get(ctx, j.Tenant, j.ID)
	return cur, err
}

// Update applies mutate to the current state and writes it back if nobody wrote
// in between, retrying on conflict. mutate may return ErrUnchanged to skip the
// write; Update then returns the state as read and a nil error.
func (s *Store) Update(ctx context.Context, tenant, id string, mutate func(*schemas.Job) error) (schemas.Job, error) {
	for attempt := range maxConflicts {
		if attempt > 0 {
			// Jittered backoff so contending writers stop colliding.
			select {
			case <-ctx.Done():
				return schemas.Job{}, fmt.Errorf("update job %s: %w", id, context.Cause(ctx))
			case <-time.After(time.Duration(rand.Int64N(int64(attempt) * int64(2*time.Millisecond)))):
			}
		}
		j, rev, err := s.Get(ctx, tenant, id)
		if err != nil {
			return j, err
		}
		if err := mutate(&j); errors.Is(err, ErrUnchanged) {
			return j, nil
		} else if err != nil {
			return j, err
		}
		b, err := json.Marshal(j)
		if err != nil {
			return j, fmt.Errorf("encode job %s: %w", id, err)
		}
		_, err = s.kv.Update(ctx, schemas.JobKey(tenant, id), b, rev)
		if err == nil {
			return j, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) { // wrong last sequence
			var apiErr *jetstream.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
				return j, fmt.Errorf("update job %s: %w", id, err)
			}
		}
	}
	return schemas.Job{}, fmt.Errorf("update job %s: %d conflicting writers in a row", id, maxConflicts)
}
