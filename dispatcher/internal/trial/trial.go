// Package trial compares a candidate tool's findings with the primary's and
// aggregates the comparisons of a trial. It works on the common finding model
// (schemas.Finding) only: the dispatcher never links a tool.
package trial

import (
	"cmp"
	"fmt"
	"math"
	"path"
	"slices"
	"strings"
	"time"

	"ciss.dev/schemas"
)

// Rules are a trial's comparison settings (see route.TrialConfig).
type Rules struct {
	// Aliases map ids before comparing (GHSA → CVE); applied to both sides.
	Aliases map[string]string
	// Ignore rules drop differences from the disagreement counts.
	Ignore []Ignore
	// Match lists the fields identifying a finding; empty means all of id,
	// package, version, file and line.
	Match []string
}

// Ignore matches a differing finding when every set field matches; ID and
// Path are path.Match globs.
type Ignore struct {
	ID, Package, Path string
}

func (ig Ignore) matches(f schemas.Finding) bool {
	if ig.ID != "" {
		if ok, _ := path.Match(ig.ID, f.ID); !ok {
			return false
		}
	}
	if ig.Package != "" && ig.Package != f.Package {
		return false
	}
	if ig.Path != "" {
		if ok, _ := path.Match(ig.Path, f.File); !ok {
			return false
		}
	}
	return true
}

// canonical maps a finding's id (and, failing that, its aliases) through the
// alias map, so a CVE and its GHSA compare equal.
func (r Rules) canonical(f schemas.Finding) string {
	if to, ok := r.Aliases[f.ID]; ok {
		return to
	}
	for _, a := range f.Aliases {
		if to, ok := r.Aliases[a]; ok {
			return to
		}
	}
	return f.ID
}

func (r Rules) key(f schemas.Finding) string {
	all := len(r.Match) == 0
	var b strings.Builder
	b.WriteString(r.canonical(f))
	for _, field := range []string{"package", "version", "file", "line"} {
		b.WriteByte(0)
		if !all && !slices.Contains(r.Match, field) {
			continue
		}
		switch field {
		case "package":
			b.WriteString(f.Package)
		case "version":
			b.WriteString(f.Version)
		case "file":
			b.WriteString(f.File)
		case "line":
			fmt.Fprint(&b, f.Line)
		}
	}
	return b.String()
}

func (r Rules) ignored(f schemas.Finding) bool {
	return slices.ContainsFunc(r.Ignore, func(ig Ignore) bool { return ig.matches(f) })
}

// Diff is the finding-level outcome of one comparison.
type Diff struct {
	Both          int
	OnlyPrimary   []schemas.Finding
	OnlyCandidate []schemas.Finding
	SeverityDiffs []schemas.SeverityDiff
	Ignored       int
}

// Compare matches the candidate's findings against the primary's. Findings
// are multisets: a finding reported twice by one side and once by the other
// counts once in both and once on its side. Differences matched by an ignore
// rule are counted in Ignored only.
func Compare(primary, candidate []schemas.Finding, r Rules) Diff {
	d := Diff{OnlyPrimary: []schemas.Finding{}, OnlyCandidate: []schemas.Finding{}, SeverityDiffs: []schemas.SeverityDiff{}}
	pending := map[string][]schemas.Finding{}
	for _, f := range candidate {
		k := r.key(f)
		pending[k] = append(pending[k], f)
	}
	for _, p := range primary {
		k := r.key(p)
		if cs := pending[k]; len(cs) > 0 {
			c := cs[0]
			pending[k] = cs[1:]
			d.Both++
			if p.Severity != c.Severity {
				if r.ignored(p) {
					d.Ignored++
				} else {
					d.SeverityDiffs = append(d.SeverityDiffs, schemas.SeverityDiff{Finding: p, CandidateSeverity: c.Severity})
				}
			}
			continue
		}
		if r.ignored(p) {
			d.Ignored++
		} else {
			d.OnlyPrimary = append(d.OnlyPrimary, p)
		}
	}
	for _, f := range candidate {
		k := r.key(f)
		if cs := pending[k]; len(cs) > 0 {
			pending[k] = cs[1:]
			if r.ignored(f) {
				d.Ignored++
			} else {
				d.OnlyCandidate = append(d.OnlyCandidate, f)
			}
		}
	}
	return d
}

// MaxTopDifferences bounds TrialReport.TopDifferences; MaxExampleJobs each
// difference's examples.
const (
	MaxTopDifferences = 10
	MaxExampleJobs    = 3
)

