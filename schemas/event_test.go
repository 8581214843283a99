package schemas

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// validEnvelope is a minimal valid event with the given data.
func validEnvelope(data string) string {
	return `{"specversion":"1.0","id":"e1","source":"/ciss/test","type":"dev.ciss.job.cancel.v1",` +
		`"time":"2025-01-14T09:30:00Z","datacontenttype":"application/json","data":` + data + `}`
}

const cancelData = `{"job_id":"0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d","tenant":"payments","by":"alice"}`

func TestParseEventAccepts(t *testing.T) {
	t.Parallel()
	ev, err := ParseEvent([]byte(validEnvelope(cancelData)))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != TypeCancelRequest || ev.ID != "e1" || !ev.Time.Equal(time.Date(2025, 1, 14, 9, 30, 0, 0, time.UTC)) {
		t.Errorf("ParseEvent = %+v", ev)
	}
	var c CancelRequest
	if err := ev.Decode(TypeCancelRequest, &c); err != nil || c.By != "alice" {
		t.Errorf("Decode = %+v, %v", c, err)
	}
	// Whitespace around the value is not trailing data.
	if _, err := ParseEvent([]byte(" \n" + validEnvelope(cancelData) + "\n\t ")); err != nil {
		t.Errorf("surrounding whitespace rejected: %v", err)
	}
}

func TestParseEventRejects(t *testing.T) {
	t.Parallel()
	valid := validEnvelope(cancelData)
	for name, in := range map[string]string{
		"empty":                "",
		"not json":             "hello",
		"null":                 "null",
		"array":                "[]",
		"string":               `"1.0"`,
		"empty object":         "{}",
		"unknown field":        strings.Replace(valid, `"id":"e1"`, `"id":"e1","traceparent":"00-x"`, 1),
		"wrong specversion":    strings.Replace(valid, `"1.0"`, `"0.3"`, 1),
		"specversion number":   strings.Replace(valid, `"1.0"`, `1.0`, 1),
		"missing specversion":  strings.Replace(valid, `"specversion":"1.0",`, ``, 1),
		"missing id":           strings.Replace(valid, `"id":"e1",`, ``, 1),
		"empty id":             strings.Replace(valid, `"id":"e1"`, `"id":""`, 1),
		"missing source":       strings.Replace(valid, `"source":"/ciss/test",`, ``, 1),
		"missing type":         strings.Replace(valid, `"type":"dev.ciss.job.cancel.v1",`, ``, 1),
		"bad time":             strings.Replace(valid, `2025-01-14T09:30:00Z`, `2025-01-14 09:30:00`, 1),
		"trailing object":      valid + `{}`,
		"trailing garbage":     valid + `x`,
		"two events":           valid + valid,
		"truncated":            valid[:len(valid)-1],
		"oversize":             validEnvelope(`{"pad":"` + strings.Repeat("x", MaxEventSize) + `"}`),
		"oversize of spaces":   valid + strings.Repeat(" ", MaxEventSize),
		"binary mode envelope": `{"data_base64":"eyJ9"}`,
		"missing time":         strings.Replace(valid, `"time":"2025-01-14T09:30:00Z",`, ``, 1),
		"zero time":            strings.Replace(valid, `2025-01-14T09:30:00Z`, `0001-01-01T00:00:00Z`, 1),
		"null time":            strings.Replace(valid, `"2025-01-14T09:30:00Z"`, `null`, 1),
		"missing content type": strings.Replace(valid, `"datacontenttype":"application/json",`, ``, 1),
		"other content type":   strings.Replace(valid, `"application/json"`, `"text/plain"`, 1),
		"content type case":    strings.Replace(valid, `"application/json"`, `"Application/JSON"`, 1),
		"content type params":  strings.Replace(valid, `"application/json"`, `"application/json; charset=utf-8"`, 1),
		"duplicate key":        strings.Replace(valid, `"id":"e1"`, `"id":"e1","id":"e2"`, 1),
		"duplicate in data":    validEnvelope(`{"job_id":"x","tenant":"t","by":"alice","by":"mallory"}`),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseEvent([]byte(in))
			if !errors.Is(err, ErrNotCloudEvent) {
				t.Errorf("ParseEvent = %v, want ErrNotCloudEvent", err)
			}
		})
	}
}

func TestParseEventSizeLimit(t *testing.T) {
	t.Parallel()
	base := validEnvelope(`{"pad":""}`)
	exact := validEnvelope(`{"pad":"` + strings.Repeat("x", MaxEventSize-len(base)) + `"}`)
	if len(exact) != MaxEventSize {
		t.Fatalf("built %d bytes, want %d", len(exact), MaxEventSize)
	}
	if _, err := ParseEvent([]byte(exact)); err != nil {
		t.Errorf("event of exactly MaxEventSize rejected: %v", err)
	}
	if _, err := ParseEvent([]byte(exact + " ")); !errors.Is(err, ErrNotCloudEvent) {
		t.Errorf("event of MaxEventSize+1 bytes: %v, want ErrNotCloudEvent", err)
	}
}

