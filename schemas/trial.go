package schemas

import "time"

// Severity is a finding's severity in the common finding model, Trivy's
// scale: every tool's levels are mapped onto it.
type Severity string

// Severities, most severe first.
const (
	SeverityCritical Severity = "CRITICAL"
	SeverityHigh     Severity = "HIGH"
	SeverityMedium   Severity = "MEDIUM"
	SeverityLow      Severity = "LOW"
	SeverityUnknown  Severity = "UNKNOWN"
)

// Rank orders severities: CRITICAL 4 … LOW 1, UNKNOWN (and anything else) 0.
func (s Severity) Rank() int {
	switch s {
	case SeverityCritical:
		return 4
	case SeverityHigh:
		return 3
	case SeverityMedium:
		return 2
	case SeverityLow:
		return 1
	}
	return 0
}

// Finding is one finding in the common finding model that workers normalise
// every tool's report to (Trivy JSON, SARIF), so reports of different tools
// can be compared without the comparer linking any tool.
type Finding struct {
	// ID is the vulnerability id (CVE-…, GHSA-…) or the rule id.
	ID string `json:"id"`
	// Aliases are other ids of the same finding (a CVE's GHSA), as the tool reported them.
	Aliases []string `json:"aliases,omitempty"`
	// Package and Version locate a vulnerable package.
	Package string `json:"package,omitempty"`
	Version string `json:"version,omitempty"`
	// File and Line locate a finding in a file (SAST, secrets, language packages).
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
	// Severity on the common scale.
	Severity Severity `json:"severity"`
}

// FindingSet is the normalised findings document a worker stores next to a
// task's reports (Result.Findings).
type FindingSet struct {
	// Tool is the tool that produced the report.
	Tool string `json:"tool"`
	// Source is the parser the findings were read with (trivy-json, sarif).
	Source string `json:"source"`
	// Findings are sorted by id, package, version, file and line.
	Findings []Finding `json:"findings"`
}

// FormatFindings and MediaTypeFindings describe a stored FindingSet
// (Result.Findings). It is never one of Result.Reports.
const (
	FormatFindings    = "findings"
	MediaTypeFindings = "application/vnd.ciss.findings+json"
)

// TrialMode says how a candidate ran next to the primary.
type TrialMode string

// Trial modes.
const (
	// TrialShadow: the candidate ran as a shadow; its result is never the job's.
	TrialShadow TrialMode = "shadow"
	// TrialCanary: the candidate's result was the job's result.
	TrialCanary TrialMode = "canary"
)

// SeverityDiff is a finding both tools report with different severities.
type SeverityDiff struct {
	// Finding is the primary's.
	Finding Finding `json:"finding"`
	// CandidateSeverity is the candidate's severity.
	CandidateSeverity Severity `json:"candidate_severity"`
}

// TrialComparison compares a candidate's findings with the primary's for one
// job. It is published on SubjectTrialCompared(trial) and kept in
// BucketTrials.
type TrialComparison struct {
	// Trial names the trial; Baseline marks an A/A (noise) trial.
	Trial    string `json:"trial"`
	Baseline bool   `json:"baseline,omitempty"`
	JobID    string `json:"job_id"`
	Tenant   string `json:"tenant"`
	JobType  string `json:"job_type"`
	// Primary and Candidate are the tools compared.
	Primary   string `json:"primary"`
	Candidate string `json:"candidate"`
	// PrimaryOutcome and CandidateOutcome are how each task ended;
	// PrimaryError and CandidateError say why one did not succeed or could
	// not be compared (no or unreadable findings document).
	PrimaryOutcome   TaskOutcome `json:"primary_outcome"`
	CandidateOutcome TaskOutcome `json:"candidate_outcome"`
	PrimaryError     string      `json:"primary_error,omitempty"`
	CandidateError   string      `json:"candidate_error,omitempty"`
	// PrimaryDuration and CandidateDuration are the tasks' run times.
	PrimaryDuration   Duration `json:"primary_duration"`
	CandidateDuration Duration `json:"candidate_duration"`
	// Both counts findings both reported; OnlyPrimary and OnlyCandidate list
	// the others, SeverityDiffs the shared ones whose severities differ.
	Both          int            `json:"both"`
	OnlyPrimary   []Finding      `json:"only_primary"`
	OnlyCandidate []Finding      `json:"only_candidate"`
	SeverityDiffs []SeverityDiff `json:"severity_diffs"`
	// Ignored counts differences the trial's ignore rules matched: neither
	// agreement nor disagreement.
	Ignored    int       `json:"ignored"`
	ComparedAt time.Time `json:"compared_at"`
}

// TrialDifference is one of a trial's most frequent differing findings.
type TrialDifference struct {
	// Kind is only_primary, only_candidate or severity.
	Kind    string  `json:"kind"`
	Finding Finding `json:"finding"`
	// Count is how many jobs had it; ExampleJobs names a few.
	Count       int      `json:"count"`
	ExampleJobs []string `json:"example_jobs"`
}

