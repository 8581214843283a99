package gateway_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"ciss.dev/gateway/internal/api"
	"ciss.dev/gateway/internal/problem"
	"ciss.dev/schemas"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// openAPIFile is the API description, owned with this module but kept next to
// the wire types it describes.
var openAPIFile = filepath.Join("..", "schemas", "openapi.yaml")

func loadOpenAPI(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(openAPIFile)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, yaml.UnmarshalStrict(b, &doc))
	require.Equal(t, "3.1.0", doc["openapi"])
	return doc
}

// TestOpenAPIRoutes fails when the served routes and the documented ones drift.
func TestOpenAPIRoutes(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	methods := map[string]bool{"get": true, "put": true, "post": true, "delete": true, "patch": true, "head": true, "options": true, "trace": true}
	var documented []string
	for path, item := range doc["paths"].(map[string]any) {
		for k := range item.(map[string]any) {
			if methods[k] {
				documented = append(documented, strings.ToUpper(k)+" "+path)
			}
		}
	}
	served := api.Routes()
	sort.Strings(documented)
	sort.Strings(served)
	require.Equal(t, served, documented)
}

// jsonNames lists the JSON property names of a struct type.
func jsonNames(typ reflect.Type) []string {
	var out []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// TestOpenAPISchemas fails when a documented schema's properties differ from
// the Go type's JSON fields.
func TestOpenAPISchemas(t *testing.T) {
	t.Parallel()
	schemasDoc := loadOpenAPI(t)["components"].(map[string]any)["schemas"].(map[string]any)
	for name, v := range map[string]any{
		"Job":                schemas.Job{},
		"JobRequest":         schemas.JobRequest{},
		"Target":             schemas.Target{},
		"Error":              schemas.Error{},
		"TaskRef":            schemas.TaskRef{},
		"Result":             schemas.Result{},
		"Summary":            schemas.Summary{},
		"Report":             schemas.Report{},
		"JobList":            api.JobList{},
		"InvalidParam":       schemas.FieldError{},
		"Problem":            problem.Problem{},
		"Provenance":         schemas.Provenance{},
		"WebhookAudit":       schemas.WebhookAudit{},
		"AuditRecord":        api.AuditRecord{},
		"AuditList":          api.AuditList{},
		"PolicyDecision":     schemas.PolicyDecision{},
		"ImageSignature":     schemas.ImageSignature{},
		"Envelope":           schemas.Envelope{},
		"Keys":               schemas.Keys{},
		"PublicKey":          schemas.PublicKey{},
		"ArtifactProvenance": api.ArtifactProvenance{},
		"ProvenanceRecord":   api.ProvenanceRecord{},
	} {
		s, ok := schemasDoc[name].(map[string]any)
		require.True(t, ok, "components.schemas.%s missing", name)
		var props []string
		for p := range s["properties"].(map[string]any) {
			props = append(props, p)
		}
		sort.Strings(props)
		require.Equal(t, jsonNames(reflect.TypeOf(v)), props, "components.schemas.%s", name)
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				require.True(t, slices.Contains(props, r.(string)), "%s requires unknown property %v", name, r)
			}
		}
	}
}

// TestOpenAPIRefs checks that every local $ref points at something.
func TestOpenAPIRefs(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	var walk func(path string, v any)
	n := 0
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if ref, ok := x.(string); ok && k == "$ref" {
					n++
					require.True(t, strings.HasPrefix(ref, "#/"), "%s: only local refs: %s", path, ref)
					var cur any = doc
					for part := range strings.SplitSeq(strings.TrimPrefix(ref, "#/"), "/") {
						m, ok := cur.(map[string]any)
						require.True(t, ok, "%s: %s does not resolve", path, ref)
						cur, ok = m[part]
						require.True(t, ok, "%s: %s does not resolve", path, ref)
					}
					continue
				}
				walk(path+"/"+k, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		}
	}
	walk("#", doc)
	require.Greater(t, n, 20)
}
