package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// connStats counts how requests got their connection.
type connStats struct{ reused, fresh atomic.Int64 }

func (c *connStats) trace(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if i.Reused {
			c.reused.Add(1)
		} else {
			c.fresh.Add(1)
		}
	}})
}

// submitResult is a submit load run plus how its connections were used.
type submitResult struct {
	loadResult
	Reused, Fresh int64
	// WarmupFresh is the connections opened by the untimed warm-up round.
	WarmupFresh int64
}

// submitOnce posts body to /v1/jobs and reports "" on 202 with a Location,
// else the kind of failure.
func submitOnce(ctx context.Context, hc *http.Client, base string, body []byte) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/jobs", bytes.NewReader(body))
	if err != nil {
		return "request: " + err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "client timeout"
		}
		return "transport: " + err.Error()
	}
	// Drain so the connection goes back to the pool.
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusAccepted:
		return fmt.Sprintf("HTTP %d", resp.StatusCode)
	case !strings.HasPrefix(resp.Header.Get("Location"), "/v1/jobs/"):
		return "HTTP 202 without Location"
	}
	return ""
}

// submitLoad runs c goroutines sharing hc, each posting body in a loop until d
// has passed or max submits were started. An untimed warm-up round first opens
// one connection per goroutine, so the loop measures steady keep-alive use.
func submitLoad(ctx context.Context, hc *http.Client, base string, body []byte, c int, d time.Duration, max int) submitResult {
	return loadLoop(ctx, c, d, max, func(ctx context.Context) string { return submitOnce(ctx, hc, base, body) })
}

// loadLoop runs c goroutines calling once (which reports "" on success, else
// the kind of failure) until d has passed or max calls were started, after an
// untimed warm-up round of c calls. The connections of the calls are counted
// through the context's client trace.
func loadLoop(ctx context.Context, c int, d time.Duration, max int, once func(context.Context) string) submitResult {
	var (
		warm, conns connStats
		started     atomic.Int64
		mu          sync.Mutex
		res         = submitResult{loadResult: loadResult{Errs: map[string]int{}}}
		wg          sync.WaitGroup
	)
	addErrs := func(errs map[string]int) {
		mu.Lock()
		defer mu.Unlock()
		for k, v := range errs {
			res.Errs[k] += v
		}
	}
	// Warm-up: c concurrent submits, so each goroutine finds an idle
	// connection. Failures here count as errors too.
	for range c {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(warm.trace(ctx), 10*time.Second)
			defer cancel()
			if kind := once(rctx); kind != "" {
				addErrs(map[string]int{"warm-up " + kind: 1})
			}
		})
	}
	wg.Wait()
	res.WarmupFresh = warm.fresh.Load()

	begin := time.Now()
	deadline := begin.Add(d)
	tctx := conns.trace(ctx)
	for range c {
		wg.Go(func() {
			var lat latencies
			errs := map[string]int{}
			for ctx.Err() == nil && time.Now().Before(deadline) && started.Add(1) <= int64(max) {
				rctx, cancel := context.WithTimeout(tctx, 10*time.Second)
				t0 := time.Now()
				kind := once(rctx)
				el := time.Since(t0)
				cancel()
				if kind != "" {
					errs[kind]++
					continue
				}
				lat = append(lat, el)
			}
			mu.Lock()
			res.Lat = append(res.Lat, lat...)
			mu.Unlock()
			addErrs(errs)
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(begin)
	res.OK = len(res.Lat)
	res.Reused, res.Fresh = conns.reused.Load(), conns.fresh.Load()
	return res
}
