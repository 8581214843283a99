package webhook

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"

	"ciss.dev/schemas"
	"sigs.k8s.io/yaml"
)

// ConfigVersion is the only webhook configuration version understood.
const ConfigVersion = 1

// Secret length bounds, in bytes after trailing newlines are cut. GitHub and
// GitLab accept any secret; CISS refuses short ones because the HMAC is only
// as strong as the secret.
const (
	MinSecretLen = 16
	MaxSecretLen = 4096
)

// redacted is what a Secret prints as, everywhere.
const redacted = "[REDACTED]"

// Secret is webhook key material. It formats, logs and encodes as
// "[REDACTED]", so passing one to a logger or an error by mistake leaks
// nothing.
type Secret struct{ b []byte }

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (Secret) GoString() string { return redacted }

// Format implements fmt.Formatter, for every verb.
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText implements encoding.TextMarshaler (and so JSON encoding).
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// bytes returns the key material; only the verifiers call it.
func (s Secret) bytes() []byte { return s.b }

// SecretRef says where a secret comes from: a file (a mounted Kubernetes
// secret, or a file rendered by Vault Agent or the Vault CSI provider) or an
// environment variable. Exactly one is set. The reference, never the secret,
// may be logged.
type SecretRef struct {
	// File is a file holding the secret; trailing newlines are ignored.
	File string `json:"secret_file,omitempty"`
	// Env is an environment variable holding the secret.
	Env string `json:"secret_env,omitempty"`
}

// LogValue implements slog.LogValuer.
func (r SecretRef) LogValue() slog.Value {
	if r.File != "" {
		return slog.StringValue("file:" + r.File)
	}
	return slog.StringValue("env:" + r.Env)
}

// document is the configuration file's format.
//
//	version: 1
//	github:
//	  default: {secret_file: /run/secrets/github-webhook}   # any repository
//	  owners:                                               # an organisation or user
//	    acme: {secret_env: CISS_WEBHOOK_SECRET_ACME}
//	  repos:                                                # one repository
//	    acme/payments: {secret_file: /run/secrets/acme-payments}
//	gitlab:
//	  default: {secret_file: /run/secrets/gitlab-webhook}
//	  groups:                                               # a group and its subgroups
//	    acme/platform: {secret_file: /run/secrets/gitlab-platform}
//	  projects:
//	    acme/platform/api: {secret_env: CISS_WEBHOOK_SECRET_API}
type document struct {
	Version int            `json:"version"`
	GitHub  *githubSection `json:"github,omitempty"`
	GitLab  *gitlabSection `json:"gitlab,omitempty"`
}

type githubSection struct {
	Default *SecretRef           `json:"default,omitempty"`
	Owners  map[string]SecretRef `json:"owners,omitempty"`
	Repos   map[string]SecretRef `json:"repos,omitempty"`
}

type gitlabSection struct {
	Default  *SecretRef           `json:"default,omitempty"`
	Groups   map[string]SecretRef `json:"groups,omitempty"`
	Projects map[string]SecretRef `json:"projects,omitempty"`
}

