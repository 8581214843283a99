package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"ciss.dev/schemas"
)

// RetryOptions tune Retry and Wait. The zero value backs off from 500ms to 10s.
type RetryOptions struct {
	// MinBackoff and MaxBackoff bound the delay between attempts; defaults
	// 500ms and 10s. The delay doubles per consecutive failure, with ±10%
	// jitter, and honours a longer Retry-After (up to MaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// OnRetry, if set, is called after each retryable failure with the error
	// and the delay before the next attempt.
	OnRetry func(err error, delay time.Duration)
}

func (o *RetryOptions) defaults() {
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(10*time.Second, o.MinBackoff)
	}
}

// GiveUpError is returned when ctx ends before an operation that kept
// failing, or a job being waited for, got anywhere.
type GiveUpError struct {
	// Last is the last job state seen by Wait, nil otherwise.
	Last *schemas.Job
	// LastErr is the last retryable failure, if the last attempt failed.
	LastErr error
	// Err is the context's cause.
	Err error
}

// Error implements error.
func (e *GiveUpError) Error() string {
	msg := e.Err.Error()
	if e.Last != nil {
		msg += "; job " + e.Last.ID + " was " + string(e.Last.Status)
	}
	if e.LastErr != nil {
		msg += "; last error: " + e.LastErr.Error()
	}
	return msg
}

// Unwrap returns the context's cause.
func (e *GiveUpError) Unwrap() error { return e.Err }

// Retry calls fn until it returns nil or an error that is not Retryable, or
// ctx ends (then a *GiveUpError). Only retry operations that are safe to
// repeat: reads, and submits with an Idempotency-Key.
func Retry(ctx context.Context, opts RetryOptions, fn func(context.Context) error) error {
	opts.defaults()
	for n := 0; ; n++ {
		err := fn(ctx)
		if ctx.Err() != nil {
			return &GiveUpError{LastErr: err, Err: context.Cause(ctx)}
		}
		if err == nil || !Retryable(err) {
			return err
		}
		delay := backoff(n, opts.MinBackoff, opts.MaxBackoff)
		var ae *APIError
		if errors.As(err, &ae) && ae.RetryAfter > delay {
			delay = min(ae.RetryAfter, opts.MaxBackoff)
		}
		if opts.OnRetry != nil {
			opts.OnRetry(err, delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return &GiveUpError{LastErr: err, Err: context.Cause(ctx)}
		case <-t.C:
		}
	}
}

// WaitOptions tune Wait. The zero value long-polls 30s at a time.
type WaitOptions struct {
	// Poll is the long-poll duration of one request; default 30s.
	Poll time.Duration
	// Retry tunes the backoff after retryable failures.
	Retry RetryOptions
	// OnChange, if set, is called with the job whenever its status differs
	// from the last one seen (and once with the first state).
	OnChange func(*schemas.Job)
}

// Wait follows a job until it is succeeded, failed or cancelled and returns
// it. It survives gateway restarts and NATS outages: retryable failures (see
// Retryable) are retried with backoff until ctx ends, which then answers a
// *GiveUpError holding the last state seen. Other failures (a 404, a refused
// certificate) return at once.
func (c *Client) Wait(ctx context.Context, id string, opts WaitOptions) (*schemas.Job, error) {
	if opts.Poll <= 0 {
		opts.Poll = 30 * time.Second
	}
	var last *schemas.Job
	for {
		var job *schemas.Job
		err := Retry(ctx, opts.Retry, func(ctx context.Context) error {
			// The first request only reads; later ones long-poll.
			poll := opts.Poll
			if last == nil {
				poll = 0
			}
			var err error
			job, err = c.WaitChange(ctx, id, poll)
			return err
		})
		if gu := (*GiveUpError)(nil); errors.As(err, &gu) {
			gu.Last = last
			return last, gu
		}
		if err != nil {
			return last, err
		}
		if opts.OnChange != nil && (last == nil || last.Status != job.Status) {
			opts.OnChange(job)
		}
		last = job
		if job.Status.Terminal() {
			return job, nil
		}
	}
}

// backoff is lo·2^n capped at hi, with ±10% jitter, never below lo.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo << min(n, 16)
	if d <= 0 || d > hi {
		d = hi
	}
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return max(lo, d+jitter)
}