// TrialReport aggregates a trial's comparisons. GET /v1/trials/{name}
// answers it.
type TrialReport struct {
	Name      string `json:"name"`
	JobType   string `json:"job_type"`
	Primary   string `json:"primary"`
	Candidate string `json:"candidate"`
	// Baseline is true for an A/A trial (the primary against itself).
	Baseline bool `json:"baseline,omitempty"`
	// JobsCompared counts jobs with both results; Errors those where the
	// candidate failed or produced no readable findings (PrimaryErrors: the
	// primary). Finding counts cover the jobs where both succeeded.
	JobsCompared          int `json:"jobs_compared"`
	Errors                int `json:"errors"`
	PrimaryErrors         int `json:"primary_errors"`
	Both                  int `json:"both"`
	OnlyPrimary           int `json:"only_primary"`
	OnlyCandidate         int `json:"only_candidate"`
	SeverityDisagreements int `json:"severity_disagreements"`
	Ignored               int `json:"ignored"`
	// AgreementRate is (both − severity disagreements) / (both + only
	// primary + only candidate); 1 when neither found anything. Precision
	// is both / (both + only candidate), Recall both / (both + only
	// primary): the candidate measured against the primary.
	AgreementRate float64 `json:"agreement_rate"`
	Precision     float64 `json:"precision"`
	Recall        float64 `json:"recall"`
	// ErrorRate is Errors / JobsCompared.
	ErrorRate float64 `json:"error_rate"`
	// DurationRatioP50 and DurationRatioP95 are percentiles of candidate
	// duration / primary duration over jobs where both succeeded.
	DurationRatioP50 float64 `json:"duration_ratio_p50"`
	DurationRatioP95 float64 `json:"duration_ratio_p95"`
	// NoiseTrial names the A/A trial this one is measured against;
	// NoiseDisagreement is that trial's 1 − agreement rate and
	// NetDisagreement this trial's 1 − agreement rate minus it.
	NoiseTrial        string  `json:"noise_trial,omitempty"`
	NoiseDisagreement float64 `json:"noise_disagreement,omitempty"`
	NetDisagreement   float64 `json:"net_disagreement,omitempty"`
	// TopDifferences are the most frequent differing findings.
	TopDifferences []TrialDifference `json:"top_differences"`
	UpdatedAt      time.Time         `json:"updated_at"`
}

// VarianceReport says what changed between two scans of the same target (an
// image name, or a repository and branch). It is published on
// SubjectVariance(tenant); when it has new findings at or above the
// configured severity it is also published on SubjectVarianceAlert(tenant).
type VarianceReport struct {
	Tenant string `json:"tenant"`
	// Target is the image name without tag or digest, or repo@branch.
	Target string `json:"target"`
	// JobID is the new scan; PreviousJobID the one it is compared with.
	JobID         string `json:"job_id"`
	PreviousJobID string `json:"previous_job_id"`
	Tool          string `json:"tool"`
	// New and Fixed are findings that appeared and disappeared.
	New   []Finding `json:"new"`
	Fixed []Finding `json:"fixed"`
	// Alert is true when New has a finding at or above AlertSeverity.
	Alert         bool      `json:"alert"`
	AlertSeverity Severity  `json:"alert_severity,omitempty"`
	At            time.Time `json:"at"`
}

// Trial topology names and subjects.
const (
	// BucketTrials is the KV bucket of trial comparisons (key
	// <trial>.<job id>) and aggregates (key <trial>).
	BucketTrials = "ciss_trials"
	// BucketVariance is the KV bucket holding each target's last scan
	// findings, key <tenant>.<sha256 of the target>.
	BucketVariance = "ciss_variance"
	// StreamTrials keeps trial comparison and variance events.
	StreamTrials               = "CISS_TRIALS"
	SubjectTrialsPrefix        = "ciss.trials"          // .<trial>.compared
	SubjectVariancePrefix      = "ciss.variance"        // .<tenant>
	SubjectVarianceAlertPrefix = "ciss.alerts.variance" // .<tenant>
	// SubjectShadowTasksPrefix is where shadow tasks are queued (.<tool>),
	// in CISS_TASKS but on their own worker pools.
	SubjectShadowTasksPrefix = SubjectTasksPrefix + ".shadow"
	// SubjectAuditRoutingPrefix is where routing changes are audited
	// (.accepted, .rejected).
	SubjectAuditRoutingPrefix = "ciss.audit.routing"
)

// Trial event types.
const (
	TypeTrialCompared   = "dev.ciss.trial.compared.v1"   // data: TrialComparison
	TypeVarianceChanged = "dev.ciss.variance.changed.v1" // data: VarianceReport
)

// SubjectTrialCompared is where a trial's comparisons are published, so a
// team can follow one trial: `nats sub ciss.trials.<name>.compared`.
func SubjectTrialCompared(trial string) string {
	return SubjectTrialsPrefix + "." + trial + ".compared"
}

// SubjectShadowTask is where a tool's shadow tasks are queued.
func SubjectShadowTask(tool string) string { return SubjectShadowTasksPrefix + "." + tool }

// SubjectVariance is where a tenant's variance reports are published.
func SubjectVariance(tenant string) string { return SubjectVariancePrefix + "." + tenant }

// SubjectVarianceAlert is where variance reports with new severe findings go.
func SubjectVarianceAlert(tenant string) string { return SubjectVarianceAlertPrefix + "." + tenant }

// RoutingAudit records one routing change, accepted or rejected, on
// SubjectAuditRouting.
type RoutingAudit struct {
	// Accepted says whether the new routing took effect; Error why not.
	Accepted bool   `json:"accepted"`
	Error    string `json:"error,omitempty"`
	// File is the routing file's path, Digest its content's sha256 and Owner
	// the file owner (uid, and user name when known): who changed it.
	File   string `json:"file"`
	Digest string `json:"digest"`
	Owner  string `json:"owner"`
	// Trials names the trials the routing declares.
	Trials []string  `json:"trials,omitempty"`
	At     time.Time `json:"at"`
}

// TypeRoutingAudited is the audit record of a routing change.
const TypeRoutingAudited = "dev.ciss.routing.audited.v1" // data: RoutingAudit

// SubjectAuditRouting is where routing changes with a verdict are audited.
func SubjectAuditRouting(accepted bool) string {
	if accepted {
		return SubjectAuditRoutingPrefix + ".accepted"
	}
	return SubjectAuditRoutingPrefix + ".rejected"
}
