package schemas

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wireType ties a Go wire type to its JSON Schema file and golden fixtures.
type wireType struct {
	schema   string
	typ      reflect.Type
	fixtures []string
}

// wireTypes lists every public wire type. Each file in jsonschema/ and each
// fixture in testdata/ must appear here.
var wireTypes = []wireType{
	{"job-request.v1.json", reflect.TypeFor[JobRequest](), []string{"job-request.json", "job-request-sast.json"}},
	{"job.v1.json", reflect.TypeFor[Job](), []string{"job-succeeded.json", "job-failed.json", "job-from-webhook.json"}},
	{"task.v1.json", reflect.TypeFor[Task](), []string{"task.json", "task-from-webhook.json"}},
	{"task-started.v1.json", reflect.TypeFor[TaskStarted](), []string{"task-started.json"}},
	{"task-result.v1.json", reflect.TypeFor[TaskResult](), []string{"task-result.json", "task-result-failed.json"}},
	{"cancel-request.v1.json", reflect.TypeFor[CancelRequest](), []string{"cancel-request.json"}},
	{"dead-letter.v1.json", reflect.TypeFor[DeadLetter](), []string{"dead-letter.json"}},
	{"cloudevent.v1.json", reflect.TypeFor[Event](), []string{"event-job-requested.json", "event-task-completed.json", "event-webhook-received.json"}},
	{"webhook-event.v1.json", reflect.TypeFor[WebhookEvent](), []string{"webhook-event.json"}},
	{"webhook-audit.v1.json", reflect.TypeFor[WebhookAudit](), []string{"webhook-audit.json", "webhook-audit-rejected.json"}},
	{"findings.v1.json", reflect.TypeFor[FindingSet](), []string{"findings.json"}},
	{"trial-comparison.v1.json", reflect.TypeFor[TrialComparison](), []string{"trial-comparison.json"}},
	{"trial-report.v1.json", reflect.TypeFor[TrialReport](), []string{"trial-report.json"}},
	{"variance-report.v1.json", reflect.TypeFor[VarianceReport](), []string{"variance-report.json"}},
	{"routing-audit.v1.json", reflect.TypeFor[RoutingAudit](), []string{"routing-audit.json"}},
}

// eventData maps each event type to the schema and Go type of its data, as the
// comments on the Type constants in event.go say.
var eventData = map[string]struct {
	schema string
	typ    reflect.Type
}{
	TypeJobRequested:    {"job.v1.json", reflect.TypeFor[Job]()},
	TypeJobCompleted:    {"job.v1.json", reflect.TypeFor[Job]()},
	TypeTaskRequested:   {"task.v1.json", reflect.TypeFor[Task]()},
	TypeTaskStarted:     {"task-started.v1.json", reflect.TypeFor[TaskStarted]()},
	TypeTaskCompleted:   {"task-result.v1.json", reflect.TypeFor[TaskResult]()},
	TypeCancelRequest:   {"cancel-request.v1.json", reflect.TypeFor[CancelRequest]()},
	TypeDeadLettered:    {"dead-letter.v1.json", reflect.TypeFor[DeadLetter]()},
	TypeWebhookReceived: {"webhook-event.v1.json", reflect.TypeFor[WebhookEvent]()},
	TypeWebhookAudited:  {"webhook-audit.v1.json", reflect.TypeFor[WebhookAudit]()},
	TypeTrialCompared:   {"trial-comparison.v1.json", reflect.TypeFor[TrialComparison]()},
	TypeVarianceChanged: {"variance-report.v1.json", reflect.TypeFor[VarianceReport]()},
	TypeRoutingAudited:  {"routing-audit.v1.json", reflect.TypeFor[RoutingAudit]()},
}

const schemaBaseURI = "https://ciss.dev/schemas/"

// TestSchemaFiles checks that every schema file is listed, declares draft
// 2020-12, has the $id of its file name and is titled after its Go type.
func TestSchemaFiles(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("jsonschema/*")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, w := range wireTypes {
		listed[w.schema] = true
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s is not listed in wireTypes, so nothing checks it against Go", f)
		}
	}
	for _, w := range wireTypes {
		s := loadSchema(t, w.schema)
		if got := s.root["$schema"]; got != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema = %v, want draft 2020-12", w.schema, got)
		}
		if got, want := s.root["$id"], schemaBaseURI+w.schema; got != want {
			t.Errorf("%s: $id = %v, want %s", w.schema, got, want)
		}
		if got := s.root["title"]; got != w.typ.Name() {
			t.Errorf("%s: title = %v, want the Go type name %s", w.schema, got, w.typ.Name())
		}
	}
	for typ, d := range eventData {
		if !listed[d.schema] {
			t.Errorf("data schema %s of %s is not listed in wireTypes", d.schema, typ)
		}
	}
}

