package schemas

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// fieldErrors returns the fields named by the *FieldErrors joined in err.
func fieldErrors(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var fields []string
	for _, e := range errs {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("Validate returned %T (%v), want only *FieldError", e, e)
		}
		if fe.Reason == "" || !strings.HasPrefix(fe.Error(), fe.Field+": ") {
			t.Errorf("FieldError %#v has no reason or a malformed message %q", fe, fe.Error())
		}
		fields = append(fields, fe.Field)
	}
	slices.Sort(fields)
	return fields
}

func TestJobRequestValidate(t *testing.T) {
	t.Parallel()
	digest := "sha256:" + strings.Repeat("0a", 32)
	image := func(ref string) func(*JobRequest) { return func(r *JobRequest) { r.Target.Image = ref } }
	params := func(kv ...string) func(*JobRequest) {
		return func(r *JobRequest) {
			r.Params = map[string]string{}
			for i := 0; i < len(kv); i += 2 {
				r.Params[kv[i]] = kv[i+1]
			}
		}
	}
	nParams := func(n int) func(*JobRequest) {
		return func(r *JobRequest) {
			r.Params = map[string]string{}
			for i := range n {
				r.Params[fmt.Sprintf("p%d", i)] = "v"
			}
		}
	}
	longRef := func(n int) string { // a well-formed reference of exactly n bytes
		const prefix = "registry.example.com/"
		return prefix + strings.Repeat("a", n-len(prefix))
	}
	const img = "target.image"
	for _, c := range []struct {
		name   string
		mutate func(*JobRequest)
		want   []string // fields of the expected FieldErrors; nil means valid
	}{
		// Valid references.
		{"tag", image("registry.example.com/team/app:1.0"), nil},
		{"digest with port", image("registry.example.com:5000/team/app@sha256:" + strings.Repeat("0a", 32)), nil},
		{"tag and digest", image("localhost:5000/app:latest@" + digest), nil},
		{"docker hub", image("docker.io/library/alpine:3.20"), nil},
		{"separators", image("ghcr.io/org/sub/app_name.x-y:v1.2_3-rc.1"), nil},
		{"ip and port", image("10.0.0.7:5000/app"), nil},
		{"max length", image(longRef(MaxImageRefLen)), nil},

		// Hostile or malformed references.
		{"empty image", image(""), []string{img}},
		{"space", image("registry.example.com/app :1"), []string{img}},
		{"leading space", image(" registry.example.com/app"), []string{img}},
		{"tab", image("registry.example.com/app\t"), []string{img}},
		{"scheme", image("https://registry.example.com/app"), []string{img}},
		{"scheme docker", image("docker://registry.example.com/app"), []string{img}},
		{"dot dot", image("registry.example.com/../etc/passwd"), []string{img}},
		{"trailing dot dot", image("registry.example.com/app/.."), []string{img}},
		{"dot", image("registry.example.com/./app"), []string{img}},
		{"trailing newline", image("registry.example.com/app:1\n"), []string{img}},
		{"embedded newline", image("registry.example.com/app\nregistry.evil.example/x"), []string{img}},
		{"carriage return", image("registry.example.com/app\r"), []string{img}},
		{"nul", image("registry.example.com/app:1\x00"), []string{img}},
		{"line separator", image("registry.example.com/app\u2028"), []string{img}},
		{"overlong", image(longRef(MaxImageRefLen + 1)), []string{img}},
		{"upper-case repo", image("registry.example.com/Team/App:1"), []string{img}},
		{"short digest", image("registry.example.com/app@sha256:abc"), []string{img}},
		{"upper-case digest", image("registry.example.com/app@sha256:" + strings.Repeat("0A", 32)), []string{img}},
		{"other algorithm", image("registry.example.com/app@sha512:" + strings.Repeat("0a", 64)), []string{img}},
		{"no host", image("alpine:3.20"), []string{img}},
		{"bare name", image("alpine"), []string{img}},
		{"tag starting with dash", image("registry.example.com/app:-rm"), []string{img}},
		{"tag too long", image("registry.example.com/app:" + strings.Repeat("a", 129)), []string{img}},
		{"shell", image("registry.example.com/app;id"), []string{img}},
		{"command substitution", image("registry.example.com/app:$(id)"), []string{img}},
		{"option injection", image("-oProxyCommand=x/app"), []string{img}},
		{"empty path component", image("registry.example.com//app"), []string{img}},
		{"trailing slash", image("registry.example.com/app/"), []string{img}},
		{"userinfo", image("user:pass@registry.example.com/app"), []string{img}},
		{"query", image("registry.example.com/app?x=1"), []string{img}},
		{"fragment", image("registry.example.com/app#x"), []string{img}},
		{"percent encoding", image("registry.example.com/app%2F..%2Fx"), []string{img}},
		{"backslash", image("registry.example.com\\app"), []string{img}},
		{"full-width letter", image("registry.example.com/\uff41pp"), []string{img}},
		{"ipv6", image("[::1]:5000/app"), []string{img}}, // conservative: not supported

		// The registry must be explicit and well-formed.
		{"localhost", image("localhost/app"), nil},
		{"host and port without dot", image("registry:5000/app"), nil},
		{"port one", image("registry.example.com:1/app"), nil},
		{"port max", image("registry.example.com:65535/app"), nil},
		{"host labels with dashes", image("my-registry.example-1.com/app"), nil},
		{"host with consecutive dots", image("a..b/app"), []string{img}},
		{"host ending in a dash", image("registry-/app"), []string{img}},
		{"host label ending in a dash", image("registry-.example.com/app"), []string{img}},
		{"host label starting with a dash", image("registry.-example.com/app"), []string{img}},
		{"host ending in a dot", image("registry.example.com./app"), []string{img}},
		{"host starting with a dot", image(".registry.example.com/app"), []string{img}},
		{"port out of range", image("registry.example.com:99999/app"), []string{img}},
		{"port one over max", image("registry.example.com:65536/app"), []string{img}},
		{"port zero", image("registry.example.com:0/app"), []string{img}},
		{"port of zeros", image("registry.example.com:00000/app"), []string{img}},
		{"empty port", image("registry.example.com:/app"), []string{img}},
		{"Docker Hub short form", image("library/alpine"), []string{img}},
		{"Docker Hub short form with tag", image("team/app:1.0"), []string{img}},
		{"localhost in upper case", image("LOCALHOST/app"), []string{img}}, // conservative: only "localhost" is implicit

		// Other fields.
		{"no type", func(r *JobRequest) { r.Type = "" }, []string{"type"}},
		{"unknown type", func(r *JobRequest) { r.Type = "image-sign" }, []string{"type"}},
		{"upper-case type", func(r *JobRequest) { r.Type = "IMAGE-SCAN" }, []string{"type"}},
		{"unknown lane", func(r *JobRequest) { r.Lane = "urgent" }, []string{"lane"}},
		{"upper-case lane", func(r *JobRequest) { r.Lane = "Interactive" }, []string{"lane"}},
		{"bulk lane", func(r *JobRequest) { r.Lane = LaneBulk }, nil},
		{"max params", nParams(MaxParams), nil},
		{"too many params", nParams(MaxParams + 1), []string{"params"}},
		{"param key forms", params("a.b-c_d9", "x", strings.Repeat("k", MaxParamKeyLen), "x"), nil},
		{"param key upper-case", params("Severity", "x"), []string{"params"}},
		{"param key digit first", params("1abc", "x"), []string{"params"}},
		{"param key underscore first", params("_x", "x"), []string{"params"}},
		{"param key space", params("a b", "x"), []string{"params"}},
		{"param key newline", params("a\nb", "x"), []string{"params"}},
		{"param key empty", params("", "x"), []string{"params"}},
		{"param key equals", params("a=b", "x"), []string{"params"}},
		{"param key unicode", params("é", "x"), []string{"params"}},
		{"param key too long", params(strings.Repeat("k", MaxParamKeyLen+1), "x"), []string{"params"}},
		{"param value max", params("k", strings.Repeat("v", MaxParamValueLen)), nil},
		{"param value too long", params("k", strings.Repeat("v", MaxParamValueLen+1)), []string{"params.k"}},
		{"param value printable", params("k", "HIGH,CRITICAL --x=\"y\" é \u2603"), nil},
		{"param value newline", params("severity", "HIGH\n--output=/etc/passwd"), []string{"params.severity"}},
		{"param value nul", params("severity", "HIGH\x00"), []string{"params.severity"}},
		{"param value escape", params("severity", "\x1b[2J"), []string{"params.severity"}},
		{"param value tab", params("severity", "HIGH\tLOW"), []string{"params.severity"}},
		{"param value carriage return", params("severity", "HIGH\r"), []string{"params.severity"}},
		{"param value delete", params("severity", "HIGH\x7f"), []string{"params.severity"}},
		{"param values with control characters", params("a", "x\n", "b", "y\x1f", "c", "ok"), []string{"params.a", "params.b"}},
		{"every problem at once", func(r *JobRequest) {
			r.Type, r.Lane, r.Params = "", "x", map[string]string{"Bad": "v"}
		}, []string{"lane", "params", "type"}},
		{"wrong type hides image problems", func(r *JobRequest) { r.Type, r.Target.Image = "nope", "https://x" }, []string{"type"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := JobRequest{Type: JobTypeImageScan, Target: Target{Image: "registry.example.com/team/app:1.0"}}
			c.mutate(&r)
			if got := fieldErrors(t, r.Validate()); !slices.Equal(got, c.want) {
				t.Errorf("Validate(%+q) fields = %q, want %q", r.Target.Image, got, c.want)
			}
		})
	}
}

