package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestDeadLetterBounded(t *testing.T) {
	t.Parallel()
	body := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i % 251)
		}
		return b
	}
	for _, c := range []struct {
		name          string
		data          []byte
		reason        string
		wantData      int
		wantTruncated bool
		wantReason    int
	}{
		{"nil data", nil, "r", 0, false, 1},
		{"empty data", []byte{}, "", 0, false, 0},
		{"small", body(10), "r", 10, false, 1},
		{"exactly MaxDeadLetterData", body(MaxDeadLetterData), "r", MaxDeadLetterData, false, 1},
		{"one over MaxDeadLetterData", body(MaxDeadLetterData + 1), "r", MaxDeadLetterData, true, 1},
		{"far over MaxDeadLetterData", body(10 * MaxEventSize), "r", MaxDeadLetterData, true, 1},
		{"reason exactly MaxDeadLetterReason", nil, strings.Repeat("r", MaxDeadLetterReason), 0, false, MaxDeadLetterReason},
		{"reason one over", nil, strings.Repeat("r", MaxDeadLetterReason+1), 0, false, MaxDeadLetterReason},
		{"long reason and data", body(MaxDeadLetterData * 2), strings.Repeat("r", 10*MaxDeadLetterReason), MaxDeadLetterData, true, MaxDeadLetterReason},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			at := time.Date(2025, 1, 14, 3, 10, 0, 0, time.UTC)
			in := DeadLetter{Stream: StreamTasks, Sequence: 7, Subject: "s", Consumer: "c", Deliveries: 5, Reason: c.reason, Data: c.data, At: at}
			orig := bytes.Clone(c.data)
			dl := in.Bounded()
			if dl.Data == nil {
				t.Error("Data is nil; it must encode as a string, not null")
			}
			if len(dl.Data) != c.wantData || !bytes.Equal(dl.Data, orig[:c.wantData]) {
				t.Errorf("Data has %d bytes, want the first %d", len(dl.Data), c.wantData)
			}
			if dl.Truncated != c.wantTruncated || dl.OriginalSize != len(c.data) {
				t.Errorf("Truncated %v, OriginalSize %d; want %v, %d", dl.Truncated, dl.OriginalSize, c.wantTruncated, len(c.data))
			}
			if dl.Reason != c.reason[:c.wantReason] {
				t.Errorf("Reason has %d bytes, want the first %d", len(dl.Reason), c.wantReason)
			}
			if dl.Stream != in.Stream || dl.Sequence != in.Sequence || dl.Subject != in.Subject ||
				dl.Consumer != in.Consumer || dl.Deliveries != in.Deliveries || !dl.At.Equal(at) {
				t.Errorf("Bounded changed other fields: %+v", dl)
			}
			if !bytes.Equal(in.Data, orig) || in.Truncated || in.OriginalSize != 0 || in.Reason != c.reason {
				t.Error("Bounded changed its receiver")
			}

			b, err := Marshal(TypeDeadLettered, "/ciss/workers/w", "", dl)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			var got DeadLetter
			if _, err := Unmarshal(b, TypeDeadLettered, &got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Data, dl.Data) || got.Truncated != dl.Truncated || got.OriginalSize != dl.OriginalSize || got.Reason != dl.Reason {
				t.Errorf("round trip changed the dead letter: truncated %v, original size %d, %d data bytes, %d reason bytes",
					got.Truncated, got.OriginalSize, len(got.Data), len(got.Reason))
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(mustMarshal(t, dl), &raw); err != nil {
				t.Fatal(err)
			}
			if string(raw["data"]) == "null" {
				t.Error(`data encodes as null`)
			}
			if _, ok := raw["truncated"]; ok != c.wantTruncated {
				t.Errorf("truncated present %v, want %v (omitted unless true)", ok, c.wantTruncated)
			}
		})
	}
}

// TestUnicodeFoldAndCutBoundaries: duplicate keys equal under Unicode case
// folding (as encoding/json matches them) are rejected, and Bounded cuts a
// reason on a character boundary, idempotently.
func TestUnicodeFoldAndCutBoundaries(t *testing.T) {
	t.Parallel()
	dup := strings.Replace(validEnvelope(cancelData), `"source":"/ciss/test"`, `"source":"/ciss/test","ſource":"/evil"`, 1)
	if _, err := ParseEvent([]byte(dup)); !errors.Is(err, ErrDuplicateKey) {
		t.Errorf(`"source" and "ſource" in one event: %v, want ErrDuplicateKey`, err)
	}
	var job Job
	if err := DecodeStrict([]byte(`{"status":"queued","ſtatus":"succeeded"}`), &job); !errors.Is(err, ErrDuplicateKey) {
		t.Errorf(`"status" and "ſtatus" in one job: %v, want ErrDuplicateKey`, err)
	}
	dl := DeadLetter{Reason: strings.Repeat("€", MaxDeadLetterReason), Data: make([]byte, MaxDeadLetterData+5)}.Bounded()
	if !utf8.ValidString(dl.Reason) || len(dl.Reason) > MaxDeadLetterReason {
		t.Errorf("Bounded reason: valid %v, %d bytes", utf8.ValidString(dl.Reason), len(dl.Reason))
	}
	var back DeadLetter
	if err := json.Unmarshal(mustMarshal(t, dl), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Reason) > MaxDeadLetterReason {
		t.Errorf("reason came back with %d bytes", len(back.Reason))
	}
	if again := dl.Bounded(); again.OriginalSize != MaxDeadLetterData+5 || !again.Truncated {
		t.Errorf("Bounded twice: original size %d, truncated %v", again.OriginalSize, again.Truncated)
	}
}
