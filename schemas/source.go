package schemas

import (
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"
)

// commitRE is a full SHA-1 commit id, lower case as git prints it. Short or
// symbolic names (branches, HEAD~1) are refused: a job is about exact bytes.
var commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// ValidCommit reports whether s is a full 40-hex lower-case commit SHA.
func ValidCommit(s string) bool { return commitRE.MatchString(s) }

// RepoSchemes are the URL schemes a sast target may use. Workers fetch only
// the subset their configuration allows (https by default).
var RepoSchemes = []string{"https", "http", "file"}

// CheckRepoURL checks a sast repository URL and returns why it is refused,
// or "". It must be an absolute https, http or file URL with a path, at most
// MaxRepoURLLen bytes, valid UTF-8 without control or format characters,
// without user info (credentials come from the worker's configuration, never
// from a requester), query or fragment, and must not start a git option or
// name a transport helper ("ext::", "fd::").
func CheckRepoURL(s string) string {
	switch {
	case len(s) > MaxRepoURLLen:
		return "is longer than 512 characters"
	case !utf8.ValidString(s) || strings.ContainsFunc(s, unsafeRune) || strings.ContainsAny(s, " \\"):
		return "contains invalid UTF-8, whitespace, backslash, control or format characters"
	case strings.HasPrefix(s, "-") || strings.Contains(s, "::"):
		return "must be a plain https://, http:// or file:// URL"
	}
	u, err := url.Parse(s)
	if err != nil {
		return "is not a URL"
	}
	switch {
	case !strings.HasPrefix(s, u.Scheme+"://") || u.Scheme != "https" && u.Scheme != "http" && u.Scheme != "file":
		return "must be a lower-case https://, http:// or file:// URL"
	case u.User != nil || strings.Contains(s, "@"):
		return "must not carry credentials (user info); workers use their own git credentials"
	case u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(s, "?#"):
		return "must not have a query or fragment"
	case u.Opaque != "":
		return "must be an absolute URL (scheme://host/path)"
	case u.Scheme != "file" && u.Host == "":
		return "needs a host"
	case u.Scheme == "file" && u.Host != "":
		return "file URLs must be file:///absolute/path"
	case u.Path == "" || u.Path == "/":
		return "needs a repository path"
	case strings.Contains(u.Path, "/../") || strings.HasSuffix(u.Path, "/.."):
		return "must not contain .. path segments"
	}
	return ""
}