// TestJobRequestValidateAcceptsByDesign lists references a stricter check
// might refuse but Validate accepts on purpose. Validate checks the form of a
// reference, not where it points: loopback, private and link-local registries
// are well-formed, and which registries a worker may contact is policy, enforced
// by the workers' registry allow-list and forbidden address ranges (the SSRF
// defence, close to the dial). A failure means Validate changed: decide whether
// the case belongs in TestJobRequestValidate instead.
func TestJobRequestValidateAcceptsByDesign(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ why, image string }{
		{"link-local metadata address as registry: refused by the workers, not by the syntax check", "169.254.169.254/latest:meta-data"},
		{"loopback registry: refused by the workers unless allow-listed", "127.0.0.1:2375/app"},
		{"private address registry: a legitimate in-cluster registry", "10.0.0.7:5000/app"},
		{"tag of dots: valid OCI tag grammar [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", "registry.example.com/app:a.."},
		{"numeric labels: read as an IPv4 address or a DNS name, the registry's resolver decides", "999.999.999.999/app"},
	} {
		r := JobRequest{Type: JobTypeImageScan, Target: Target{Image: c.image}}
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %q is now rejected (%v)", c.why, c.image, err)
		}
	}
}

func TestJobRequestValidateDefaultsLane(t *testing.T) {
	t.Parallel()
	r := JobRequest{Type: JobTypeImageScan, Target: Target{Image: "registry.example.com/app:1"}}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if r.Lane != LaneInteractive {
		t.Errorf("Lane = %q, want the default %q", r.Lane, LaneInteractive)
	}
	r.Lane = LaneBulk
	if err := r.Validate(); err != nil || r.Lane != LaneBulk {
		t.Errorf("Validate changed lane bulk to %q (err %v)", r.Lane, err)
	}
}

