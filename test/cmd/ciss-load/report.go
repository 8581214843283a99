package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// cpuModel is the first "model name" in /proc/cpuinfo.
func cpuModel(cpuinfo string) string {
	for line := range strings.Lines(cpuinfo) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func pick(ts []jobTiming, f func(jobTiming) time.Duration) latencies {
	l := make(latencies, len(ts))
	for i, t := range ts {
		l[i] = f(t)
	}
	return l
}

func done(t jobTiming) time.Duration   { return t.Done }
func result(t jobTiming) time.Duration { return t.Result }
func total(t jobTiming) time.Duration  { return t.Total }

// cpuLine lists CPU seconds per process, per operation (ops of them done) and
// as a share of the machine.
func cpuLine(c cpuSnap, elapsed time.Duration, cpus, ops int) string {
	if len(c) == 0 || elapsed <= 0 {
		return "n/a"
	}
	names := slices.SortedFunc(maps.Keys(c), func(a, b string) int { return int(c[b] - c[a]) })
	var parts []string
	var sum time.Duration
	for _, k := range names {
		if k == machineKey {
			continue
		}
		sum += c[k]
		if c[k] < 10*time.Millisecond {
			continue
		}
		label := k
		switch k {
		case "self":
			label = "ciss-load (embedded NATS + load generator)"
		case "ciss-worker":
			label = "ciss-worker (+trivy)"
		case exitedKey:
			label = "trivy run directly"
		}
		parts = append(parts, fmt.Sprintf("%s %.2fs%s", label, c[k].Seconds(), perOpText(c[k], ops)))
	}
	share := func(d time.Duration) float64 { return 100 * d.Seconds() / elapsed.Seconds() / float64(cpus) }
	line := fmt.Sprintf("%s; total %.2f CPU-s%s in %.1fs = %.0f%% of %d CPUs",
		strings.Join(parts, ", "), sum.Seconds(), perOpText(sum, ops), elapsed.Seconds(), share(sum), cpus)
	if busy, ok := c[machineKey]; ok {
		others := max(busy-sum, 0)
		line += fmt.Sprintf("; other processes on the machine %.2f CPU-s (%.0f%%)", others.Seconds(), share(others))
	}
	return line
}

// printReport writes the markdown summary.
func printReport(w io.Writer, r *results) {
	o, m := r.opts, r.machine
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	status := "all phases OK"
	if len(r.errs) > 0 {
		status = fmt.Sprintf("**%d phase error(s)**", len(r.errs))
	}
	p("")
	p("### CISS load (`go run ciss.dev/test/cmd/ciss-load`), %s", status)
	p("")
	p("Machine: %d CPUs (%s), GOMAXPROCS %d, %s, Trivy %s. Loopback only; NATS embedded in the load process.",
		m.CPUs, m.CPUModel, m.GOMAXPROCS, m.Go, m.Trivy)
	p("Flags: `-c %d -d %s -max-submits %d -pub-d %s -max-pubs %d -webhook-d %s -max-webhooks %d -n %d -restart=%t -submit-cache=%t -isolate=%t -shadow-n %d -shadow-c %d`. Load average at start: %s.",
		o.conc, o.dur, o.maxSubmits, o.pubDur, o.maxPubs, o.webhookDur, o.maxWebhooks, o.n, o.restart, o.submitCache, o.isolate, o.shadowN, o.shadowConc, m.LoadAvg)
	p("")
	p("| measurement | CISS | baseline, same run | CISS ÷ baseline |")
	p("|---|---|---|---|")
	pubRate, subRate := r.pub.rate(), r.sub.rate()
	if o.webhookDur > 0 {
		hookRate := r.hook.rate()
		p("| webhook throughput: signed GitHub push, `POST /v1/webhooks/github`, TLS keep-alive, C=%d | %.0f /s | %.0f /s raw JetStream sync publish, C=%d | %s |",
			o.conc, hookRate, pubRate, o.conc, ratio(hookRate, pubRate))
		for _, q := range []float64{50, 99} {
			h, b := r.hook.Lat.pct(q), r.pub.Lat.pct(q)
			p("| webhook ack latency p%.0f (202 after PubAck) | %s | %s | %s |", q, ms(h), ms(b), dratio(h, b))
		}
	}
	p("| submit throughput: `POST /v1/jobs`, mTLS keep-alive, C=%d | %.0f /s | %.0f /s raw JetStream sync publish, C=%d | %s |",
		o.conc, subRate, pubRate, o.conc, ratio(subRate, pubRate))
	for _, q := range []float64{50, 99} {
		s, b := r.sub.Lat.pct(q), r.pub.Lat.pct(q)
		p("| submit latency p%.0f | %s | %s | %s |", q, ms(s), ms(b), dratio(s, b))
	}
	direct50 := r.direct.pct(50)
	directLabel := "Trivy direct (scan + 2 converts)"
	tot := pick(r.e2e, total)
	for _, q := range []float64{50, 90, 100} {
		name := fmt.Sprintf("p%.0f", q)
		if q == 100 {
			name = "max"
		}
		c, b := tot.pct(q), r.direct.pct(q)
		extra := ""
		if q == 50 {
			extra = " (" + overhead(c, b) + ")"
		}
		p("| e2e scan, cache off: POST → succeeded → SARIF, %s | %s | %s %s | %s%s |", name, ms(c), ms(b), directLabel, dratio(c, b), extra)
	}
	c50 := pick(r.cached, total).pct(50)
	p("| e2e scan, cache hit: POST → succeeded → SARIF, p50 | %s | %s %s p50 | %s (%s) |", ms(c50), ms(direct50), directLabel, dratio(c50, direct50), overhead(c50, direct50))
	if sh := r.shadow; len(sh.with) > 0 && len(sh.without) > 0 {
		w, wo := pick(sh.with, done), pick(sh.without, done)
		for _, q := range []float64{50, 95} {
			p("| primary latency under load (C=%d, cache off) with an A/A shadow, p%.0f | %s | %s without shadow | %s |", o.shadowConc, q, ms(w.pct(q)), ms(wo.pct(q)), dratio(w.pct(q), wo.pct(q)))
		}
	}
	p("")
	p("Details:")
	p("- Raw publish: %d acked in %.1fs, %d-byte job-requested event (as the gateway builds it), unique Nats-Msg-Id, file-storage stream like CISS_JOBS, one shared connection; errors: %s.",
		r.pub.OK, r.pub.Elapsed.Seconds(), r.payloadBytes, errSummary(r.pub.Errs))
	if o.webhookDur > 0 {
		drain := fmt.Sprintf("all created and finished %.1fs after the load", r.hook.Drained.Seconds())
		if r.hook.Undrained {
			drain = fmt.Sprintf("NOT all finished %.0fs after the load", r.hook.Drained.Seconds())
		}
		p("- Webhooks: %d × 202 accepted in %.1fs (%d-byte push payload, HMAC-SHA256 signed, unique X-GitHub-Delivery each) after a warm-up of %d; errors: %s; p99.9 %s, max %s. Connections in the timed loop: %d reused of %d, %d new.",
			r.hook.OK, r.hook.Elapsed.Seconds(), r.hookBytes, o.conc, errSummary(r.hook.Errs), ms(r.hook.Lat.pct(99.9)), ms(r.hook.Lat.max()),
			r.hook.Reused, r.hook.Reused+r.hook.Fresh, r.hook.Fresh)
		p("  Each acknowledgement is a KV read (delivery seen?), a publish to CISS_WEBHOOKS awaiting its PubAck, a KV create (delivery record) and an asynchronous audit publish. Jobs the dispatcher created from them (dev subscription, interactive, cache on): %d; %s.",
			r.hook.Jobs, drain)
		p("- CPU during the webhook load (µs/op per 202; the dispatcher creates jobs meanwhile): %s.", cpuLine(r.hookCPU, r.hook.Elapsed, m.CPUs, r.hook.OK))
	}
	p("- Submit: %d × 202 in %.1fs (%d-byte body, lane bulk, cache=%t) after a warm-up of %d; errors: %s. Connections in the timed loop: %d reused of %d (%.1f%%), %d new; the warm-up opened %d.",
		r.sub.OK, r.sub.Elapsed.Seconds(), r.bodyBytes, o.submitCache, o.conc, errSummary(r.sub.Errs),
		r.sub.Reused, r.sub.Reused+r.sub.Fresh, pctOf(r.sub.Reused, r.sub.Reused+r.sub.Fresh), r.sub.Fresh, r.sub.WarmupFresh)
	p("  Each submit is two sequential JetStream writes (publish to CISS_JOBS + KV create in ciss_jobs), so the floor is ≈0.5× throughput and ≈2× latency of the baseline.")
	consumed := int64(r.sub.OK+o.conc) - int64(r.backlogPending+r.backlogAckPending)
	p("  Dispatcher backlog on CISS_JOBS right after the load: %d not yet delivered, %d unacknowledged, so it consumed ≈%d jobs (%.0f /s) while %d were submitted; its CPU per consumed job ≈%.0f µs.",
		r.backlogPending, r.backlogAckPending, consumed, float64(consumed)/r.sub.Elapsed.Seconds(), r.sub.OK+o.conc, perOp(r.subCPU["ciss-dispatcher"], int(consumed)))
	p("- CPU during raw publish (µs/op per acked publish): %s.", cpuLine(r.pubCPU, r.pub.Elapsed, m.CPUs, r.pub.OK))
	p("- CPU during submit load (µs/op per 202): %s.", cpuLine(r.subCPU, r.sub.Elapsed, m.CPUs, r.sub.OK))
	if r.restarted {
		p("- Stack restarted between the submit load and the end-to-end phases (%.1fs) so the bulk backlog cannot compete for CPU; first start took %.1fs.", r.restartTook.Seconds(), r.startTook.Seconds())
	} else {
		p("- Stack NOT restarted: end-to-end phases ran while the dispatcher/worker drained the bulk backlog (start took %.1fs).", r.startTook.Seconds())
	}
	dn, rs := pick(r.e2e, done), pick(r.e2e, result)
	p("- E2E cache off (%d jobs, interactive lane): POST→succeeded p50 %s / p90 %s / max %s; GET result (SARIF) p50 %s / max %s. Trivy direct (%d runs): p50 %s / p90 %s / max %s. Untimed first runs: CISS %s, direct %s.",
		len(r.e2e), ms(dn.pct(50)), ms(dn.pct(90)), ms(dn.max()), ms(rs.pct(50)), ms(rs.max()),
		len(r.direct), ms(direct50), ms(r.direct.pct(90)), ms(r.direct.max()), ms(r.e2eCold), ms(r.directCold))
	ct := pick(r.cached, total)
	hits := 0
	for _, t := range r.cached {
		if t.CacheHit {
			hits++
		}
	}
	p("- CPU during the end-to-end phases (interleaved direct Trivy and CISS jobs, cache off and on): %s.", cpuLine(r.e2eCPU, r.e2eElapsed, m.CPUs, 0))
	p("- E2E cache hit (%d jobs, %d hits): total p50 %s / p90 %s / max %s; warm-up job %s.",
		len(r.cached), hits, ms(ct.pct(50)), ms(ct.pct(90)), ms(ct.max()), ms(r.cacheWarm))
	if sh := r.shadow; sh.blocks > 0 {
		p("- Shadow overhead (own stack; catalog plus trivy-shadow, the shipped Trivy Task under a second name, so every shadowed job costs a second full scan on the shadow pool of 1, at nice 10): %d blocks alternating without/with the shadow, swapped by rewriting the routing file (hot reload, confirmed by its audit record); %d jobs without, %d with; after each shadowed block %.1fs in total were spent waiting for the shadow backlog to drain, so it never loads a block without shadow. CPU: %s.",
			sh.blocks, len(sh.without), len(sh.with), sh.drained.Seconds(), cpuLine(sh.cpu, sh.elapsed, m.CPUs, len(sh.with)+len(sh.without)))
	}
	if len(r.errs) > 0 {
		p("- Errors:")
		for _, e := range r.errs {
			p("  - %s", e)
		}
	}
}

func perOp(d time.Duration, ops int) float64 {
	if ops == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(ops)
}

// perOpText is " (N µs/op)", or "" without a count.
func perOpText(d time.Duration, ops int) string {
	if ops == 0 {
		return ""
	}
	return fmt.Sprintf(" (%.0f µs/op)", perOp(d, ops))
}

func pctOf(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}
