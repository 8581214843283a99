package schemas

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// This file holds a deliberately small JSON Schema validator, enough for the
// subset of draft 2020-12 that jsonschema/*.json uses, so that the tests need
// nothing beyond the standard library. It is honest about its limits: loading a
// schema that uses any keyword it does not implement is an error, so a schema
// can never silently rely on a check that is not performed here.
//
// Implemented: type, properties, required, additionalProperties (false or a
// schema), propertyNames, maxProperties, items, enum, const, minLength,
// maxLength (in characters), pattern (Go RE2 syntax, unanchored as the spec
// says; the patterns used are also valid ECMA-262), minimum, format date-time
// (RFC 3339 as time.Parse reads it), and $ref to "#/$defs/Name" within the same
// document. enum and const compare numbers by their JSON text.

// schemaKeywords are the keywords the validator enforces.
var schemaKeywords = []string{
	"$ref", "$defs", "type", "properties", "required", "additionalProperties",
	"propertyNames", "maxProperties", "items", "enum", "const", "minLength",
	"maxLength", "pattern", "minimum", "format",
}

// annotationKeywords carry no assertion and are allowed anywhere.
var annotationKeywords = []string{
	"$schema", "$id", "$comment", "title", "description", "examples", "default",
	"contentEncoding", "contentMediaType",
}

// jsonSchema is one loaded schema document.
type jsonSchema struct {
	file string
	root map[string]any
	res  map[string]*regexp.Regexp // compiled patterns
}

// loadSchema reads jsonschema/<name>, checks that it only uses supported
// keywords, and compiles its patterns.
func loadSchema(t testing.TB, name string) *jsonSchema {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("jsonschema", name))
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if err := decodeNumbers(b, &root); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	s := &jsonSchema{file: name, root: root, res: map[string]*regexp.Regexp{}}
	if err := s.check(root, "#"); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return s
}

// decodeNumbers decodes JSON keeping numbers as json.Number, so integers stay exact.
func decodeNumbers(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

// check walks a schema node and rejects what the validator would not enforce.
func (s *jsonSchema) check(node map[string]any, at string) error {
	for k, v := range node {
		if !slices.Contains(schemaKeywords, k) && !slices.Contains(annotationKeywords, k) {
			return fmt.Errorf("%s: keyword %q is not supported by the test validator", at, k)
		}
		var err error
		switch k {
		case "properties", "$defs":
			m, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("%s/%s: not an object", at, k)
			}
			for name, sub := range m {
				if err = s.checkSub(sub, at+"/"+k+"/"+name); err != nil {
					return err
				}
			}
		case "items", "propertyNames":
			err = s.checkSub(v, at+"/"+k)
		case "additionalProperties":
			if _, isBool := v.(bool); !isBool {
				err = s.checkSub(v, at+"/"+k)
			}
		case "$ref":
			ref, _ := v.(string)
			if _, err = s.resolve(ref); err != nil {
				return fmt.Errorf("%s: %w", at, err)
			}
		case "pattern":
			p, _ := v.(string)
			re, err := regexp.Compile(p)
			if err != nil {
				return fmt.Errorf("%s: pattern: %w", at, err)
			}
			s.res[p] = re
		case "format":
			if v != "date-time" {
				return fmt.Errorf("%s: format %v is not supported by the test validator", at, v)
			}
		case "type":
			if _, ok := v.(string); !ok {
				return fmt.Errorf("%s: type must be a single string here", at)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *jsonSchema) checkSub(v any, at string) error {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("%s: schema must be an object", at)
	}
	return s.check(m, at)
}

// resolve looks up a "#/$defs/Name" reference.
func (s *jsonSchema) resolve(ref string) (map[string]any, error) {
	name, ok := strings.CutPrefix(ref, "#/$defs/")
	if !ok || strings.Contains(name, "/") {
		return nil, fmt.Errorf("$ref %q: only #/$defs/Name is supported", ref)
	}
	defs, _ := s.root["$defs"].(map[string]any)
	def, ok := defs[name].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("$ref %q: no such definition", ref)
	}
	return def, nil
}

// deref follows $ref until it reaches a node without one.
func (s *jsonSchema) deref(node map[string]any) map[string]any {
	for {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node
		}
		next, err := s.resolve(ref)
		if err != nil {
			panic(err) // check() has verified every $ref
		}
		node = next
	}
}

// Validate returns every violation of the schema by the JSON document b.
func (s *jsonSchema) Validate(b []byte) []string {
	var inst any
	if err := decodeNumbers(b, &inst); err != nil {
		return []string{err.Error()}
	}
	return s.ValidateValue(inst)
}

// ValidateValue validates a value decoded with decodeNumbers.
func (s *jsonSchema) ValidateValue(inst any) []string {
	var errs []string
	s.validate(s.root, inst, "", &errs)
	return errs
}