func TestJobRequestCacheEnabled(t *testing.T) {
	t.Parallel()
	yes, no := true, false
	for _, c := range []struct {
		cache *bool
		want  bool
	}{{nil, true}, {&yes, true}, {&no, false}} {
		if got := (&JobRequest{Cache: c.cache}).CacheEnabled(); got != c.want {
			t.Errorf("CacheEnabled with %v = %v, want %v", c.cache, got, c.want)
		}
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		s               Status
		valid, terminal bool
	}{
		{StatusQueued, true, false},
		{StatusRunning, true, false},
		{StatusSucceeded, true, true},
		{StatusFailed, true, true},
		{StatusCancelled, true, true},
		{"", false, false},
		{"done", false, false},
		{"Succeeded", false, false},
		{"canceled", false, false},
	} {
		if got := c.s.Valid(); got != c.valid {
			t.Errorf("Status(%q).Valid() = %v, want %v", c.s, got, c.valid)
		}
		if got := c.s.Terminal(); got != c.terminal {
			t.Errorf("Status(%q).Terminal() = %v, want %v", c.s, got, c.terminal)
		}
	}
}

func TestLane(t *testing.T) {
	t.Parallel()
	if got := Lanes(); !slices.Equal(got, []Lane{LaneInteractive, LaneBulk}) {
		t.Errorf("Lanes() = %q", got)
	}
	for _, l := range Lanes() {
		if !l.Valid() {
			t.Errorf("Lane(%q).Valid() = false", l)
		}
	}
	for _, l := range []Lane{"", "Bulk", "urgent", "bulk "} {
		if l.Valid() {
			t.Errorf("Lane(%q).Valid() = true", l)
		}
	}
}

func TestResultHelpers(t *testing.T) {
	t.Parallel()
	s := Summary{Critical: 1, High: 2, Medium: 3, Low: 4, Unknown: 5}
	if s.Total() != 15 {
		t.Errorf("Total() = %d, want 15", s.Total())
	}
	r := Result{Reports: []Report{{Format: FormatNative, Object: "n"}, {Format: FormatSARIF, Object: "s"}}}
	if rep, ok := r.ReportFor(FormatSARIF); !ok || rep.Object != "s" {
		t.Errorf("ReportFor(sarif) = %v, %v", rep, ok)
	}
	if _, ok := r.ReportFor(FormatCycloneDX); ok {
		t.Error("ReportFor(cyclonedx) found a report that is not there")
	}
	if got := (&Error{Code: CodeTimeout, Message: "took too long"}).Error(); got != "timeout: took too long" {
		t.Errorf("Error() = %q", got)
	}
}
