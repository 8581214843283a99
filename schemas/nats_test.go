package schemas

import (
	"strings"
	"testing"
)

func TestValidToken(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		s    string
		want bool
	}{
		{"a", true},
		{"trivy", true},
		{"payments-eu-1", true},
		{"a-", true},
		{strings.Repeat("a", MaxTokenLen), true},
		{strings.Repeat("a", MaxTokenLen+1), false},
		{"", false},
		{"1tenant", false},
		{"-tenant", false},
		{"Tenant", false},
		{"tenAnt", false},
		// Subject injection: each would add, remove or wildcard a subject level.
		{"a.b", false},
		{"a.", false},
		{".a", false},
		{"a*", false},
		{"*", false},
		{">", false},
		{"a>", false},
		{" ", false},
		{"a b", false},
		{"a\tb", false},
		{"a\nb", false},
		{"a\r\nPUB x 1", false},
		{"a\x00", false},
		{"a_b", false},
		{"a/b", false},
		{"é", false},
		{"aé", false},
		{"a\u0130", false}, // İ, lower-cases to two runes
		{"ａ", false},       // full-width a
		{"a\xff", false},   // invalid UTF-8
	} {
		if got := ValidToken(c.s); got != c.want {
			t.Errorf("ValidToken(%q) = %v, want %v", c.s, got, c.want)
		}
	}
}

func TestValidJobID(t *testing.T) {
	t.Parallel()
	const id = "0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d"
	for _, c := range []struct {
		s    string
		want bool
	}{
		{id, true},
		{"00000000-0000-0000-0000-000000000000", true},
		{"", false},
		{strings.ToUpper(id), false},
		{id[:35], false},
		{id + "0", false},
		{"0193a5c2x7f4e-7b21-9c3d-5e8f1a2b3c4d", false},
		{"0193a5c27f4e7b219c3d5e8f1a2b3c4d", false},
		{"{" + id[1:35] + "}", false},
		{"g193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d", false},
		// Subject and key injection attempts of the right length.
		{"0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c.d", false},
		{"0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c*d", false},
		{"0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c>d", false},
		{"0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c d", false},
		{"0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c\nd", false},
		{"0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3\u00e9", false}, // 36 bytes, 35 runes
		{"0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c\xff", false},
		{"*", false},
		{">", false},
		{"a.b", false},
	} {
		if got := ValidJobID(c.s); got != c.want {
			t.Errorf("ValidJobID(%q) = %v, want %v", c.s, got, c.want)
		}
	}
}

func TestSubjectsAndKeys(t *testing.T) {
	t.Parallel()
	const id = "0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d"
	for _, c := range []struct{ got, want string }{
		{SubjectJobRequested(LaneBulk), "ciss.jobs.requested.bulk"},
		{SubjectJobCompleted("payments"), "ciss.jobs.completed.payments"},
		{SubjectTask(LaneInteractive, "trivy"), "ciss.tasks.interactive.trivy"},
		{SubjectResultStarted("trivy"), "ciss.results.started.trivy"},
		{SubjectResultCompleted("trivy"), "ciss.results.completed.trivy"},
		{SubjectDeadLetter(StreamTasks), "ciss.dlq.CISS_TASKS"},
		{SubjectCancel(id), "ciss.control.cancel." + id},
		{JobKey("payments", id), "payments." + id},
		{TaskID(id, "trivy"), id + ".trivy"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