func (s *jsonSchema) validate(node map[string]any, inst any, at string, errs *[]string) {
	fail := func(format string, args ...any) {
		*errs = append(*errs, fmt.Sprintf("%s: %s", cmp.Or(at, "/"), fmt.Sprintf(format, args...)))
	}
	node = s.deref(node)
	if typ, ok := node["type"].(string); ok && !hasType(inst, typ) {
		fail("got %s, want %s", jsonType(inst), typ)
		return
	}
	if enum, ok := node["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return reflect.DeepEqual(e, inst) }) {
		fail("%v is not one of %v", inst, enum)
	}
	if c, ok := node["const"]; ok && !reflect.DeepEqual(c, inst) {
		fail("%v is not %v", inst, c)
	}
	switch v := inst.(type) {
	case map[string]any:
		props, _ := node["properties"].(map[string]any)
		for _, r := range asSlice(node["required"]) {
			if _, ok := v[r.(string)]; !ok {
				fail("required property %q is missing", r)
			}
		}
		if maxp, ok := node["maxProperties"].(json.Number); ok {
			if n, _ := maxp.Int64(); int64(len(v)) > n {
				fail("%d properties, more than %d", len(v), n)
			}
		}
		for _, k := range sortedKeys(v) {
			if pn, ok := node["propertyNames"].(map[string]any); ok {
				s.validate(pn, k, at+"/"+k+"(name)", errs)
			}
			if sub, ok := props[k].(map[string]any); ok {
				s.validate(sub, v[k], at+"/"+k, errs)
				continue
			}
			switch ap := node["additionalProperties"].(type) {
			case bool:
				if !ap {
					fail("property %q is not allowed", k)
				}
			case map[string]any:
				s.validate(ap, v[k], at+"/"+k, errs)
			}
		}
	case []any:
		if items, ok := node["items"].(map[string]any); ok {
			for i, e := range v {
				s.validate(items, e, at+"/"+strconv.Itoa(i), errs)
			}
		}
	case string:
		n := utf8.RuneCountInString(v)
		if minl, ok := node["minLength"].(json.Number); ok {
			if m, _ := minl.Int64(); int64(n) < m {
				fail("%d characters, fewer than %d", n, m)
			}
		}
		if maxl, ok := node["maxLength"].(json.Number); ok {
			if m, _ := maxl.Int64(); int64(n) > m {
				fail("%d characters, more than %d", n, m)
			}
		}
		if p, ok := node["pattern"].(string); ok && !s.res[p].MatchString(v) {
			fail("%q does not match %s", v, p)
		}
		if node["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
				fail("%q is not an RFC 3339 date-time", v)
			}
		}
	case json.Number:
		if minv, ok := node["minimum"].(json.Number); ok {
			x, _ := v.Float64()
			m, _ := minv.Float64()
			if x < m {
				fail("%s is less than %s", v, minv)
			}
		}
	}
}

func hasType(inst any, typ string) bool {
	switch typ {
	case "integer":
		n, ok := inst.(json.Number)
		if !ok {
			return false
		}
		if _, err := n.Int64(); err == nil {
			return true
		}
		f, err := n.Float64()
		return err == nil && f == math.Trunc(f) && !math.IsInf(f, 0)
	case "number":
		_, ok := inst.(json.Number)
		return ok
	default:
		return jsonType(inst) == typ
	}
}

func jsonType(inst any) string {
	switch inst.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", inst)
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestValidatorSelfCheck makes sure the test validator rejects what it claims to.
func TestValidatorSelfCheck(t *testing.T) {
	t.Parallel()
	s := &jsonSchema{root: map[string]any{}, res: map[string]*regexp.Regexp{}}
	schemaJSON := `{
		"type": "object", "additionalProperties": false, "required": ["a"],
		"properties": {
			"a": {"$ref": "#/$defs/A"},
			"n": {"type": "integer", "minimum": 1},
			"t": {"type": "string", "format": "date-time"},
			"l": {"type": "array", "items": {"type": "string", "maxLength": 2, "minLength": 1}},
			"m": {"type": "object", "maxProperties": 1, "propertyNames": {"type": "string", "pattern": "^[a-z]+$"},
			      "additionalProperties": {"type": "boolean"}},
			"c": {"type": "string", "const": "x"}
		},
		"$defs": {"A": {"type": "string", "enum": ["x", "y"]}}
	}`
	if err := decodeNumbers([]byte(schemaJSON), &s.root); err != nil {
		t.Fatal(err)
	}
	if err := s.check(s.root, "#"); err != nil {
		t.Fatal(err)
	}
	good := `{"a":"x","n":1,"t":"2025-01-02T03:04:05.5+01:00","l":["ab"],"m":{"k":true},"c":"x"}`
	if errs := s.Validate([]byte(good)); len(errs) > 0 {
		t.Fatalf("valid instance rejected: %v", errs)
	}
	for _, bad := range []string{
		`[]`,
		`{}`,
		`{"a":"z"}`,
		`{"a":"x","extra":1}`,
		`{"a":"x","n":0}`,
		`{"a":"x","n":1.5}`,
		`{"a":"x","n":"1"}`,
		`{"a":"x","t":"2025-01-02 03:04:05"}`,
		`{"a":"x","l":["abc"]}`,
		`{"a":"x","l":[""]}`,
		`{"a":"x","l":"ab"}`,
		`{"a":"x","m":{"k":true,"j":false}}`,
		`{"a":"x","m":{"K":true}}`,
		`{"a":"x","m":{"k":1}}`,
		`{"a":"x","c":"y"}`,
		`{"a":null}`,
	} {
		if errs := s.Validate([]byte(bad)); len(errs) == 0 {
			t.Errorf("invalid instance %s accepted", bad)
		}
	}
	for _, unsupported := range []string{
		`{"oneOf": []}`,
		`{"type": ["string", "null"]}`,
		`{"format": "uri"}`,
		`{"$ref": "other.json#/$defs/A"}`,
		`{"properties": {"a": {"minItems": 1}}}`,
	} {
		var node map[string]any
		if err := decodeNumbers([]byte(unsupported), &node); err != nil {
			t.Fatal(err)
		}
		if err := s.check(node, "#"); err == nil {
			t.Errorf("schema %s loaded although the validator cannot enforce it", unsupported)
		}
	}
}
