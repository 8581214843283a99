package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/schemas"
	"ciss.dev/test/stack"
)

// webhookResult is the webhook load plus what it caused downstream.
type webhookResult struct {
	submitResult
	// Jobs is the number of jobs the dispatcher created from the accepted
	// webhooks (one each, by the dev subscription).
	Jobs uint64
	// Drained is how long after the load the dispatcher and worker took to
	// create and finish those jobs; Undrained is set when they had not
	// within the bound.
	Drained   time.Duration
	Undrained bool
}

// webhookOnce posts a signed GitHub push with a fresh delivery id and reports
// "" on 202 accepted, else the kind of failure.
func webhookOnce(ctx context.Context, hc *http.Client, url string, body []byte, sig, delivery string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "request: " + err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/ciss-load")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-Hub-Signature-256", sig)
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "client timeout"
		}
		return "transport: " + err.Error()
	}
	b, _ := io.ReadAll(resp.Body) // drained, so the connection goes back to the pool
	resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusAccepted:
		return fmt.Sprintf("HTTP %d", resp.StatusCode)
	case !bytes.Contains(b, []byte(`"status":"accepted"`)):
		return "HTTP 202 not accepted: " + string(b)
	}
	return ""
}

// webhookLoad sends signed GitHub push webhooks at concurrency c over
// keep-alive connections, each with a unique delivery id (so each is stored
// and creates a job), bounded by d and maxN.
func webhookLoad(ctx context.Context, s *stack.Stack, body []byte, c int, d time.Duration, maxN int) webhookResult {
	hc := s.WebhookClient()
	if tr, ok := hc.Transport.(*http.Transport); ok {
		tr.MaxIdleConnsPerHost, tr.MaxIdleConns = max(tr.MaxIdleConnsPerHost, c), max(tr.MaxIdleConns, c)
	}
	hc.Timeout = 0 // every request has its own context deadline
	defer hc.CloseIdleConnections()
	url := s.WebhookURL + "/v1/webhooks/github"
	sig := stack.SignGitHub(s.WebhookSecret, body) // one body: the delivery id is what differs
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	var n atomic.Int64
	res := loadLoop(ctx, c, d, maxN, func(ctx context.Context) string {
		return webhookOnce(ctx, hc, url, body, sig, "load-"+run+"-"+strconv.FormatInt(n.Add(1), 10))
	})
	return webhookResult{submitResult: res}
}

// drainWebhookJobs waits until the dispatcher has turned every stored webhook
// into a job and the worker has finished them (the interactive task queue is
// empty), at most bound; it reports the jobs created.
func drainWebhookJobs(ctx context.Context, js jetstream.JetStream, r *webhookResult, bound time.Duration) error {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	for {
		pending, ackPending, err := consumerBacklog(ctx, js, schemas.StreamWebhooks)
		if err == nil && pending+ackPending == 0 {
			var jp, ja, tasks uint64
			jp, ja, err = consumerBacklog(ctx, js, schemas.StreamJobs)
			if err == nil {
				var st jetstream.Stream
				if st, err = js.Stream(ctx, schemas.StreamTasks); err == nil {
					tasks = st.CachedInfo().State.Msgs
				}
			}
			if err == nil && jp+ja+tasks == 0 {
				r.Drained = time.Since(t0)
				st, err := js.Stream(ctx, schemas.StreamJobs)
				if err != nil {
					return err
				}
				subject := schemas.SubjectJobRequested(schemas.LaneInteractive)
				info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
				if err != nil {
					return err
				}
				r.Jobs = info.State.Subjects[subject]
				return nil
			}
		}
		select {
		case <-ctx.Done():
			r.Undrained, r.Drained = true, time.Since(t0)
			return nil
		case <-time.After(200 * time.Millisecond): // poll interval
		}
	}
}
