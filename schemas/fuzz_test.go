package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// addFixtureSeeds adds the golden fixtures of typ to the corpus.
func addFixtureSeeds(f *testing.F, typ reflect.Type) {
	for _, w := range wireTypes {
		if w.typ != typ {
			continue
		}
		for _, name := range w.fixtures {
			b, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

// FuzzJobRequestValidate decodes arbitrary bytes as the gateway does (strictly,
// then Validate). It must never panic, and whatever passes must be safe to put
// into keys, subjects, logs and tool arguments, and must survive a round trip.
func FuzzJobRequestValidate(f *testing.F) {
	addFixtureSeeds(f, reflect.TypeFor[JobRequest]())
	for _, s := range []string{
		`{"type":"image-scan","target":{"image":"registry.example.com/app:1"}}`,
		`{"type":"image-scan","target":{"image":"localhost:5000/a/b:c@sha256:0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"}}`,
		`{"type":"image-scan","target":{"image":"https://registry.example.com/app"}}`,
		`{"type":"image-scan","target":{"image":"registry.example.com/../app"}}`,
		`{"type":"image-scan","target":{"image":"registry.example.com/app:1\n"}}`,
		`{"type":"image-scan","target":{"image":"registry.example.com/app\u2028"}}`,
		`{"type":"image-scan","target":{"image":"r.io/a"},"params":{}}`,
		`{"type":"image-scan","target":{"image":"r.io/a"},"params":{"k":"v\u0000"},"lane":"bulk","cache":false}`,
		`{"type":"image-scan","target":{"image":"r.io/a"},"params":{"k":"v\u007f","l":"\u0085\u2028"}}`,
		`{"type":"image-scan","target":{"image":"r.io/a"},"lane":""}`,
		`{"TYPE":"image-scan","Target":{"Image":"r.io/a"}}`,
		`{"type":"image-scan","type":"x","target":{"image":"r.io/a"}}`,
		`{"type":"image-scan","target":{"image":"r.io/a","Image":"evil.example/a"}}`,
		`{"type":"image-scan","target":{"image":"r.io/a"},"cache":null,"params":null}`,
		`{"type":"image-scan","target":{"image":"r.io/a"}} {}`,
		`{"type":"image-scan","target":{"image":"r/a"}}`,
		`{"type":"image-scan","target":{"image":"library/alpine:3"}}`,
		`{"type":"image-scan","target":{"image":"localhost/a"}}`,
		`{"type":"image-scan","target":{"image":"r:0/a"}}`,
		`{"type":"image-scan","target":{"image":"r:65536/a"}}`,
		`{"type":"image-scan","target":{"image":"r:65535/a"}}`,
		`{"type":"image-scan","target":{"image":"a..b/a"}}`,
		`{"type":"image-scan","target":{"image":"a-.b/a"}}`,
		`{"type":"image-scan","target":{"image":"169.254.169.254/a"}}`,
		`{"type":"","target":{}}`,
		`{"type":"sast","target":{"repo":"https://h/a.git","commit":"3f786850e387550fdab836ed7e6dc881de23001b"}}`,
		`{"type":"sast","target":{"repo":"https://u:p@h/a.git","commit":"3f786850e387550fdab836ed7e6dc881de23001b"}}`,
		`null`, `[]`, `"x"`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r JobRequest
		if err := DecodeStrict(b, &r); err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			return
		}
		if r.Type == JobTypeSAST {
			if r.Target.Image != "" || !ValidCommit(r.Target.Commit) || CheckRepoURL(r.Target.Repo) != "" {
				t.Fatalf("accepted sast target %+v", r.Target)
			}
			return
		}
		img := r.Target.Image
		if img == "" || len(img) > MaxImageRefLen {
			t.Fatalf("accepted image of length %d", len(img))
		}
		if i := strings.IndexFunc(img, func(c rune) bool {
			return unicode.IsSpace(c) || unicode.IsControl(c) || c > unicode.MaxASCII || c == unicode.ReplacementChar
		}); i >= 0 {
			t.Fatalf("accepted image %q with whitespace, control or non-ASCII at %d", img, i)
		}
		if strings.Contains(img, "://") {
			t.Fatalf("accepted image %q with a scheme", img)
		}
		for _, seg := range strings.Split(img, "/") {
			if seg == "" || seg == "." || seg == ".." || strings.HasPrefix(seg, "-") {
				t.Fatalf("accepted image %q with path segment %q", img, seg)
			}
		}
		if reason := registryProblemForTest(img); reason != "" {
			t.Fatalf("accepted image %q: %s", img, reason)
		}
		if !r.Lane.Valid() {
			t.Fatalf("accepted lane %q", r.Lane)
		}
		if len(r.Params) > MaxParams {
			t.Fatalf("accepted %d params", len(r.Params))
		}
		for k, v := range r.Params {
			if !validParamKeyForTest(k) || len(v) > MaxParamValueLen {
				t.Fatalf("accepted param %q=%q", k, v)
			}
			if strings.ContainsFunc(v, func(c rune) bool { return c <= unicode.MaxASCII && unicode.IsControl(c) }) {
				t.Fatalf("accepted param %q=%q with an ASCII control character", k, v)
			}
		}

		out, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("marshal a valid request: %v", err)
		}
		var r2 JobRequest
		if err := DecodeStrict(out, &r2); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		if err := r2.Validate(); err != nil {
			t.Fatalf("re-decoded request %s fails Validate: %v", out, err)
		}
		if len(r.Params) == 0 {
			r.Params = nil // an empty map is omitted, so it comes back nil
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the request:\n%#v\n%#v", r, r2)
		}
	})
}

