package cli

import (
	"fmt"
	"sync"
	"time"

	"ciss.dev/gateway/client"
	"ciss.dev/schemas"
)

// progress shows what --wait is doing on a terminal: a line per status
// change and per retry, and a live elapsed-time line in between. Off a
// terminal it writes nothing, so CI logs and pipes stay machine-readable.
type progress struct {
	env   *Env
	start time.Time

	mu      sync.Mutex
	status  string
	live    bool // the live line is on screen
	done    chan struct{}
	stopped bool
}

func newProgress(env *Env) *progress {
	p := &progress{env: env, start: env.Now(), done: make(chan struct{})}
	if env.Interactive {
		go p.tick()
	}
	return p
}

func (p *progress) retryOptions() client.RetryOptions {
	return client.RetryOptions{MinBackoff: p.env.MinBackoff, OnRetry: p.retry}
}

func (p *progress) elapsed() string {
	return p.env.Now().Sub(p.start).Round(time.Second).String()
}

// line prints a permanent line, replacing the live one.
func (p *progress) line(format string, args ...any) {
	if !p.env.Interactive {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.clearLocked()
	fmt.Fprintf(p.env.Stderr, "[%6s] "+format+"\n", append([]any{p.elapsed()}, args...)...)
}

func (p *progress) note(format string, args ...any) { p.line(format, args...) }

func (p *progress) change(j *schemas.Job) {
	p.mu.Lock()
	p.status = string(j.Status)
	p.mu.Unlock()
	msg := fmt.Sprintf("job %s %s", j.ID, j.Status)
	if j.Tool != "" && j.Status == schemas.StatusRunning {
		msg += " (" + j.Tool + ")"
	}
	p.line("%s", msg)
}

func (p *progress) retry(err error, delay time.Duration) {
	p.line("%v; retrying in %s", err, delay.Round(100*time.Millisecond))
}

func (p *progress) clearLocked() {
	if p.live {
		fmt.Fprint(p.env.Stderr, "\r\033[K")
		p.live = false
	}
}

func (p *progress) tick() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		p.mu.Lock()
		if !p.stopped && p.status != "" {
			fmt.Fprintf(p.env.Stderr, "\r\033[K%s… %s", p.status, p.elapsed())
			p.live = true
		}
		p.mu.Unlock()
	}
}

// stop clears the live line and ends the ticker; it may be called twice.
func (p *progress) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	p.clearLocked()
	close(p.done)
}