// TestSchemaMatchesGoType is the drift test: for every wire type it walks the Go
// struct by reflection and the schema in step, and fails naming the field when
// a JSON name, a required-ness (no omitempty ⇔ required), a JSON type, an enum
// of a typed string or additionalProperties:false is out of line.
func TestSchemaMatchesGoType(t *testing.T) {
	t.Parallel()
	consts := packageConsts(t)
	for _, w := range wireTypes {
		t.Run(w.schema, func(t *testing.T) {
			t.Parallel()
			d := drift{t: t, s: loadSchema(t, w.schema), consts: consts}
			d.structType(w.typ, d.s.root, w.typ.Name())
		})
	}
}

type drift struct {
	t      *testing.T
	s      *jsonSchema
	consts []goConst
}

func (d drift) structType(typ reflect.Type, node map[string]any, path string) {
	node = d.s.deref(node)
	if node["type"] != "object" {
		d.t.Errorf("%s: schema type is %v, want object for Go struct %s", path, node["type"], typ)
		return
	}
	if node["additionalProperties"] != false {
		d.t.Errorf("%s: Go decodes %s strictly (unknown fields are errors), so the schema needs additionalProperties: false", path, typ)
	}
	props, _ := node["properties"].(map[string]any)
	var goRequired []string
	seen := map[string]bool{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous {
			d.t.Errorf("%s: embedded field %s is not handled by this test", path, f.Name)
			continue
		}
		name = cmp.Or(name, f.Name)
		seen[name] = true
		optional := slices.Contains(strings.Split(opts, ","), "omitempty") || slices.Contains(strings.Split(opts, ","), "omitzero")
		if !optional {
			goRequired = append(goRequired, name)
		}
		sub, ok := props[name].(map[string]any)
		if !ok {
			d.t.Errorf("%s: Go field %s.%s (json %q) is missing from the schema's properties", path, typ.Name(), f.Name, name)
			continue
		}
		d.fieldType(f.Type, sub, path+"."+name)
	}
	for _, k := range sortedKeys(props) {
		if !seen[k] {
			d.t.Errorf("%s: schema property %q has no Go field in %s", path, k, typ)
		}
	}
	var schemaRequired []string
	for _, r := range asSlice(node["required"]) {
		schemaRequired = append(schemaRequired, r.(string))
	}
	for _, r := range goRequired {
		if !slices.Contains(schemaRequired, r) {
			d.t.Errorf("%s: Go field %q has no omitempty (it is always encoded), so the schema must list it in required", path, r)
		}
	}
	for _, r := range schemaRequired {
		if seen[r] && !slices.Contains(goRequired, r) {
			d.t.Errorf("%s: schema requires %q but the Go field is omitempty", path, r)
		}
	}
}

var (
	timeType       = reflect.TypeFor[time.Time]()
	durationType   = reflect.TypeFor[Duration]()
	rawMessageType = reflect.TypeFor[json.RawMessage]()
	marshalerType  = reflect.TypeFor[json.Marshaler]()
)

// plainMarshalers are the struct types whose MarshalJSON only normalises
// field values and then encodes the struct's own fields (through a plain
// alias), so the drift test walks them as ordinary structs.
// TestPlainMarshalersEncodeTheirFields holds each entry to that claim.
var plainMarshalers = map[reflect.Type]string{
	// Result.MarshalJSON writes a nil Reports as [] rather than null.
	reflect.TypeFor[Result](): "writes nil Reports as []",
}