// registryProblemForTest restates the documented registry rule independently
// of imageRefRE and checkRegistry: the first path component is host[:port],
// the host is dot-separated labels of letters, digits and inner dashes, it
// names a registry explicitly (a dot, a port, or "localhost"), and a port is
// a decimal number in 1-65535. It returns what is wrong, or "".
func registryProblemForTest(ref string) string {
	host, _, ok := strings.Cut(ref, "/")
	if !ok {
		return "no path after the registry"
	}
	name, port, hasPort := strings.Cut(host, ":")
	for _, label := range strings.Split(name, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return "host label " + strconv.Quote(label) + " is empty or starts or ends with a dash"
		}
		if strings.IndexFunc(label, func(c rune) bool {
			return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-')
		}) >= 0 {
			return "host label " + strconv.Quote(label) + " has a character outside [A-Za-z0-9-]"
		}
	}
	if !hasPort && !strings.Contains(name, ".") && name != "localhost" {
		return "the registry is implicit (no dot, no port, not localhost)"
	}
	if hasPort {
		if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return "port " + strconv.Quote(port) + " is not a decimal number of at most 5 digits"
		}
		if n, _ := strconv.Atoi(port); n < 1 || n > 65535 {
			return "port " + port + " is not in 1-65535"
		}
	}
	return ""
}

// validParamKeyForTest restates the documented key rule independently of
// paramKeyRE: a lower-case letter, then lower-case letters, digits, '_', '.'
// or '-', at most MaxParamKeyLen bytes.
func validParamKeyForTest(k string) bool {
	if k == "" || len(k) > MaxParamKeyLen || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	return strings.IndexFunc(k, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-')
	}) < 0
}