// Aggregate folds a trial's comparisons into its report. The result depends
// only on the set of comparisons, not their order, so every dispatcher that
// holds the same set writes the same report. noise is the A/A trial's report,
// or nil.
func Aggregate(name string, cs []schemas.TrialComparison, noise *schemas.TrialReport, now time.Time) schemas.TrialReport {
	slices.SortFunc(cs, func(a, b schemas.TrialComparison) int {
		return cmp.Or(a.ComparedAt.Compare(b.ComparedAt), cmp.Compare(a.JobID, b.JobID))
	})
	rep := schemas.TrialReport{Name: name, TopDifferences: []schemas.TrialDifference{}, UpdatedAt: now.UTC()}
	type diffKey struct {
		kind string
		f    string
	}
	diffs := map[diffKey]*schemas.TrialDifference{}
	note := func(kind string, f schemas.Finding, job string) {
		k := diffKey{kind, fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%d\x00%s", f.ID, f.Package, f.Version, f.File, f.Line, f.Severity)}
		d := diffs[k]
		if d == nil {
			d = &schemas.TrialDifference{Kind: kind, Finding: f, ExampleJobs: []string{}}
			diffs[k] = d
		}
		d.Count++
		if len(d.ExampleJobs) < MaxExampleJobs {
			d.ExampleJobs = append(d.ExampleJobs, job)
		}
	}
	var ratios []float64
	for _, c := range cs {
		rep.JobType, rep.Primary, rep.Candidate, rep.Baseline = c.JobType, c.Primary, c.Candidate, c.Baseline
		rep.JobsCompared++
		pOK := c.PrimaryOutcome == schemas.OutcomeSucceeded && c.PrimaryError == ""
		cOK := c.CandidateOutcome == schemas.OutcomeSucceeded && c.CandidateError == ""
		if !pOK {
			rep.PrimaryErrors++
		}
		if !cOK {
			rep.Errors++
		}
		if !pOK || !cOK {
			continue
		}
		rep.Both += c.Both
		rep.OnlyPrimary += len(c.OnlyPrimary)
		rep.OnlyCandidate += len(c.OnlyCandidate)
		rep.SeverityDisagreements += len(c.SeverityDiffs)
		rep.Ignored += c.Ignored
		for _, f := range c.OnlyPrimary {
			note("only_primary", f, c.JobID)
		}
		for _, f := range c.OnlyCandidate {
			note("only_candidate", f, c.JobID)
		}
		for _, s := range c.SeverityDiffs {
			note("severity", s.Finding, c.JobID)
		}
		if c.PrimaryDuration > 0 {
			ratios = append(ratios, float64(c.CandidateDuration)/float64(c.PrimaryDuration))
		}
	}
	rep.AgreementRate = ratio(rep.Both-rep.SeverityDisagreements, rep.Both+rep.OnlyPrimary+rep.OnlyCandidate)
	rep.Precision = ratio(rep.Both, rep.Both+rep.OnlyCandidate)
	rep.Recall = ratio(rep.Both, rep.Both+rep.OnlyPrimary)
	if rep.JobsCompared > 0 {
		rep.ErrorRate = float64(rep.Errors) / float64(rep.JobsCompared)
	}
	rep.DurationRatioP50 = Percentile(ratios, 50)
	rep.DurationRatioP95 = Percentile(ratios, 95)
	if noise != nil {
		rep.NoiseTrial = noise.Name
		rep.NoiseDisagreement = 1 - noise.AgreementRate
		rep.NetDisagreement = (1 - rep.AgreementRate) - rep.NoiseDisagreement
	}
	for _, d := range diffs {
		rep.TopDifferences = append(rep.TopDifferences, *d)
	}
	slices.SortFunc(rep.TopDifferences, func(a, b schemas.TrialDifference) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Finding.ID, b.Finding.ID),
			cmp.Compare(a.Finding.Package, b.Finding.Package), cmp.Compare(a.Finding.Version, b.Finding.Version),
			cmp.Compare(a.Finding.File, b.Finding.File), cmp.Compare(a.Finding.Line, b.Finding.Line))
	})
	if len(rep.TopDifferences) > MaxTopDifferences {
		rep.TopDifferences = rep.TopDifferences[:MaxTopDifferences]
	}
	return rep
}

// ratio is n/d, and 1 when d is 0 (nothing to disagree on is agreement).
func ratio(n, d int) float64 {
	if d == 0 {
		return 1
	}
	return float64(n) / float64(d)
}

// Percentile is the nearest-rank p-th percentile of xs (0 for none).
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// Variance compares a target's previous findings with its new ones by id,
// package, file and line (a package upgraded but still vulnerable to the same
// id is not new), returning what appeared and what disappeared, sorted.
func Variance(prev, cur []schemas.Finding) (added, fixed []schemas.Finding) {
	key := func(f schemas.Finding) string {
		return fmt.Sprintf("%s\x00%s\x00%s\x00%d", f.ID, f.Package, f.File, f.Line)
	}
	count := func(fs []schemas.Finding) map[string]int {
		m := map[string]int{}
		for _, f := range fs {
			m[key(f)]++
		}
		return m
	}
	before, after := count(prev), count(cur)
	added, fixed = []schemas.Finding{}, []schemas.Finding{}
	for _, f := range cur {
		if k := key(f); before[k] > 0 {
			before[k]--
		} else {
			added = append(added, f)
		}
	}
	for _, f := range prev {
		if k := key(f); after[k] > 0 {
			after[k]--
		} else {
			fixed = append(fixed, f)
		}
	}
	return added, fixed
}
