package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// latencies is a set of timed operations.
type latencies []time.Duration

// sorted returns a sorted copy.
func (l latencies) sorted() latencies {
	s := slices.Clone(l)
	slices.Sort(s)
	return s
}

// pct is the p-th percentile (0 < p <= 100) by nearest rank; 0 when empty.
func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := l.sorted()
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func (l latencies) max() time.Duration { return l.pct(100) }

// loadResult is the outcome of a bounded load loop.
type loadResult struct {
	// OK counts operations that succeeded; Lat holds their latencies.
	OK  int
	Lat latencies
	// Errs counts failed operations by kind (HTTP status or error text).
	Errs map[string]int
	// Elapsed is the wall time of the measured loop.
	Elapsed time.Duration
}

// rate is successful operations per second.
func (r loadResult) rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

func (r loadResult) errCount() int {
	n := 0
	for _, v := range r.Errs {
		n += v
	}
	return n
}

// errSummary lists errors by kind, most frequent first.
func errSummary(errs map[string]int) string {
	if len(errs) == 0 {
		return "none"
	}
	keys := slices.SortedFunc(maps.Keys(errs), func(a, b string) int { return errs[b] - errs[a] })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, errs[k]))
	}
	return strings.Join(parts, ", ")
}

// ms formats a duration as milliseconds with a precision that suits it; zero
// (nothing measured) is "n/a".
func ms(d time.Duration) string {
	if d == 0 {
		return "n/a"
	}
	f := float64(d) / float64(time.Millisecond)
	switch {
	case f < 10:
		return fmt.Sprintf("%.2f ms", f)
	case f < 100:
		return fmt.Sprintf("%.1f ms", f)
	}
	return fmt.Sprintf("%.0f ms", f)
}

// ratio formats a/b; "n/a" when either is zero (not measured).
func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "n/a"
	}
	r := a / b
	if r < 0.1 {
		return fmt.Sprintf("%.3f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

func dratio(a, b time.Duration) string { return ratio(float64(a), float64(b)) }

// overhead formats a-b with its sign; "n/a" when either is zero.
func overhead(a, b time.Duration) string {
	switch {
	case a == 0 || b == 0:
		return "n/a"
	case a < b:
		return "−" + ms(b-a)
	}
	return "+" + ms(a-b)
}