// FuzzParseEvent feeds arbitrary bytes to ParseEvent. It must never panic,
// must fail only with ErrNotCloudEvent, and an event it accepts must have its
// required attributes, re-encode, parse again to the same event, and be safe to
// Decode as any event type.
func FuzzParseEvent(f *testing.F) {
	addFixtureSeeds(f, reflect.TypeFor[Event]())
	valid := validEnvelope(cancelData)
	for _, s := range []string{
		valid,
		validEnvelope("null"),
		validEnvelope(`"x"`),
		validEnvelope(`{"job_id":"x","tenant":"t","by":"b","extra":1}`),
		validEnvelope(`{"pad":"<>&\u2028\ufffd"}`),
		strings.Replace(valid, `"id":"e1"`, `"id":"e1","extension":1`, 1),
		strings.Replace(valid, `"1.0"`, `"0.3"`, 1),
		strings.Replace(valid, `"type":"dev.ciss.job.cancel.v1"`, `"type":"x","TYPE":"dev.ciss.job.cancel.v1"`, 1),
		strings.Replace(valid, `"time":"2025-01-14T09:30:00Z",`, ``, 1),
		strings.Replace(valid, `2025-01-14T09:30:00Z`, `0001-01-01T00:00:00Z`, 1),
		strings.Replace(valid, `"application/json"`, `"text/plain"`, 1),
		strings.Replace(valid, `,"data":`+cancelData, ``, 1),
		validEnvelope(`{"a":[{"b":1,"B":2}]}`),
		validEnvelope(`{"a":"a","b":["a","a"]}`),
		strings.Replace(valid, `2025-01-14T09:30:00Z`, `2025-01-14T09:30:00.123456789+23:59`, 1),
		valid + "{}",
		`{}`, `null`, `[]`, ``, `{"specversion":"1.0"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := ParseEvent(b)
		if err != nil {
			if !errors.Is(err, ErrNotCloudEvent) {
				t.Fatalf("error %v does not wrap ErrNotCloudEvent", err)
			}
			return
		}
		if len(b) > MaxEventSize || ev.SpecVersion != SpecVersion || ev.ID == "" || ev.Source == "" || ev.Type == "" ||
			ev.Time.IsZero() || ev.DataContentType != MediaTypeJSON {
			t.Fatalf("accepted %+v from %d bytes", ev, len(b))
		}
		if k, dup := lowerDuplicateKey(b); dup {
			t.Fatalf("accepted an event that repeats key %q", k)
		}
		for typ, d := range eventData {
			v := reflect.New(d.typ).Interface()
			err := ev.Decode(typ, v)
			if (typ != ev.Type) != errors.Is(err, ErrUnexpectedType) {
				t.Fatalf("Decode(%s) of a %s event: %v", typ, ev.Type, err)
			}
			if d := bytes.TrimSpace(ev.Data); err == nil && (len(d) == 0 || string(d) == "null") {
				t.Fatalf("Decode(%s) accepted data %q", typ, ev.Data)
			}
		}

		out, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("re-encode an accepted event: %v", err)
		}
		if len(out) > MaxEventSize {
			return // HTML escaping in data can grow it past the limit
		}
		ev2, err := ParseEvent(out)
		if err != nil {
			t.Fatalf("re-encoded event %s no longer parses: %v", out, err)
		}
		if !ev2.Time.Equal(ev.Time) {
			t.Fatalf("time changed from %v to %v", ev.Time, ev2.Time)
		}
		ev.Time = ev2.Time
		if !sameJSONValue(ev.Data, ev2.Data) {
			t.Fatalf("data changed from %s to %s", ev.Data, ev2.Data)
		}
		ev.Data, ev2.Data = nil, nil
		if !reflect.DeepEqual(ev, ev2) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, ev2)
		}
	})
}

// sameJSONValue compares two raw values as decoded JSON; a missing value is null.
func sameJSONValue(a, b json.RawMessage) bool {
	var va, vb any
	if len(bytes.TrimSpace(a)) > 0 && json.Unmarshal(a, &va) != nil {
		return false
	}
	if len(bytes.TrimSpace(b)) > 0 && json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// FuzzDecodeStrictDuplicateKeys checks DecodeStrict's duplicate-key rule on
// arbitrary JSON, against an independent walk of the input: what it accepts
// repeats no key (compared with strings.EqualFold) in any object, what it
// rejects as a duplicate does, and valid JSON without duplicates is accepted.
func FuzzDecodeStrictDuplicateKeys(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"a":2}`, `{"a":1,"A":2}`, `{"a":1,"\u0041":2}`, `{"\u212a":1,"k":2}`, `{"ſ":1,"s":2}`,
		`{"a":{"b":1,"B":2}}`, `[{"a":1},{"a":1}]`, `{"a":[{"b":1},{"c":1,"C":2}]}`,
		`{"a":"a"}`, `{"a":["a","a"]}`, `{"a":{"a":{"a":1}}}`, `{"a":{"x":1},"A":2}`,
		`{"a":1,"a":2`, `{"a":1} {"a":1,"a":2}`, `{"a":1e400}`, `{"İd":1,"id":2}`,
		`{}`, `[]`, `null`, `"a"`, `{"":1,"":2}`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v map[string]any
		err := DecodeStrict(b, &v)
		k, dup := lowerDuplicateKey(b)
		if err == nil && dup {
			t.Fatalf("accepted %q, which repeats key %q", b, k)
		}
		if errors.Is(err, ErrDuplicateKey) && !dup {
			t.Fatalf("rejected %q as a duplicate (%v), but no key repeats", b, err)
		}
		if first := bytes.TrimLeft(b, " \t\r\n"); err != nil && !dup && json.Valid(b) &&
			(bytes.HasPrefix(first, []byte("{")) || bytes.HasPrefix(first, []byte("null"))) {
			if _, overflow := errors.AsType[*json.UnmarshalTypeError](err); !overflow {
				t.Fatalf("rejected valid JSON %q without duplicates: %v", b, err)
			}
		}
	})
}

