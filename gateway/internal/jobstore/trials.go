package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/schemas"
)

// ErrTrialNotFound means no report exists for the trial (unknown, or no job
// compared yet).
var ErrTrialNotFound = errors.New("trial not found")

// trialReportPrefix is the key prefix of trial reports in schemas.BucketTrials,
// written by the dispatcher.
const trialReportPrefix = "report."

func (s *Store) trialsKV(ctx context.Context) (jetstream.KeyValue, error) {
	if _, err := s.handles(); err != nil {
		return nil, err
	}
	kv, err := s.js.KeyValue(ctx, schemas.BucketTrials)
	if err != nil {
		return nil, unavailable("bind "+schemas.BucketTrials, err)
	}
	return kv, nil
}

// TrialReports returns every trial's report, sorted by name.
func (s *Store) TrialReports(ctx context.Context) ([]schemas.TrialReport, error) {
	kv, err := s.trialsKV(ctx)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeysFiltered(ctx, trialReportPrefix+"*")
	if err != nil {
		return nil, unavailable("list trials", err)
	}
	var names []string
	for k := range lister.Keys() {
		names = append(names, strings.TrimPrefix(k, trialReportPrefix))
	}
	_ = lister.Stop()
	slices.Sort(names)
	out := []schemas.TrialReport{}
	for _, n := range names {
		r, err := s.TrialReport(ctx, n)
		if errors.Is(err, ErrTrialNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// TrialReport returns one trial's report, or ErrTrialNotFound.
func (s *Store) TrialReport(ctx context.Context, name string) (schemas.TrialReport, error) {
	var r schemas.TrialReport
	if !schemas.ValidToken(name) {
		return r, fmt.Errorf("trial %q: %w", name, ErrTrialNotFound)
	}
	kv, err := s.trialsKV(ctx)
	if err != nil {
		return r, err
	}
	e, err := kv.Get(ctx, trialReportPrefix+name)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return r, fmt.Errorf("trial %q: %w", name, ErrTrialNotFound)
	case err != nil:
		return r, unavailable("get trial "+name, err)
	}
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return r, fmt.Errorf("decode trial %s: %w", name, err)
	}
	return r, nil
}
