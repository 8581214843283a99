package schemas

import (
	"time"
	"unicode/utf8"
)

// Task is one unit of work for one tool, published by the dispatcher and
// consumed by the workers that implement the tool.
type Task struct {
	// ID is unique per (job, tool): "<job id>.<tool>". It is also the JetStream
	// message id, so a task published twice is stored once.
	ID string `json:"id"`
	// JobID and Tenant identify the job the task belongs to.
	JobID  string `json:"job_id"`
	Tenant string `json:"tenant"`
	// Type is the job type; Tool the implementation that must run it.
	Type string `json:"type"`
	Tool string `json:"tool"`
	// Role says whether this task's result is the job's result.
	Role TaskRole `json:"role"`
	// Target, Params and Lane are the job's.
	Target Target            `json:"target"`
	Params map[string]string `json:"params,omitempty"`
	Lane   Lane              `json:"lane"`
	// Cache is whether the worker may answer from the result cache.
	Cache bool `json:"cache"`
	// Timeout bounds one run of the tool; zero means the worker's default.
	Timeout Duration `json:"timeout,omitempty"`
	// CreatedAt is when the dispatcher published the task.
	CreatedAt time.Time `json:"created_at"`
	// Provenance is the job's: the git event it was created from, if any.
	Provenance *Provenance `json:"provenance,omitempty"`
	// RequestedBy is the job's requester identity (SPIFFE ID or certificate
	// subject), for audit records such as protected actions'.
	RequestedBy string `json:"requested_by,omitempty"`
}

// TaskStarted is published by a worker when it starts (or restarts) a task.
type TaskStarted struct {
	TaskID string   `json:"task_id"`
	JobID  string   `json:"job_id"`
	Tenant string   `json:"tenant"`
	Tool   string   `json:"tool"`
	Role   TaskRole `json:"role"`
	// Worker names the worker instance.
	Worker string `json:"worker"`
	// Attempt is the delivery count of the task message, from 1.
	Attempt   int       `json:"attempt"`
	StartedAt time.Time `json:"started_at"`
}

// TaskOutcome is how a task ended.
type TaskOutcome string

// Task outcomes.
const (
	OutcomeSucceeded TaskOutcome = "succeeded"
	OutcomeFailed    TaskOutcome = "failed"
	OutcomeCancelled TaskOutcome = "cancelled"
)

// TaskResult is published by a worker when a task ends, successfully or not.
// Exactly one TaskResult is stored per task: its JetStream message id is the
// task id, so a worker that crashed after publishing and re-ran the task
// publishes a duplicate that the stream drops.
type TaskResult struct {
	TaskID string   `json:"task_id"`
	JobID  string   `json:"job_id"`
	Tenant string   `json:"tenant"`
	Tool   string   `json:"tool"`
	Role   TaskRole `json:"role"`
	// ToolVersion is the version of the tool that ran (or whose cached result was used).
	ToolVersion string      `json:"tool_version,omitempty"`
	Outcome     TaskOutcome `json:"outcome"`
	// Error is set unless the outcome is succeeded.
	Error *Error `json:"error,omitempty"`
	// Result is set when the outcome is succeeded.
	Result *Result `json:"result,omitempty"`
	// CacheHit is true when the result was answered from the result cache.
	CacheHit bool `json:"cache_hit"`
	// Worker names the worker instance; Attempt is the delivery that produced this.
	Worker    string    `json:"worker"`
	Attempt   int       `json:"attempt"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at"`
}

// CancelRequest asks the workers running a job's tasks to stop them. It travels on
// core NATS (SubjectCancel): the job state is already cancelled when it is sent,
// so a worker that misses it only wastes the rest of one run.
type CancelRequest struct {
	JobID  string `json:"job_id"`
	Tenant string `json:"tenant"`
	// By is the identity that cancelled.
	By string `json:"by"`
}

// DeadLetter is what the dead-letter stream holds: the original message and why
// it was given up on.
type DeadLetter struct {
	// Stream and Sequence locate the original message.
	Stream   string `json:"stream"`
	Sequence uint64 `json:"sequence"`
	Subject  string `json:"subject"`
	// Consumer is the durable that gave up; Deliveries how often it tried.
	Consumer   string `json:"consumer"`
	Deliveries int    `json:"deliveries"`
	// Reason is a human-readable cause.
	Reason string `json:"reason"`
	// Data is the original message body, cut to MaxDeadLetterData.
	Data []byte `json:"data"`
	// Truncated says Data was cut; OriginalSize is the body's full length.
	Truncated    bool      `json:"truncated,omitempty"`
	OriginalSize int       `json:"original_size"`
	At           time.Time `json:"at"`
}

// Dead-letter bounds. Data travels base64-encoded (a third larger), and the
// whole event must stay under MaxEventSize, so a message of any size can be
// dead-lettered.
const (
	MaxDeadLetterData   = 128 << 10
	MaxDeadLetterReason = 2 << 10
)

// Bounded returns dl with Data and Reason cut to their limits, Truncated set
// when Data was cut, and OriginalSize recorded.
//
// Bounded is idempotent: applied to a bounded value it changes nothing.
func (dl DeadLetter) Bounded() DeadLetter {
	if !dl.Truncated {
		dl.OriginalSize = len(dl.Data)
	}
	if len(dl.Data) > MaxDeadLetterData {
		dl.Data, dl.Truncated = dl.Data[:MaxDeadLetterData], true
	}
	if dl.Data == nil {
		dl.Data = []byte{}
	}
	if len(dl.Reason) > MaxDeadLetterReason {
		// Cut on a character boundary: a split UTF-8 sequence would come back
		// from JSON as U+FFFD, longer than the limit.
		n := MaxDeadLetterReason
		for n > 0 && !utf8.RuneStart(dl.Reason[n]) {
			n--
		}
		dl.Reason = dl.Reason[:n]
	}
	return dl
}