func (d drift) fieldType(typ reflect.Type, node map[string]any, path string) {
	node = d.s.deref(node)
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	var want string
	switch {
	case typ == rawMessageType:
		return // any JSON value; the schema may narrow it
	case typ == timeType:
		want = "string"
		if node["format"] != "date-time" {
			d.t.Errorf("%s: Go time.Time needs format date-time in the schema", path)
		}
	case typ == durationType:
		want = "string"
	case plainMarshalers[typ] != "":
		d.structType(typ, node, path)
		return
	case typ.Implements(marshalerType) || reflect.PointerTo(typ).Implements(marshalerType):
		d.t.Errorf("%s: Go type %s has its own JSON encoding; teach this test its schema type", path, typ)
		return
	case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Uint8:
		want = "string" // base64
	default:
		switch typ.Kind() {
		case reflect.String:
			want = "string"
		case reflect.Bool:
			want = "boolean"
		case reflect.Float32, reflect.Float64:
			want = "number"
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			want = "integer"
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			want = "integer"
			if m, ok := node["minimum"].(json.Number); !ok || m.String() == "" || m.String()[0] == '-' {
				d.t.Errorf("%s: Go type %s is unsigned, so the schema needs minimum 0 (or more)", path, typ)
			}
		case reflect.Struct:
			d.structType(typ, node, path)
			return
		case reflect.Slice:
			want = "array"
			items, ok := node["items"].(map[string]any)
			if !ok {
				d.t.Errorf("%s: array schema has no items", path)
				break
			}
			d.fieldType(typ.Elem(), items, path+"[]")
		case reflect.Map:
			want = "object"
			if typ.Key().Kind() != reflect.String {
				d.t.Errorf("%s: map key type %s is not handled by this test", path, typ.Key())
			}
			ap, ok := node["additionalProperties"].(map[string]any)
			if !ok {
				d.t.Errorf("%s: Go map needs additionalProperties with the value schema", path)
				break
			}
			d.fieldType(typ.Elem(), ap, path+"{}")
		default:
			d.t.Errorf("%s: Go type %s has no schema mapping in this test", path, typ)
			return
		}
	}
	if node["type"] != want {
		d.t.Errorf("%s: schema type is %v, want %s for Go type %s", path, node["type"], want, typ)
	}
	// A named string type of this package with constants is an enum.
	if typ.Kind() == reflect.String && typ.PkgPath() == durationType.PkgPath() {
		if vals := constValues(d.consts, func(c goConst) bool { return c.typ == typ.Name() }); len(vals) > 0 {
			checkEnum(d.t, path, node, vals)
		}
	}
}

func checkEnum(t *testing.T, path string, node map[string]any, want []string) {
	t.Helper()
	var got []string
	for _, e := range asSlice(node["enum"]) {
		s, _ := e.(string)
		got = append(got, s)
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("%s: schema enum is %q, Go constants are %q", path, got, want)
	}
}

// TestPlainMarshalersEncodeTheirFields checks what plainMarshalers claims: a
// value with every field set encodes exactly like the same value converted to
// a struct type with the same fields and no methods, and the zero value
// encodes the same keys.
func TestPlainMarshalersEncodeTheirFields(t *testing.T) {
	t.Parallel()
	for typ, why := range plainMarshalers {
		t.Run(typ.Name(), func(t *testing.T) {
			t.Parallel()
			fields := make([]reflect.StructField, typ.NumField())
			for i := range fields {
				fields[i] = typ.Field(i)
			}
			plain := reflect.StructOf(fields)
			full := reflect.New(typ).Elem()
			fillValue(t, full)
			for _, v := range []reflect.Value{full, reflect.New(typ).Elem()} {
				got, err := json.Marshal(v.Interface())
				if err != nil {
					t.Fatal(err)
				}
				want, err := json.Marshal(v.Convert(plain).Interface())
				if err != nil {
					t.Fatal(err)
				}
				var g, w map[string]any
				if err := json.Unmarshal(got, &g); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(want, &w); err != nil {
					t.Fatal(err)
				}
				if v.IsZero() {
					if !slices.Equal(sortedKeys(g), sortedKeys(w)) {
						t.Errorf("zero %s encodes keys %q, its fields %q (%s)", typ, sortedKeys(g), sortedKeys(w), why)
					}
				} else if !reflect.DeepEqual(g, w) {
					t.Errorf("%s encodes as %s, its fields as %s (%s)", typ, got, want, why)
				}
			}
		})
	}
}

