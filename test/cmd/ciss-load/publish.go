package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/schemas"
)

// Scratch stream of the publish baseline, configured like schemas.StreamJobs.
const (
	benchStream  = "BENCH"
	benchSubject = "bench.requested"
)

// jobRequestedPayload is a job-requested event as the gateway publishes it
// for a submit of image in lane, so the baseline moves the same bytes.
func jobRequestedPayload(image string, lane schemas.Lane) ([]byte, error) {
	now := time.Now().UTC()
	job := schemas.Job{
		ID: "0199a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b", Tenant: "dev", Type: schemas.JobTypeImageScan, Target: schemas.Target{Image: image},
		Lane: lane, Status: schemas.StatusQueued, RequestedBy: "spiffe://ciss.dev/tenant/dev/admin",
		RequestDigest: "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
		CreatedAt:     now, UpdatedAt: now,
	}
	return schemas.Marshal(schemas.TypeJobRequested, "ciss-gateway", job.ID, job)
}

// createBenchStream (re)creates the scratch stream with the settings of the
// CISS jobs stream: file storage, one replica, a 10 minute duplicate window.
func createBenchStream(ctx context.Context, js jetstream.JetStream) error {
	_ = js.DeleteStream(ctx, benchStream)
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       benchStream,
		Subjects:   []string{"bench.>"},
		Storage:    jetstream.FileStorage,
		Replicas:   1,
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardOld,
		MaxAge:     time.Hour,
		MaxMsgSize: schemas.MaxEventSize,
		Duplicates: 10 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", benchStream, err)
	}
	return nil
}

// rawPublish runs c goroutines over one shared connection (as the gateway
// has), each publishing payload synchronously (PubAck awaited) with a unique
// message id, the way the gateway publishes a job request, until d has passed
// or max publishes were started.
func rawPublish(ctx context.Context, js jetstream.JetStream, payload []byte, c int, d time.Duration, max int) loadResult {
	var (
		started atomic.Int64
		mu      sync.Mutex
		res     = loadResult{Errs: map[string]int{}}
		wg      sync.WaitGroup
	)
	begin := time.Now()
	deadline := begin.Add(d)
	for g := range c {
		wg.Go(func() {
			var lat latencies
			errs := map[string]int{}
			for i := 0; ctx.Err() == nil && time.Now().Before(deadline) && started.Add(1) <= int64(max); i++ {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				t0 := time.Now()
				_, err := js.Publish(pctx, benchSubject, payload,
					jetstream.WithMsgID("g"+strconv.Itoa(g)+"-"+strconv.Itoa(i)), jetstream.WithExpectStream(benchStream))
				el := time.Since(t0)
				cancel()
				if err != nil {
					errs[publishErrKind(err)]++
					continue
				}
				lat = append(lat, el)
			}
			mu.Lock()
			res.Lat = append(res.Lat, lat...)
			for k, v := range errs {
				res.Errs[k] += v
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(begin)
	res.OK = len(res.Lat)
	return res
}

func publishErrKind(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "publish timeout"
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return "no stream response"
	}
	return "publish: " + err.Error()
}

// consumerBacklog sums the messages not yet delivered and delivered but not
// yet acknowledged over the consumers of stream.
func consumerBacklog(ctx context.Context, js jetstream.JetStream, stream string) (pending, ackPending uint64, err error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, 0, err
	}
	l := st.ListConsumers(ctx)
	for ci := range l.Info() {
		pending += ci.NumPending
		ackPending += uint64(ci.NumAckPending)
	}
	return pending, ackPending, l.Err()
}