func TestEventDecode(t *testing.T) {
	t.Parallel()
	ev, err := ParseEvent([]byte(validEnvelope(cancelData)))
	if err != nil {
		t.Fatal(err)
	}
	var job Job
	if err := ev.Decode(TypeJobRequested, &job); !errors.Is(err, ErrUnexpectedType) {
		t.Errorf("Decode with another type = %v, want ErrUnexpectedType", err)
	}
	if _, err := Unmarshal([]byte(validEnvelope(cancelData)), TypeTaskStarted, new(TaskStarted)); !errors.Is(err, ErrUnexpectedType) {
		t.Errorf("Unmarshal with another type = %v, want ErrUnexpectedType", err)
	}
	if _, err := Unmarshal([]byte("{}"), TypeCancelRequest, new(CancelRequest)); !errors.Is(err, ErrNotCloudEvent) {
		t.Errorf("Unmarshal of a non-event = %v, want ErrNotCloudEvent", err)
	}
	for name, data := range map[string]string{
		"unknown data field": `{"job_id":"x","tenant":"t","by":"b","extra":1}`,
		"wrong data type":    `{"job_id":1}`,
		"data not an object": `"x"`,
	} {
		ev, err := ParseEvent([]byte(validEnvelope(data)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		err = ev.Decode(TypeCancelRequest, new(CancelRequest))
		if err == nil || errors.Is(err, ErrUnexpectedType) || errors.Is(err, ErrNotCloudEvent) {
			t.Errorf("%s: Decode = %v, want a data decoding error", name, err)
		}
	}
	if err := (Event{Type: TypeCancelRequest}).Decode(TypeCancelRequest, new(CancelRequest)); err == nil {
		t.Error("Decode of an event without data succeeded")
	}
}

func TestMarshalUnmarshal(t *testing.T) {
	t.Parallel()
	in := CancelRequest{JobID: "0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d", Tenant: "payments", By: "alice"}
	before := time.Now()
	b, err := Marshal(TypeCancelRequest, "/ciss/gateway", in.JobID, in)
	if err != nil {
		t.Fatal(err)
	}
	var out CancelRequest
	ev, err := Unmarshal(b, TypeCancelRequest, &out)
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Errorf("data = %+v, want %+v", out, in)
	}
	if ev.SpecVersion != SpecVersion || ev.Source != "/ciss/gateway" || ev.Subject != in.JobID || ev.DataContentType != MediaTypeJSON {
		t.Errorf("envelope = %+v", ev)
	}
	if raw, err := hex.DecodeString(ev.ID); err != nil || len(raw) != 16 {
		t.Errorf("id %q is not 128 bits of hex", ev.ID)
	}
	if ev.Time.Location() != time.UTC || ev.Time.Before(before.Add(-time.Second)) {
		t.Errorf("time = %v, want now in UTC", ev.Time)
	}
	if NewEventID() == NewEventID() {
		t.Error("NewEventID repeated itself")
	}
	if _, err := Marshal(TypeCancelRequest, "s", "", func() {}); err == nil {
		t.Error("Marshal of unencodable data succeeded")
	}
	// Subject is omitted when empty.
	b, err = Marshal(TypeCancelRequest, "s", "", in)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"subject"`) {
		t.Errorf("empty subject encoded: %s", b)
	}
}

// TestParseEventRejectsDuplicateKeys covers keys that encoding/json would
// let the last of win, silently: a parser that keeps the first, or matches
// names case-sensitively, would read another event than Go does.
func TestParseEventRejectsDuplicateKeys(t *testing.T) {
	t.Parallel()
	valid := validEnvelope(cancelData)
	for name, in := range map[string]string{
		"type twice":             strings.Replace(valid, `"type":"dev.ciss.job.cancel.v1"`, `"type":"dev.ciss.deadletter.v1","type":"dev.ciss.job.cancel.v1"`, 1),
		"type in other case":     strings.Replace(valid, `"type":"dev.ciss.job.cancel.v1"`, `"type":"dev.ciss.deadletter.v1","TYPE":"dev.ciss.job.cancel.v1"`, 1),
		"type in mixed case":     strings.Replace(valid, `"type":"dev.ciss.job.cancel.v1"`, `"Type":"dev.ciss.deadletter.v1","tYpE":"dev.ciss.job.cancel.v1"`, 1),
		"escaped duplicate":      strings.Replace(valid, `"id":"e1"`, `"id":"e1","\u0069d":"e2"`, 1),
		"data twice":             strings.TrimSuffix(valid, "}") + `,"data":` + cancelData + "}",
		"data key twice":         validEnvelope(`{"job_id":"x","tenant":"t","by":"alice","by":"mallory"}`),
		"data key in other case": validEnvelope(`{"job_id":"x","tenant":"t","by":"alice","BY":"mallory"}`),
		"deep in data":           validEnvelope(`{"a":[1,{"b":{"c":1,"C":2}}]}`),
		"kelvin sign folds to k": validEnvelope(`{"k":1,"\u212a":2}`),
		"job request target key": validEnvelope(`{"target":{"image":"registry.example.com/a","Image":"evil.example/b"}}`),
		"after a nested object":  validEnvelope(`{"a":{"x":1},"b":[{"x":1}],"A":2}`),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseEvent([]byte(in))
			if !errors.Is(err, ErrNotCloudEvent) || !errors.Is(err, ErrDuplicateKey) {
				t.Errorf("ParseEvent = %v, want ErrNotCloudEvent and ErrDuplicateKey", err)
			}
		})
	}
}

// TestEventDecodeRejectsMissingData checks that null or absent data is an
// error rather than a zero value of the data type.
func TestEventDecodeRejectsMissingData(t *testing.T) {
	t.Parallel()
	noData := strings.Replace(validEnvelope(cancelData), `,"data":`+cancelData, ``, 1)
	for name, in := range map[string]string{
		"null":            validEnvelope("null"),
		"null in spaces":  validEnvelope(" \n null \t"),
		"absent":          noData,
		"absent in Event": "",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ev := Event{Type: TypeCancelRequest}
			if in != "" {
				var err error
				if ev, err = ParseEvent([]byte(in)); err != nil {
					t.Fatal(err)
				}
			}
			var c CancelRequest
			if err := ev.Decode(TypeCancelRequest, &c); err == nil || errors.Is(err, ErrUnexpectedType) {
				t.Errorf("Decode = %v (data %+v), want a data error", err, c)
			}
			if in != "" {
				if _, err := Unmarshal([]byte(in), TypeCancelRequest, &c); err == nil {
					t.Error("Unmarshal succeeded")
				}
			}
		})
	}
	// Empty objects and arrays are data, not missing data.
	ev, err := ParseEvent([]byte(validEnvelope(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.Decode(TypeCancelRequest, new(CancelRequest)); err != nil {
		t.Errorf("Decode of {} = %v", err)
	}
}

func TestDecodeStrictDuplicateKeys(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in  string
		dup bool
	}{
		{`{"a":1,"a":2}`, true},
		{`{"a":1,"b":2,"a":3}`, true},
		{`{"a":1,"A":2}`, true},
		{`{"Key":1,"kEY":2}`, true},
		{`{"a":1,"\u0061":2}`, true},
		{`{"\u212a":1,"k":2}`, true}, // KELVIN SIGN lower-cases to k
		{`{"a":{"b":1,"b":2}}`, true},
		{`{"a":{"b":1,"B":2}}`, true},
		{`{"a":[{"b":1},{"c":1,"c":2}]}`, true},
		{`[{"a":1,"A":1}]`, true},
		{`[[[{"x":{"y":[{"z":1,"Z":2}]}}]]]`, true},
		{`{"a":{"x":1},"A":2}`, true},
		{`{"a":[1,2],"a":[1,2]}`, true},
		{`{"":1,"":2}`, true},
		{`{"a":1,"a":2`, true}, // found before the syntax error
		// Keys equal to values, to other objects' keys or to nothing are fine.
		{`{"a":"a"}`, false},
		{`{"a":["a","a"]}`, false},
		{`{"a":"A","A_":"a"}`, false},
		{`{"a":{"a":{"a":1}}}`, false},
		{`[{"a":1},{"a":1}]`, false},
		{`{"a":{"b":1},"b":{"a":1}}`, false},
		{`{"a":[],"b":{},"c":[{}],"d":null}`, false},
		{`["a","a",{"a":"a"}]`, false},
		{`{"ab":1,"a":1,"b":1}`, false},
		{`{"a":1}`, false},
		{`"a"`, false},
		{`{}`, false},
	} {
		var v any
		err := DecodeStrict([]byte(c.in), &v)
		if got := errors.Is(err, ErrDuplicateKey); got != c.dup {
			t.Errorf("DecodeStrict(%s) = %v, duplicate %v, want %v", c.in, err, got, c.dup)
		}
		if !c.dup && err != nil {
			t.Errorf("DecodeStrict(%s) = %v", c.in, err)
		}
	}
	// Into a struct: the duplicate is caught before encoding/json picks a winner.
	var r JobRequest
	err := DecodeStrict([]byte(`{"type":"image-scan","target":{"image":"registry.example.com/a","IMAGE":"evil.example/b"}}`), &r)
	if !errors.Is(err, ErrDuplicateKey) {
		t.Errorf("JobRequest with target.image twice: %v, %+v", err, r)
	}
	var c CancelRequest
	if err := DecodeStrict([]byte(`{"job_id":"x","Tenant":"a","tenant":"b","by":"c"}`), &c); !errors.Is(err, ErrDuplicateKey) {
		t.Errorf("CancelRequest with tenant twice: %v, %+v", err, c)
	}
}

// TestDeadLetterOfHugeMessage checks that a message of any size can be
// dead-lettered: the bounded dead letter fits in an event that consumers parse,
// even with a worst-case reason that JSON escapes to six bytes a byte.
func TestDeadLetterOfHugeMessage(t *testing.T) {
	t.Parallel()
	body := make([]byte, 4*MaxEventSize)
	for i := range body {
		body[i] = byte(i * 7)
	}
	dl := DeadLetter{
		Stream: StreamTasks, Sequence: 1 << 40, Subject: "ciss.tasks.bulk.trivy", Consumer: "worker-trivy-bulk",
		Deliveries: 5, Reason: strings.Repeat("<\x00", MaxDeadLetterReason), Data: body,
		At: time.Date(2025, 1, 14, 3, 10, 0, 0, time.UTC),
	}.Bounded()
	b, err := Marshal(TypeDeadLettered, "/ciss/workers/worker-trivy-0", "ciss.tasks.bulk.trivy", dl)
	if err != nil {
		t.Fatalf("Marshal of a bounded dead letter: %v", err)
	}
	if len(b) > MaxEventSize {
		t.Fatalf("bounded dead letter event is %d bytes", len(b))
	}
	var got DeadLetter
	if _, err := Unmarshal(b, TypeDeadLettered, &got); err != nil {
		t.Fatal(err)
	}
	if !got.Truncated || got.OriginalSize != len(body) || !bytes.Equal(got.Data, body[:MaxDeadLetterData]) {
		t.Errorf("dead letter came back truncated %v, original size %d, %d data bytes; want true, %d, the first %d bytes",
			got.Truncated, got.OriginalSize, len(got.Data), len(body), MaxDeadLetterData)
	}
	if got.Reason != dl.Reason || len(got.Reason) != MaxDeadLetterReason {
		t.Errorf("reason came back with %d bytes, want %d", len(got.Reason), MaxDeadLetterReason)
	}
}

// TestMarshalRejectsOversizeEvent checks that a producer learns of an oversize
// event from Marshal, not from every consumer rejecting it.
func TestMarshalRejectsOversizeEvent(t *testing.T) {
	t.Parallel()
	huge := DeadLetter{Stream: StreamTasks, Data: make([]byte, MaxEventSize)}
	b, err := Marshal(TypeDeadLettered, "/ciss/dispatcher", "", huge)
	if !errors.Is(err, ErrEventTooLarge) || b != nil {
		t.Errorf("Marshal of an unbounded dead letter = %d bytes, %v; want ErrEventTooLarge", len(b), err)
	}
	// Escaping counts: 50,000 '<' are 300,000 bytes once encoded.
	b, err = Marshal(TypeCancelRequest, "s", "", CancelRequest{By: strings.Repeat("<", 50_000)})
	if !errors.Is(err, ErrEventTooLarge) || b != nil {
		t.Errorf("Marshal of data that escapes past the limit = %d bytes, %v; want ErrEventTooLarge", len(b), err)
	}
	if _, err := Marshal(TypeDeadLettered, "/ciss/dispatcher", "", huge.Bounded()); err != nil {
		t.Errorf("Marshal of the bounded dead letter: %v", err)
	}
}

// TestResultEncodesReportsAsArray checks that a result never carries
// "reports": null, which the schema (an array) rejects.
func TestResultEncodesReportsAsArray(t *testing.T) {
	t.Parallel()
	for name, v := range map[string]any{
		"value":   Result{},
		"pointer": &Result{},
		"in job":  Job{Result: &Result{}},
		"in task": TaskResult{Result: &Result{}},
		"empty":   Result{Reports: []Report{}},
	} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"reports":[]`) || strings.Contains(string(b), `null`) {
			t.Errorf("%s encodes as %s, want \"reports\":[]", name, b)
		}
	}
	r := Result{ImageDigest: "sha256:" + strings.Repeat("0a", 32), Reports: []Report{{Format: FormatSARIF, Size: 1}}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := DecodeStrict(b, &back); err != nil || back.Reports[0] != r.Reports[0] || back.ImageDigest != r.ImageDigest {
		t.Errorf("round trip of %s = %+v, %v", b, back, err)
	}
}
