package schemas

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// CISS events are CloudEvents 1.0 in structured JSON mode: the whole NATS message
// body is one CloudEvents JSON object with the payload in "data", and the NATS
// header Nats-Msg-Id carries a deduplication id. Structured mode was chosen over
// the NATS protocol binding's binary mode because the body alone is then a
// complete, self-describing event: it survives being copied to a dead-letter
// stream, an object store or a log without its headers.

// SpecVersion is the CloudEvents version CISS speaks.
const SpecVersion = "1.0"

// Event types. The version suffix changes when the data's meaning changes
// incompatibly; adding optional fields keeps it.
const (
	TypeJobRequested  = "dev.ciss.job.requested.v1"  // data: Job
	TypeJobCompleted  = "dev.ciss.job.completed.v1"  // data: Job (terminal)
	TypeTaskRequested = "dev.ciss.task.requested.v1" // data: Task
	TypeTaskStarted   = "dev.ciss.task.started.v1"   // data: TaskStarted
	TypeTaskCompleted = "dev.ciss.task.completed.v1" // data: TaskResult
	TypeCancelRequest = "dev.ciss.job.cancel.v1"     // data: CancelRequest
	TypeDeadLettered  = "dev.ciss.deadletter.v1"     // data: DeadLetter
	// TypeWebhookReceived is a verified git webhook event, stored by the
	// gateway's webhook receiver for the dispatcher to turn into jobs.
	TypeWebhookReceived = "dev.ciss.webhook.received.v1" // data: WebhookEvent
	// TypeWebhookAudited is the audit record of one webhook request.
	TypeWebhookAudited = "dev.ciss.webhook.audited.v1" // data: WebhookAudit
)

// MaxEventSize bounds an encoded event. Reports never travel in events; they are
// stored in the object store and referenced.
const MaxEventSize = 256 << 10

// Event is a CloudEvents 1.0 event in structured JSON mode.
type Event struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
}

// Errors returned when decoding events.
var (
	// ErrNotCloudEvent means the message is not a CloudEvents 1.0 JSON object.
	ErrNotCloudEvent = errors.New("not a CloudEvents 1.0 structured JSON event")
	// ErrUnexpectedType means the event is valid but of another type than asked.
	ErrUnexpectedType = errors.New("unexpected event type")
	// ErrEventTooLarge means an encoded event would exceed MaxEventSize.
	ErrEventTooLarge = errors.New("event larger than MaxEventSize")
	// ErrDuplicateKey means a JSON object repeats a key (compared
	// case-insensitively, as encoding/json matches field names).
	ErrDuplicateKey = errors.New("duplicate JSON object key")
)

// NewEvent wraps data in an event with a fresh random id.
func NewEvent(typ, source, subject string, data any) (Event, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s data: %w", typ, err)
	}
	return Event{
		SpecVersion:     SpecVersion,
		ID:              NewEventID(),
		Source:          source,
		Type:            typ,
		Subject:         subject,
		Time:            time.Now().UTC(),
		DataContentType: MediaTypeJSON,
		Data:            b,
	}, nil
}

// NewEventID returns 128 random bits as hex.
func NewEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥1.24 panics instead).
	return hex.EncodeToString(b[:])
}

// Marshal encodes the event and a data value together. It refuses to produce an
// event that consumers would reject as larger than MaxEventSize.
func Marshal(typ, source, subject string, data any) ([]byte, error) {
	ev, err := NewEvent(typ, source, subject, data)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxEventSize {
		return nil, fmt.Errorf("%w: %s is %d bytes", ErrEventTooLarge, typ, len(b))
	}
	return b, nil
}

// ParseEvent decodes a structured-mode event strictly: unknown envelope fields,
// a missing required attribute or a body larger than MaxEventSize are errors.
func ParseEvent(b []byte) (Event, error) {
	var ev Event
	if len(b) > MaxEventSize {
		return ev, fmt.Errorf("%w: %d bytes is over the %d byte limit", ErrNotCloudEvent, len(b), MaxEventSize)
	}
	if err := DecodeStrict(b, &ev); err != nil {
		return ev, fmt.Errorf("%w: %w", ErrNotCloudEvent, err)
	}
	switch {
	case ev.SpecVersion != SpecVersion:
		return ev, fmt.Errorf("%w: specversion %q", ErrNotCloudEvent, ev.SpecVersion)
	case ev.ID == "" || ev.Source == "" || ev.Type == "":
		return ev, fmt.Errorf("%w: id, source and type are required", ErrNotCloudEvent)
	case ev.Time.IsZero():
		return ev, fmt.Errorf("%w: time is required", ErrNotCloudEvent)
	case ev.DataContentType != MediaTypeJSON:
		return ev, fmt.Errorf("%w: datacontenttype %q, want %q", ErrNotCloudEvent, ev.DataContentType, MediaTypeJSON)
	}
	return ev, nil
}