// lowerDuplicateKey walks b's JSON values, up to the first syntax error, and
// returns the first key that repeats within one object, compared with
// strings.EqualFold (Unicode simple case folding, as encoding/json matches
// field names and DecodeStrict documents).
func lowerDuplicateKey(b []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var value func() (string, bool, error)
	value = func() (string, bool, error) {
		tok, err := dec.Token()
		if err != nil {
			return "", false, err
		}
		switch tok {
		case json.Delim('{'):
			var seen []string
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return "", false, err
				}
				k, _ := kt.(string)
				// Pairwise strings.EqualFold (Unicode simple folding, as
				// encoding/json matches names): independent of foldKey.
				for _, prev := range seen {
					if strings.EqualFold(prev, k) {
						return k, true, nil
					}
				}
				seen = append(seen, k)
				if k, dup, err := value(); dup || err != nil {
					return k, dup, err
				}
			}
		case json.Delim('['):
			for dec.More() {
				if k, dup, err := value(); dup || err != nil {
					return k, dup, err
				}
			}
		default:
			return "", false, nil
		}
		_, err = dec.Token() // the closing delimiter
		return "", false, err
	}
	for {
		k, dup, err := value()
		if dup {
			return k, true
		}
		if err != nil {
			return "", false
		}
	}
}

// FuzzDeadLetterBounded checks that a message of any size and any reason can
// be dead-lettered: the bounded dead letter always makes an event within
// MaxEventSize that parses back with the data's prefix and its original size.
func FuzzDeadLetterBounded(f *testing.F) {
	f.Add([]byte(nil), "", uint16(0))
	f.Add([]byte("{}"), "not a CloudEvents 1.0 structured JSON event", uint16(1))
	f.Add([]byte("\x00\xff<>&"), "<\x00\u2028\xff", uint16(40000))
	f.Add(bytes.Repeat([]byte("x"), 1024), strings.Repeat("€", 700), uint16(129))
	f.Fuzz(func(t *testing.T, data []byte, reason string, repeat uint16) {
		n := int(repeat) + 1 // up to about 4×MaxEventSize
		if len(data) > 0 {
			n = min(n, 4*MaxEventSize/len(data)+1)
		}
		body := bytes.Repeat(data, n)
		reason = strings.Repeat(reason, int(repeat)%256+1)
		dl := DeadLetter{
			Stream: StreamTasks, Sequence: uint64(repeat), Subject: "ciss.tasks.bulk.trivy",
			Consumer: "worker-trivy-bulk", Deliveries: 5, Reason: reason, Data: body,
		}.Bounded()
		b, err := Marshal(TypeDeadLettered, "/ciss/workers/worker-trivy-0", "ciss.tasks.bulk.trivy", dl)
		if err != nil {
			t.Fatalf("Marshal of a bounded dead letter of %d bytes, reason of %d: %v", len(body), len(reason), err)
		}
		var got DeadLetter
		if _, err := Unmarshal(b, TypeDeadLettered, &got); err != nil {
			t.Fatalf("Unmarshal: %v", err)
		}
		if !bytes.Equal(got.Data, body[:min(len(body), MaxDeadLetterData)]) || got.OriginalSize != len(body) || got.Truncated != (len(body) > MaxDeadLetterData) {
			t.Fatalf("%d byte body came back as %d bytes, original size %d, truncated %v",
				len(body), len(got.Data), got.OriginalSize, got.Truncated)
		}
	})
}
