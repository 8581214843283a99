package trial

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
)

func f(id, pkg, sev string) schemas.Finding {
	return schemas.Finding{ID: id, Package: pkg, Version: "1", Severity: schemas.Severity(sev)}
}

func TestCompare(t *testing.T) {
	t.Parallel()
	ghsa := schemas.Finding{ID: "GHSA-aaaa", Package: "x", Version: "1", Severity: "HIGH"}
	ghsaWithAlias := schemas.Finding{ID: "GHSA-bbbb", Aliases: []string{"CVE-9"}, Package: "x", Version: "1", Severity: "HIGH"}
	tests := []struct {
		name     string
		p, c     []schemas.Finding
		rules    Rules
		both     int
		onlyP    []schemas.Finding
		onlyC    []schemas.Finding
		sevDiffs int
		ignored  int
	}{
		{name: "empty", both: 0},
		{name: "identical", p: []schemas.Finding{f("CVE-1", "a", "HIGH"), f("CVE-2", "b", "LOW")}, c: []schemas.Finding{f("CVE-2", "b", "LOW"), f("CVE-1", "a", "HIGH")}, both: 2},
		{name: "candidate drops low", p: []schemas.Finding{f("CVE-1", "a", "HIGH"), f("CVE-2", "b", "LOW")}, c: []schemas.Finding{f("CVE-1", "a", "HIGH")},
			both: 1, onlyP: []schemas.Finding{f("CVE-2", "b", "LOW")}},
		{name: "candidate adds", p: nil, c: []schemas.Finding{f("CVE-3", "c", "MEDIUM")}, onlyC: []schemas.Finding{f("CVE-3", "c", "MEDIUM")}},
		{name: "severity disagreement", p: []schemas.Finding{f("CVE-1", "a", "HIGH")}, c: []schemas.Finding{f("CVE-1", "a", "CRITICAL")}, both: 1, sevDiffs: 1},
		{name: "same id other package differs", p: []schemas.Finding{f("CVE-1", "a", "HIGH")}, c: []schemas.Finding{f("CVE-1", "b", "HIGH")},
			onlyP: []schemas.Finding{f("CVE-1", "a", "HIGH")}, onlyC: []schemas.Finding{f("CVE-1", "b", "HIGH")}},
		{name: "match on id and package ignores version", p: []schemas.Finding{f("CVE-1", "a", "HIGH")},
			c: []schemas.Finding{{ID: "CVE-1", Package: "a", Version: "2", Severity: "HIGH"}}, rules: Rules{Match: []string{"id", "package"}}, both: 1},
		{name: "alias by id", p: []schemas.Finding{{ID: "CVE-7", Package: "x", Version: "1", Severity: "HIGH"}}, c: []schemas.Finding{ghsa},
			rules: Rules{Aliases: map[string]string{"GHSA-aaaa": "CVE-7"}}, both: 1},
		{name: "alias through the tool's aliases", p: []schemas.Finding{{ID: "CVE-9", Package: "x", Version: "1", Severity: "HIGH"}}, c: []schemas.Finding{ghsaWithAlias},
			rules: Rules{Aliases: map[string]string{"CVE-9": "CVE-9"}}, both: 1},
		{name: "ignored differences are not agreement", p: []schemas.Finding{f("CVE-2023-1", "busybox", "LOW"), f("CVE-1", "a", "HIGH")},
			c:     []schemas.Finding{f("CVE-2023-2", "busybox", "LOW"), f("CVE-1", "a", "MEDIUM")},
			rules: Rules{Ignore: []Ignore{{ID: "CVE-2023-*", Package: "busybox"}, {ID: "CVE-1"}}}, both: 1, ignored: 3},
		{name: "ignore by path", p: []schemas.Finding{{ID: "G101", File: "vendor/x.go", Line: 3, Severity: "HIGH"}},
			rules: Rules{Ignore: []Ignore{{Path: "vendor/*"}}}, ignored: 1},
		{name: "duplicates are a multiset", p: []schemas.Finding{f("CVE-1", "a", "HIGH"), f("CVE-1", "a", "HIGH")}, c: []schemas.Finding{f("CVE-1", "a", "HIGH")},
			both: 1, onlyP: []schemas.Finding{f("CVE-1", "a", "HIGH")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := Compare(tt.p, tt.c, tt.rules)
			require.Equal(t, tt.both, d.Both, "both")
			require.ElementsMatch(t, tt.onlyP, d.OnlyPrimary, "only primary")
			require.ElementsMatch(t, tt.onlyC, d.OnlyCandidate, "only candidate")
			require.Len(t, d.SeverityDiffs, tt.sevDiffs, "severity diffs")
			require.Equal(t, tt.ignored, d.Ignored, "ignored")
			require.NotNil(t, d.OnlyPrimary)
			require.NotNil(t, d.OnlyCandidate)
			require.NotNil(t, d.SeverityDiffs)
		})
	}
}