// Decode decodes the event's data into v, strictly, after checking the type.
func (e Event) Decode(typ string, v any) error {
	if e.Type != typ {
		return fmt.Errorf("%w: got %q, want %q", ErrUnexpectedType, e.Type, typ)
	}
	if d := bytes.TrimSpace(e.Data); len(d) == 0 || bytes.Equal(d, []byte("null")) {
		return fmt.Errorf("decode %s data: data is missing or null", typ)
	}
	if err := DecodeStrict(e.Data, v); err != nil {
		return fmt.Errorf("decode %s data: %w", typ, err)
	}
	return nil
}

// Unmarshal parses an event of the given type and decodes its data into v.
func Unmarshal(b []byte, typ string, v any) (Event, error) {
	ev, err := ParseEvent(b)
	if err != nil {
		return ev, err
	}
	return ev, ev.Decode(typ, v)
}

// DecodeStrict decodes exactly one JSON value, rejecting unknown fields,
// duplicate keys (case-insensitively: encoding/json would let the last one win,
// so two parsers could read different values) and trailing data.
func DecodeStrict(b []byte, v any) error {
	if err := checkDuplicateKeys(b); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if err := dec.Decode(new(json.RawMessage)); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// checkDuplicateKeys fails on an object that repeats a key, compared
// case-insensitively. Valid JSON is scanned byte by byte: json.Decoder.Token
// allocates for every token, and this runs on every event CISS decodes.
func checkDuplicateKeys(b []byte) error {
	if !json.Valid(b) {
		// Report a duplicate met before the syntax error, like the decoder
		// would meet it; this slower walk runs only on broken input.
		return tokenDuplicateKeys(b)
	}
	type frame struct {
		object bool
		keys   map[string]struct{}
	}
	var stack []frame
	expectKey := false
	for i := 0; i < len(b); {
		switch b[i] {
		case '{':
			stack = append(stack, frame{object: true})
			expectKey = true
		case '[':
			stack = append(stack, frame{})
			expectKey = false
		case '}', ']':
			stack = stack[:len(stack)-1]
			expectKey = false
		case ',':
			expectKey = stack[len(stack)-1].object
		case '"':
			j, plain := i+1, true
			for b[j] != '"' { // valid JSON: the string ends
				if b[j] == '\\' {
					plain = false
					j++
				} else if b[j] >= utf8.RuneSelf {
					plain = false
				}
				j++
			}
			if expectKey {
				var k string
				if plain {
					k = string(b[i+1 : j])
				} else if err := json.Unmarshal(b[i:j+1], &k); err != nil {
					return nil // cannot happen in valid JSON; the decoder has the last word
				}
				top := &stack[len(stack)-1]
				if top.keys == nil {
					top.keys = map[string]struct{}{}
				}
				folded := foldKey(k)
				if _, dup := top.keys[folded]; dup {
					return fmt.Errorf("%w %q", ErrDuplicateKey, k)
				}
				top.keys[folded] = struct{}{}
				expectKey = false
			}
			i = j
		}
		i++
	}
	return nil
}

// tokenDuplicateKeys walks the JSON tokens and fails on an object that repeats
// a key, compared case-insensitively. Syntax errors are left to the decoder.
func tokenDuplicateKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		object bool
		keys   map[string]bool
		key    bool // the next string token in an object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // io.EOF or a syntax error the real decode reports
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, &frame{object: true, keys: map[string]bool{}, key: true})
				continue
			case '[':
				stack = append(stack, &frame{})
				continue
			default:
				stack = stack[:len(stack)-1]
			}
		case string:
			if top != nil && top.object && top.key {
				k := foldKey(t)
				if top.keys[k] {
					return fmt.Errorf("%w %q", ErrDuplicateKey, t)
				}
				top.keys[k] = true
				top.key = false
				continue
			}
		}
		// A value ended: in an object, a key comes next.
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].key = true
		}
	}
}

// foldKey maps a key to a canonical form under Unicode simple case folding, the
// equivalence encoding/json uses to match field names (so "ſ" equals "s" and
// "K", the Kelvin sign, equals "k").
func foldKey(s string) string {
	ascii := true
	for i := 0; i < len(s) && ascii; i++ {
		ascii = s[i] < utf8.RuneSelf
	}
	if ascii { // the least rune of an ASCII letter's fold orbit is its upper case (K, S included)
		return strings.ToUpper(s)
	}
	var b strings.Builder
	for _, r := range s {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}
