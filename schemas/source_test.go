package schemas

import (
	"strings"
	"testing"
)

var sampleCommits = []string{strings.Repeat("ab", 20), strings.Repeat("0", 40), strings.Repeat("AB", 20), strings.Repeat("a", 39),
	strings.Repeat("a", 41), "HEAD", "main", strings.Repeat("a", 39) + "\n", strings.Repeat("g", 40), ""}

var sampleRepoURLs = []string{"https://git.example.com/acme/app.git", "http://127.0.0.1:8080/repo.git", "file:///srv/git/app.git",
	"https://user:pw@git.example.com/acme/app.git", "https://tok@git.example.com/a.git", "ssh://git@host/a.git", "git@host:a.git",
	"ext::sh -c touch% /tmp/pwned", "--upload-pack=touch /tmp/x", "https://host/a.git?x=1", "https://host/a.git#frag",
	"https://host", "https://host/", "file://host/srv/a.git", "file:relative", "https://host/a/../../etc", "https://host/a\n.git",
	"https://host/a\u202e.git", "https://host/a b.git", "https:///a.git", "fd::3", "HTTPS://host/a.git", ""}

func TestCheckRepoURL(t *testing.T) {
	t.Parallel()
	ok := map[string]bool{"https://git.example.com/acme/app.git": true, "http://127.0.0.1:8080/repo.git": true, "file:///srv/git/app.git": true}
	for _, u := range sampleRepoURLs {
		if got := CheckRepoURL(u) == ""; got != ok[u] {
			t.Errorf("CheckRepoURL(%q) accepts=%v, want %v (%s)", u, got, ok[u], CheckRepoURL(u))
		}
	}
}

func TestValidateSAST(t *testing.T) {
	t.Parallel()
	sha := strings.Repeat("ab", 20)
	for _, tc := range []struct {
		name    string
		req     JobRequest
		wantErr string
	}{
		{"ok", JobRequest{Type: JobTypeSAST, Target: Target{Repo: "https://git.example.com/a.git", Commit: sha}}, ""},
		{"no repo", JobRequest{Type: JobTypeSAST, Target: Target{Commit: sha}}, "target.repo: is required"},
		{"short sha", JobRequest{Type: JobTypeSAST, Target: Target{Repo: "https://h/a.git", Commit: sha[:12]}}, "target.commit"},
		{"credentials", JobRequest{Type: JobTypeSAST, Target: Target{Repo: "https://u:p@h/a.git", Commit: sha}}, "credentials"},
		{"image too", JobRequest{Type: JobTypeSAST, Target: Target{Image: "r.example.com/a:1", Repo: "https://h/a.git", Commit: sha}}, "target.image"},
		{"repo on image-scan", JobRequest{Type: JobTypeImageScan, Target: Target{Image: "r.example.com/a:1", Repo: "https://h/a.git"}}, "sast only"},
	} {
		err := tc.req.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

func FuzzCheckRepoURL(f *testing.F) {
	for _, u := range sampleRepoURLs {
		f.Add(u)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckRepoURL(s) != "" {
			return
		}
		if strings.Contains(s, "@") || strings.ContainsAny(s, "?#\n\r\t ") || strings.HasPrefix(s, "-") || strings.Contains(s, "::") {
			t.Fatalf("accepted hostile URL %q", s)
		}
		if !strings.HasPrefix(s, "https://") && !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "file:///") {
			t.Fatalf("accepted scheme of %q", s)
		}
	})
}
