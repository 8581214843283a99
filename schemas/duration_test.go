package schemas

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

func TestDurationJSON(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, time.Nanosecond, 1500 * time.Microsecond, 90 * time.Second, 5 * time.Minute, 26 * time.Hour} {
		b, err := json.Marshal(Duration(d))
		if err != nil {
			t.Fatal(err)
		}
		if want := `"` + d.String() + `"`; string(b) != want {
			t.Errorf("Marshal(%v) = %s, want %s", d, b, want)
		}
		var got Duration
		if err := json.Unmarshal(b, &got); err != nil || time.Duration(got) != d {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", b, time.Duration(got), err, d)
		}
	}
	for in, want := range map[string]time.Duration{`"90s"`: 90 * time.Second, `"1h2m"`: time.Hour + 2*time.Minute, `"0"`: 0, `"250ms"`: 250 * time.Millisecond} {
		var got Duration
		if err := json.Unmarshal([]byte(in), &got); err != nil || time.Duration(got) != want {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", in, time.Duration(got), err, want)
		}
	}
}

func TestDurationRejects(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`90`, `1.5`, `-1`, `0`, // numbers: the unit would be ambiguous
		`"-5s"`, `"-1ns"`, // negative
		`""`, `"5"`, `"abc"`, `"5 m"`, `"1d"`, `"9999999999h"`,
		`null`, `true`, `["5s"]`, `{"d":"5s"}`,
	} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("Unmarshal(%s) = %v, want an error", in, time.Duration(d))
		}
	}
	var task Task
	if err := DecodeStrict([]byte(`{"timeout":300}`), &task); err == nil {
		t.Error("a Task with a numeric timeout decoded")
	}
}

// TestDurationNegativeMarshalFails checks that a negative Duration, which no
// consumer could decode, is refused on the way out, so a producer learns of it
// instead of publishing a message every consumer rejects.
func TestDurationNegativeMarshalFails(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{-time.Nanosecond, -5 * time.Second, math.MinInt64} {
		if b, err := json.Marshal(Duration(d)); err == nil {
			t.Errorf("Marshal(%v) = %s, want an error", d, b)
		}
	}
	if b, err := json.Marshal(Task{Timeout: Duration(-time.Second)}); err == nil {
		t.Errorf("a Task with a negative timeout encoded: %s", b)
	}
	if b, err := Marshal(TypeTaskRequested, "/ciss/dispatcher", "", Task{Timeout: Duration(-time.Second)}); err == nil || b != nil {
		t.Errorf("Marshal of a task event with a negative timeout = %s, %v; want no event and an error", b, err)
	}
}