// pathRE is a repository, owner or group path: segments of letters, digits,
// '.', '_' and '-', separated by '/'.
var pathRE = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_.-]*(/[A-Za-z0-9_.][A-Za-z0-9_.-]*)*$`)

// maxPathLen bounds repository paths (GitLab allows deep group nesting).
const maxPathLen = 255

// validPath reports whether s is a repository, owner or group path of at
// least minSegments segments.
// "." and ".." are never segments: paths end up in templates and URLs.
func validPath(s string, minSegments int) bool {
	if len(s) > maxPathLen || !pathRE.MatchString(s) || strings.Count(s, "/")+1 < minSegments {
		return false
	}
	for seg := range strings.SplitSeq(s, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// entry is a resolved secret and the scope it was configured for.
type entry struct {
	ref    SecretRef
	secret Secret
	scope  string
}

// scopes are one provider's secrets.
type scopes struct {
	def    *entry
	owners map[string]entry // GitHub owners, GitLab groups; lower-case keys
	repos  map[string]entry // lower-case keys
}

// Secrets is a validated webhook configuration with every secret resolved.
type Secrets struct {
	providers map[schemas.GitProvider]*scopes
	files     []string
}

// LookupEnv reads an environment variable, like os.LookupEnv.
type LookupEnv func(string) (string, bool)

// ParseConfig decodes a configuration document strictly and resolves its
// secrets. Errors wrap ErrInvalidConfig and never contain secret material.
func ParseConfig(b []byte, lookupEnv LookupEnv) (*Secrets, error) {
	var doc document
	if err := yaml.UnmarshalStrict(b, &doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if doc.Version != ConfigVersion {
		return nil, &ConfigError{Field: "version", Reason: fmt.Sprintf("must be %d, got %d", ConfigVersion, doc.Version)}
	}
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	s := &Secrets{providers: map[schemas.GitProvider]*scopes{}}
	if g := doc.GitHub; g != nil {
		sc, err := s.resolve("github", g.Default, "owners", g.Owners, 1, "repos", g.Repos, lookupEnv)
		if err != nil {
			return nil, err
		}
		s.providers[schemas.ProviderGitHub] = sc
	}
	if g := doc.GitLab; g != nil {
		sc, err := s.resolve("gitlab", g.Default, "groups", g.Groups, 1, "projects", g.Projects, lookupEnv)
		if err != nil {
			return nil, err
		}
		s.providers[schemas.ProviderGitLab] = sc
	}
	if len(s.providers) == 0 {
		return nil, &ConfigError{Field: "github, gitlab", Reason: "at least one provider needs a secret; without one every request is refused"}
	}
	slices.Sort(s.files)
	s.files = slices.Compact(s.files)
	return s, nil
}

func (s *Secrets) resolve(section string, def *SecretRef, ownersName string, owners map[string]SecretRef, ownerSegments int,
	reposName string, repos map[string]SecretRef, lookupEnv LookupEnv) (*scopes, error) {
	sc := &scopes{owners: map[string]entry{}, repos: map[string]entry{}}
	load := func(field string, ref SecretRef, scope string) (entry, error) {
		b, err := ref.load(lookupEnv)
		if err != nil {
			return entry{}, &ConfigError{Field: field, Reason: err.Error()}
		}
		if ref.File != "" {
			s.files = append(s.files, ref.File)
		}
		return entry{ref: ref, secret: Secret{b: b}, scope: scope}, nil
	}
	if def != nil {
		e, err := load(section+".default", *def, "default")
		if err != nil {
			return nil, err
		}
		sc.def = &e
	}
	for _, m := range []struct {
		name     string
		refs     map[string]SecretRef
		into     map[string]entry
		segments int
	}{{ownersName, owners, sc.owners, ownerSegments}, {reposName, repos, sc.repos, 2}} {
		for _, k := range slices.Sorted(maps.Keys(m.refs)) {
			field := fmt.Sprintf("%s.%s[%s]", section, m.name, k)
			if !validPath(k, m.segments) {
				return nil, &ConfigError{Field: field, Reason: "is not a path of letters, digits, '.', '_', '-' separated by '/'" +
					map[bool]string{true: " with an owner and a name", false: ""}[m.segments > 1]}
			}
			key := strings.ToLower(k)
			if _, dup := m.into[key]; dup {
				return nil, &ConfigError{Field: field, Reason: "repeats another entry (paths are case-insensitive)"}
			}
			e, err := load(field, m.refs[k], strings.TrimSuffix(m.name, "s")+" "+key)
			if err != nil {
				return nil, err
			}
			m.into[key] = e
		}
	}
	if sc.def == nil && len(sc.owners) == 0 && len(sc.repos) == 0 {
		return nil, &ConfigError{Field: section, Reason: "has no secret; remove the section or add one"}
	}
	return sc, nil
}

// load reads the secret. Its errors name the reference, never the content.
func (r SecretRef) load(lookupEnv LookupEnv) ([]byte, error) {
	var b []byte
	switch {
	case (r.File == "") == (r.Env == ""):
		return nil, fmt.Errorf("needs exactly one of secret_file, secret_env")
	case r.File != "":
		var err error
		if b, err = os.ReadFile(r.File); err != nil {
			return nil, fmt.Errorf("read secret: %w", err)
		}
	default:
		v, ok := lookupEnv(r.Env)
		if !ok {
			return nil, fmt.Errorf("environment variable %s is not set", r.Env)
		}
		b = []byte(v)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) < MinSecretLen || len(b) > MaxSecretLen {
		return nil, fmt.Errorf("secret from %s must be %d to %d bytes long, it is %d", r.LogValue(), MinSecretLen, MaxSecretLen, len(b))
	}
	return b, nil
}

// Lookup picks the secret for a request: the repository's own, else the
// closest configured owner or group (GitLab: the longest matching group
// path), else the provider's default. repo is the repository path the body
// names, org the organisation login when there is no repository (GitHub
// organisation hooks); both may be empty. scope says which entry applied.
func (s *Secrets) Lookup(p schemas.GitProvider, repo, org string) (secret Secret, scope string, ok bool) {
	sc := s.providers[p]
	if sc == nil {
		return Secret{}, "", false
	}
	repo, org = strings.ToLower(repo), strings.ToLower(org)
	if repo != "" {
		if e, ok := sc.repos[repo]; ok {
			return e.secret, e.scope, true
		}
	}
	owner, _ := schemas.SplitRepo(repo)
	if owner == "" {
		owner = org
	}
	for owner != "" {
		if e, ok := sc.owners[owner]; ok {
			return e.secret, e.scope, true
		}
		owner, _ = schemas.SplitRepo(owner)
	}
	if sc.def != nil {
		return sc.def.secret, sc.def.scope, true
	}
	return Secret{}, "", false
}

// Files lists the secret files the configuration read, for change detection.
func (s *Secrets) Files() []string { return slices.Clone(s.files) }

// LogValue implements slog.LogValuer: counts of entries per provider, never
// secrets.
func (s *Secrets) LogValue() slog.Value {
	var attrs []slog.Attr
	for _, p := range schemas.GitProviders() {
		sc := s.providers[p]
		if sc == nil {
			continue
		}
		attrs = append(attrs, slog.Group(string(p),
			slog.Bool("default", sc.def != nil), slog.Int("owners", len(sc.owners)), slog.Int("repos", len(sc.repos))))
	}
	return slog.GroupValue(attrs...)
}

// File is a webhook configuration loaded from a file that can be reloaded while
// requests are verified.
type File struct {
	path      string
	lookupEnv LookupEnv
	cur       atomic.Pointer[Secrets]
}

// OpenFile loads the configuration; it fails when the file or a secret it
// references is missing or invalid. lookupEnv resolves secret_env references
// (nil: none resolve).
func OpenFile(path string, lookupEnv LookupEnv) (*File, error) {
	f := &File{path: path, lookupEnv: lookupEnv}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the configuration file's path.
func (f *File) Path() string { return f.path }

// Paths lists the configuration file and the secret files it references, for
// change detection.
func (f *File) Paths() []string { return append([]string{f.path}, f.cur.Load().Files()...) }

// Reload reads the file and its secrets again. On error the previous
// configuration stays in force.
func (f *File) Reload() error {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("read webhook config: %w", err)
	}
	s, err := ParseConfig(b, f.lookupEnv)
	if err != nil {
		return fmt.Errorf("webhook config %s: %w", f.path, err)
	}
	f.cur.Store(s)
	return nil
}

// Secrets returns the configuration in force.
func (f *File) Secrets() *Secrets { return f.cur.Load() }