func cmpOf(job string, both, onlyP, onlyC, sev int, pd, cd time.Duration, cOutcome schemas.TaskOutcome) schemas.TrialComparison {
	c := schemas.TrialComparison{Trial: "t", JobID: job, JobType: "image-scan", Primary: "a", Candidate: "b",
		PrimaryOutcome: schemas.OutcomeSucceeded, CandidateOutcome: cOutcome,
		PrimaryDuration: schemas.Duration(pd), CandidateDuration: schemas.Duration(cd), Both: both,
		OnlyPrimary: []schemas.Finding{}, OnlyCandidate: []schemas.Finding{}, SeverityDiffs: []schemas.SeverityDiff{}}
	for range onlyP {
		c.OnlyPrimary = append(c.OnlyPrimary, f("CVE-P", "p", "LOW"))
	}
	for range onlyC {
		c.OnlyCandidate = append(c.OnlyCandidate, f("CVE-C", "c", "LOW"))
	}
	for range sev {
		c.SeverityDiffs = append(c.SeverityDiffs, schemas.SeverityDiff{Finding: f("CVE-S", "s", "HIGH"), CandidateSeverity: "LOW"})
	}
	return c
}

func TestAggregate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := time.Second
	cs := []schemas.TrialComparison{
		cmpOf("j1", 2, 2, 0, 0, s, 2*s, schemas.OutcomeSucceeded),
		cmpOf("j2", 2, 2, 1, 1, s, s, schemas.OutcomeSucceeded),
		cmpOf("j3", 4, 0, 0, 0, 2*s, s, schemas.OutcomeSucceeded),
		cmpOf("j4", 0, 0, 0, 0, s, 0, schemas.OutcomeFailed),
	}
	noise := &schemas.TrialReport{Name: "aa", AgreementRate: 0.95}
	rep := Aggregate("t", cs, noise, now)
	require.Equal(t, 4, rep.JobsCompared)
	require.Equal(t, 1, rep.Errors)
	require.Equal(t, 0.25, rep.ErrorRate)
	require.Equal(t, 8, rep.Both)
	require.Equal(t, 4, rep.OnlyPrimary)
	require.Equal(t, 1, rep.OnlyCandidate)
	require.Equal(t, 1, rep.SeverityDisagreements)
	require.InDelta(t, 7.0/13, rep.AgreementRate, 1e-12)
	require.InDelta(t, 8.0/9, rep.Precision, 1e-12)
	require.InDelta(t, 8.0/12, rep.Recall, 1e-12)
	require.Equal(t, 1.0, rep.DurationRatioP50) // ratios 2, 1, 0.5 → median 1
	require.Equal(t, 2.0, rep.DurationRatioP95)
	require.Equal(t, "aa", rep.NoiseTrial)
	require.InDelta(t, 0.05, rep.NoiseDisagreement, 1e-12)
	require.InDelta(t, (1-7.0/13)-0.05, rep.NetDisagreement, 1e-12)
	require.Equal(t, "only_primary", rep.TopDifferences[0].Kind)
	require.Equal(t, 4, rep.TopDifferences[0].Count)
	require.Equal(t, []string{"j1", "j1", "j2"}, rep.TopDifferences[0].ExampleJobs)
	require.Len(t, rep.TopDifferences, 3)

	// Order does not matter.
	rev := []schemas.TrialComparison{cs[3], cs[2], cs[1], cs[0]}
	require.Equal(t, rep, Aggregate("t", rev, noise, now))

	empty := Aggregate("t", nil, nil, now)
	require.Equal(t, 1.0, empty.AgreementRate)
	require.Zero(t, empty.ErrorRate)
	require.NotNil(t, empty.TopDifferences)
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	xs := []float64{5, 1, 4, 2, 3}
	for p, want := range map[float64]float64{0: 1, 20: 1, 50: 3, 95: 5, 100: 5} {
		require.Equal(t, want, Percentile(xs, p), "p%v", p)
	}
	require.Zero(t, Percentile(nil, 50))
}

func TestVariance(t *testing.T) {
	t.Parallel()
	prev := []schemas.Finding{f("CVE-1", "a", "HIGH"), f("CVE-2", "b", "LOW")}
	upgraded := schemas.Finding{ID: "CVE-1", Package: "a", Version: "2", Severity: "HIGH"}
	cur := []schemas.Finding{upgraded, f("CVE-3", "c", "CRITICAL")}
	added, fixed := Variance(prev, cur)
	require.Equal(t, []schemas.Finding{f("CVE-3", "c", "CRITICAL")}, added)
	require.Equal(t, []schemas.Finding{f("CVE-2", "b", "LOW")}, fixed)
	added, fixed = Variance(nil, nil)
	require.Empty(t, added)
	require.Empty(t, fixed)
	require.NotNil(t, added)
}
