// Command ciss-k8s-schemas turns the Kubernetes OpenAPI v2 document
// (api/openapi-spec/swagger.json of the k8s.io/kubernetes module) into one
// standalone, strict JSON Schema per kind, in the file layout kubeconform
// reads (<kind>-<group>-<version>.json, e.g. deployment-apps-v1.json).
//
// It does what upstream's openapi2jsonschema does for kubeconform's published
// schemas: every $ref is inlined (a recursive reference becomes {}), objects
// with declared properties get additionalProperties: false (so a misspelt
// field is an error), int-or-string and quantities accept both, and kind and
// apiVersion are pinned by enum. It exists because CI has no network to
// download the published schemas.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	swagger := flag.String("swagger", "", "Kubernetes swagger.json (OpenAPI v2)")
	out := flag.String("out", "", "output directory")
	flag.Parse()
	if err := run(*swagger, *out); err != nil {
		fmt.Fprintln(os.Stderr, "ciss-k8s-schemas:", err)
		os.Exit(1)
	}
}

type gvk struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

func run(swagger, out string) error {
	if swagger == "" || out == "" {
		return errors.New("-swagger and -out are required")
	}
	b, err := os.ReadFile(swagger)
	if err != nil {
		return err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%s: %w", swagger, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(doc.Definitions))
	for n := range doc.Definitions {
		names = append(names, n)
	}
	sort.Strings(names)
	n := 0
	for _, name := range names {
		def := doc.Definitions[name]
		raw, ok := def["x-kubernetes-group-version-kind"]
		if !ok {
			continue
		}
		var kinds []gvk
		rb, _ := json.Marshal(raw)
		if err := json.Unmarshal(rb, &kinds); err != nil {
			return fmt.Errorf("%s: x-kubernetes-group-version-kind: %w", name, err)
		}
		for _, k := range kinds {
			s := expand(doc.Definitions, def, map[string]bool{name: true}).(map[string]any)
			apiVersion := k.Version
			suffix := "-" + k.Version
			if k.Group != "" {
				apiVersion = k.Group + "/" + k.Version
				suffix = "-" + strings.ToLower(strings.Split(k.Group, ".")[0]) + "-" + k.Version
			}
			if props, ok := s["properties"].(map[string]any); ok {
				if p, ok := props["kind"].(map[string]any); ok {
					p["enum"] = []string{k.Kind}
				}
				if p, ok := props["apiVersion"].(map[string]any); ok {
					p["enum"] = []string{apiVersion}
				}
			}
			b, err := json.MarshalIndent(s, "", "  ")
			if err != nil {
				return err
			}
			file := filepath.Join(out, strings.ToLower(k.Kind)+suffix+".json")
			if err := os.WriteFile(file, b, 0o644); err != nil {
				return err
			}
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("%s: no definitions with x-kubernetes-group-version-kind", swagger)
	}
	fmt.Fprintf(os.Stderr, "wrote %d schemas to %s\n", n, out)
	return nil
}

// expand returns a copy of v with every $ref inlined; seen holds the
// definitions being expanded on the current path (recursion → {}).
func expand(defs map[string]map[string]any, v any, seen map[string]bool) any {
	switch v := v.(type) {
	case map[string]any:
		if ref, ok := v["$ref"].(string); ok {
			name := strings.TrimPrefix(ref, "#/definitions/")
			if name == "io.k8s.apimachinery.pkg.api.resource.Quantity" {
				// Serialised as a string, but YAML authors write "cpu: 1".
				return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
			}
			if seen[name] {
				return map[string]any{}
			}
			def, ok := defs[name]
			if !ok {
				return map[string]any{}
			}
			seen[name] = true
			defer delete(seen, name)
			return expand(defs, def, seen)
		}
		if v["format"] == "int-or-string" || v["x-kubernetes-int-or-string"] == true {
			return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
		}
		out := make(map[string]any, len(v))
		for k, x := range v {
			if strings.HasPrefix(k, "x-kubernetes-") {
				continue
			}
			out[k] = expand(defs, x, seen)
		}
		if _, hasProps := out["properties"]; hasProps {
			if _, set := out["additionalProperties"]; !set {
				out["additionalProperties"] = false
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = expand(defs, x, seen)
		}
		return out
	}
	return v
}
