package gateway

import (
	"context"
	"os"
	"time"
)

// fileStamp is what change detection compares: a file's modification time and
// size, or the error that prevented reading them.
type fileStamp struct {
	mod  time.Time
	size int64
	err  string
}

func stamp(paths ...string) []fileStamp {
	out := make([]fileStamp, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			out[i] = fileStamp{err: err.Error()}
			continue
		}
		out[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return out
}

func sameStamps(a, b []fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].mod != b[i].mod || a[i].size != b[i].size || a[i].err != b[i].err {
			return false
		}
	}
	return true
}

// watchFiles polls the TLS and policy files and reloads a group when any of
// its files changed. A failed reload is logged and not retried until the
// files change again, so a half-written rotation (new certificate, old key)
// heals as soon as the second file lands.
func (g *Gateway) watchFiles(ctx context.Context) {
	type group struct {
		paths  func() []string // a function: a reload may change the list
		last   []fileStamp
		reload func() error
	}
	groups := []*group{
		{paths: g.tls.Files().Paths, reload: g.reloadTLS},
		{paths: func() []string { return []string{g.policy.Path()} }, reload: g.reloadPolicy},
	}
	if g.webhooks != nil {
		groups = append(groups, &group{paths: g.webhooks.Paths, reload: g.reloadWebhooks})
	}
	if g.guardrails != nil {
		groups = append(groups, &group{paths: func() []string { return []string{g.guardrails.Path()} }, reload: g.reloadGuardrails})
	}
	for _, gr := range groups {
		gr.last = stamp(gr.paths()...)
	}
	t := time.NewTicker(g.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, gr := range groups {
			now := stamp(gr.paths()...)
			if sameStamps(now, gr.last) {
				continue
			}
			gr.last = now
			before := len(now)
			if err := gr.reload(); err != nil {
				g.log.Error("reload failed; keeping previous version", "err", err)
			}
			if paths := gr.paths(); len(paths) != before {
				gr.last = stamp(paths...) // the reload changed what to watch
			}
		}
	}
}