// fillValue sets every field reachable in v to a non-zero value, with one
// element in each slice and map.
func fillValue(t *testing.T, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Struct:
		if v.Type() == timeType {
			v.Set(reflect.ValueOf(time.Date(2025, 1, 14, 9, 30, 0, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillValue(t, v.Field(i))
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillValue(t, v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fillValue(t, v.Index(0))
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fillValue(t, k)
		fillValue(t, e)
		v.SetMapIndex(k, e)
	default:
		t.Fatalf("fillValue: %s is not handled", v.Type())
	}
}

// TestSchemaEnumsOfUntypedConstants covers the enums whose Go constants are
// untyped strings, which the reflection walk cannot find by type.
func TestSchemaEnumsOfUntypedConstants(t *testing.T) {
	t.Parallel()
	consts := packageConsts(t)
	prefixed := func(p string) []string {
		return constValues(consts, func(c goConst) bool { return strings.HasPrefix(c.name, p) })
	}
	if got, want := slices.Sorted(slices.Values(KnownJobTypes())), slices.Sorted(slices.Values(prefixed("JobType"))); !slices.Equal(got, want) {
		t.Errorf("KnownJobTypes() = %q, JobType constants are %q", got, want)
	}
	for _, c := range []struct {
		schema, pointer string
		want            []string
	}{
		{"job-request.v1.json", "/properties/type", prefixed("JobType")},
		{"job.v1.json", "/$defs/JobType", prefixed("JobType")},
		{"task.v1.json", "/$defs/JobType", prefixed("JobType")},
		{"job.v1.json", "/$defs/Report/properties/format", prefixed("Format")},
		{"task-result.v1.json", "/$defs/Report/properties/format", prefixed("Format")},
		{"job.v1.json", "/$defs/Report/properties/media_type", prefixed("MediaType")},
		{"task-result.v1.json", "/$defs/Report/properties/media_type", prefixed("MediaType")},
		{"cloudevent.v1.json", "/properties/type", prefixed("Type")},
	} {
		checkEnum(t, c.schema+"#"+c.pointer, pointer(t, loadSchema(t, c.schema).root, c.pointer), c.want)
	}
	ce := loadSchema(t, "cloudevent.v1.json").root
	if got := pointer(t, ce, "/properties/specversion")["const"]; got != SpecVersion {
		t.Errorf("cloudevent specversion const = %v, want %s", got, SpecVersion)
	}
	if got := pointer(t, ce, "/properties/datacontenttype")["const"]; got != MediaTypeJSON {
		t.Errorf("cloudevent datacontenttype const = %v, want %s (what NewEvent sets)", got, MediaTypeJSON)
	}
	for _, typ := range prefixed("Type") {
		if _, ok := eventData[typ]; !ok {
			t.Errorf("event type %s has no data schema in eventData", typ)
		}
	}
}

// TestSchemaLimitsMatchGo checks the numeric limits JobRequest.Validate enforces.
func TestSchemaLimitsMatchGo(t *testing.T) {
	t.Parallel()
	req := loadSchema(t, "job-request.v1.json").root
	for _, c := range []struct {
		pointer, keyword string
		want             int
	}{
		{"/$defs/Target/properties/image", "maxLength", MaxImageRefLen},
		{"/properties/params", "maxProperties", MaxParams},
		{"/properties/params/propertyNames", "maxLength", MaxParamKeyLen},
		{"/properties/params/additionalProperties", "maxLength", MaxParamValueLen},
	} {
		if got := pointer(t, req, c.pointer)[c.keyword]; fmt.Sprint(got) != strconv.Itoa(c.want) {
			t.Errorf("job-request.v1.json#%s %s = %v, want %d", c.pointer, c.keyword, got, c.want)
		}
	}
	dl := loadSchema(t, "dead-letter.v1.json").root
	for _, c := range []struct {
		pointer string
		want    int
	}{
		// Data travels base64-encoded; a cut body fills exactly this many characters.
		{"/properties/data", base64.StdEncoding.EncodedLen(MaxDeadLetterData)},
		// Reason is cut in bytes; it has at most as many characters.
		{"/properties/reason", MaxDeadLetterReason},
	} {
		if got := pointer(t, dl, c.pointer)["maxLength"]; fmt.Sprint(got) != strconv.Itoa(c.want) {
			t.Errorf("dead-letter.v1.json#%s maxLength = %v, want %d", c.pointer, got, c.want)
		}
	}
	for _, w := range wireTypes {
		root := loadSchema(t, w.schema).root
		if defs, _ := root["$defs"].(map[string]any); defs["Target"] != nil {
			if got := pointer(t, root, "/$defs/Target/properties/image")["maxLength"]; fmt.Sprint(got) != strconv.Itoa(MaxImageRefLen) {
				t.Errorf("%s: Target.image maxLength = %v, want %d", w.schema, got, MaxImageRefLen)
			}
		}
	}
}

// Patterns the schemas may use, each tied to the Go code it mirrors.
const (
	jobIDPattern    = `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`
	tokenPattern    = `^[a-z][a-z0-9-]{0,62}$`
	taskIDPattern   = `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.[a-z][a-z0-9-]{0,62}$`
	digestPattern   = `^sha256:[a-f0-9]{64}$`
	durationPattern = `^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	commitPattern   = `^[0-9a-f]{40}$`
	repoURLPattern  = `^(https?://[^/@?#\s]+|file://)/[^@?#\s]+$`
)

// TestSchemaPatternsMatchGo makes every pattern in the schemas answer like the
// Go check it stands for, on a sample of good and hostile inputs.
func TestSchemaPatternsMatchGo(t *testing.T) {
	t.Parallel()
	tokens := []string{"a", "trivy", "payments-eu", "a1-", strings.Repeat("a", 63), strings.Repeat("a", 64), "", "A", "1a", "-a", "a.b", "a*", ">", "a b", "a_b", "é", "a\n"}
	ids := []string{"0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d", "00000000-0000-0000-0000-000000000000", "0193A5C2-7f4e-7b21-9c3d-5e8f1a2b3c4d",
		"0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4", "0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d0", "0193a5c2x7f4e-7b21-9c3d-5e8f1a2b3c4d",
		"0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4\n", "0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3.c4", ""}
	checks := map[string]func(t *testing.T, re *regexp.Regexp){
		commitPattern: func(t *testing.T, re *regexp.Regexp) {
			for _, c := range sampleCommits {
				if re.MatchString(c) != ValidCommit(c) {
					t.Errorf("commit pattern says %v for %q, ValidCommit %v", re.MatchString(c), c, ValidCommit(c))
				}
			}
		},
		// CheckRepoURL is stricter: the pattern must accept every URL it accepts.
		repoURLPattern: func(t *testing.T, re *regexp.Regexp) {
			for _, u := range sampleRepoURLs {
				if CheckRepoURL(u) == "" && !re.MatchString(u) {
					t.Errorf("repo pattern rejects %q, which CheckRepoURL accepts", u)
				}
			}
		},
		// The same expression as Validate uses. Validate's checkRegistry
		// (explicit registry, port 1-65535) has no pattern equivalent, so
		// the schema may accept a reference Validate refuses, never the
		// reverse.
		imageRefRE.String(): func(t *testing.T, re *regexp.Regexp) {
			for _, ref := range []string{
				"registry.example.com/team/app:1.0", "localhost/app", "localhost:5000/app", "registry:5000/app",
				"10.0.0.7:5000/app", "a.b/app@sha256:" + strings.Repeat("0a", 32), "r-1.example.com:65535/app",
				"library/alpine", "registry.example.com:0/app", "registry.example.com:65536/app",
				"a..b/app", "registry-/app", "-registry.example.com/app", "registry.example.com./app",
				"alpine", "https://registry.example.com/app", "registry.example.com/App", "",
			} {
				r := JobRequest{Type: JobTypeImageScan, Target: Target{Image: ref}}
				if err := r.Validate(); err == nil && !re.MatchString(ref) {
					t.Errorf("image pattern rejects %q, which Validate accepts", ref)
				}
			}
		},
		paramKeyRE.String(): nil,
		jobIDPattern: func(t *testing.T, re *regexp.Regexp) {
			for _, s := range ids {
				if re.MatchString(s) != ValidJobID(s) {
					t.Errorf("job id pattern says %v for %q, ValidJobID says %v", re.MatchString(s), s, ValidJobID(s))
				}
			}
		},
		tokenPattern: func(t *testing.T, re *regexp.Regexp) {
			for _, s := range tokens {
				if re.MatchString(s) != ValidToken(s) {
					t.Errorf("token pattern says %v for %q, ValidToken says %v", re.MatchString(s), s, ValidToken(s))
				}
			}
		},
		taskIDPattern: func(t *testing.T, re *regexp.Regexp) {
			for _, id := range ids {
				for _, tool := range tokens {
					s := TaskID(id, tool)
					if want := ValidJobID(id) && ValidToken(tool); re.MatchString(s) != want {
						t.Errorf("task id pattern says %v for %q, want %v", re.MatchString(s), s, want)
					}
				}
			}
		},
		digestPattern: func(t *testing.T, re *regexp.Regexp) {
			if !re.MatchString("sha256:" + strings.Repeat("ab", 32)) {
				t.Error("digest pattern rejects a sha256 digest")
			}
		},
		durationPattern: func(t *testing.T, re *regexp.Regexp) {
			for _, d := range []time.Duration{0, 1, 999, time.Microsecond + 1, 1500 * time.Millisecond, 90 * time.Second, 5 * time.Minute, 26*time.Hour + 3*time.Second + 5} {
				b, err := json.Marshal(Duration(d))
				if err != nil {
					t.Fatal(err)
				}
				s, _ := strconv.Unquote(string(b))
				if !re.MatchString(s) {
					t.Errorf("duration pattern rejects %q, which Duration encodes", s)
				}
			}
			for _, s := range []string{"0", "90s", "1h2m3.5s", "250ms", "1µs", "-5s", "5", "", "5 m", "1d"} {
				var d Duration
				if re.MatchString(s) && json.Unmarshal([]byte(strconv.Quote(s)), &d) != nil {
					t.Errorf("duration pattern accepts %q, which Duration rejects", s)
				}
			}
		},
	}
	for _, w := range wireTypes {
		s := loadSchema(t, w.schema)
		walkSchema(s.root, func(node map[string]any) {
			p, ok := node["pattern"].(string)
			if !ok {
				return
			}
			check, known := checks[p]
			if !known {
				t.Errorf("%s: pattern %q is not tied to any Go check in TestSchemaPatternsMatchGo", w.schema, p)
				return
			}
			if check != nil {
				check(t, s.res[p])
			}
		})
	}
}

func walkSchema(node map[string]any, fn func(map[string]any)) {
	fn(node)
	for _, k := range []string{"properties", "$defs"} {
		m, _ := node[k].(map[string]any)
		for _, name := range sortedKeys(m) {
			walkSchema(m[name].(map[string]any), fn)
		}
	}
	for _, k := range []string{"items", "additionalProperties", "propertyNames"} {
		if sub, ok := node[k].(map[string]any); ok {
			walkSchema(sub, fn)
		}
	}
}

// pointer resolves a JSON pointer of object keys in a schema.
func pointer(t *testing.T, root map[string]any, p string) map[string]any {
	t.Helper()
	node := root
	for _, k := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		next, ok := node[k].(map[string]any)
		if !ok {
			t.Fatalf("pointer %s: no object at %q", p, k)
		}
		node = next
	}
	return node
}

// goConst is a string constant declared in the package's non-test Go files.
type goConst struct{ name, typ, value string }

// packageConsts parses the package's Go files (not the tests) for string
// constants, so enums in the schemas can be compared with the constants
// themselves rather than with a copy kept in the test.
func packageConsts(t *testing.T) []goConst {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []goConst
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				var typ string
				if id, ok := vs.Type.(*ast.Ident); ok {
					typ = id.Name
				}
				for i, n := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, goConst{name: n.Name, typ: typ, value: v})
				}
			}
		}
	}
	return out
}

func constValues(consts []goConst, keep func(goConst) bool) []string {
	var vals []string
	for _, c := range consts {
		if keep(c) {
			vals = append(vals, c.value)
		}
	}
	return vals
}

// TestStdlibOnly enforces the module boundary: schemas has no requirements and
// every file, tests included, imports the standard library only.
func TestStdlibOnly(t *testing.T) {
	t.Parallel()
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mod), "\n") {
		if f := strings.Fields(line); len(f) > 0 && (f[0] == "require" || f[0] == "replace" || f[0] == "tool") {
			t.Errorf("go.mod: %q: the schemas module must depend on the standard library only", line)
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") && p != "ciss.dev/schemas" {
				t.Errorf("%s imports %s: the schemas module is standard library only", name, p)
			}
		}
	}
}
