// Package gitsrctest is a real git smart-HTTP server for tests (git http-backend
// as CGI on loopback) and a fixture repository with a planted gosec finding.
// It is a copy of test/fixture/gitserver.go: the workers module does not
// depend on the test module.
package gitsrctest

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// GitServer is a real git smart-HTTP server on loopback: git's own
// http-backend run as CGI, with push enabled and HTTP basic auth required
// for every request, so a test proves that fetch and push really happen and
// that credentials come from the client's configuration.
type GitServer struct {
	// URL is the server's base URL; a repository NAME is at URL/NAME.git.
	URL string
	// Root holds the bare repositories.
	Root string
	// User and Password are the only accepted credentials.
	User, Password string
	srv            *httptest.Server
}

// NewGitServer starts a git server over root (created if missing).
func NewGitServer(root string) (*GitServer, error) {
	exe, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return nil, fmt.Errorf("gitserver: git --exec-path: %w", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(exe)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		return nil, fmt.Errorf("gitserver: git-http-backend: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	g := &GitServer{Root: root, User: "ciss-bot", Password: "s3cret-" + fmt.Sprint(time.Now().UnixNano())}
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + root}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u+"\x00"+p), []byte(g.User+"\x00"+g.Password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		r.Header.Set("Remote-User", u)
		h.ServeHTTP(w, r)
	}))
	g.URL = g.srv.URL
	return g, nil
}

// Close stops the server.
func (g *GitServer) Close() { g.srv.Close() }

// CredentialsFile writes a git-credential-store file for the server into dir.
func (g *GitServer) CredentialsFile(dir string) (string, error) {
	f := filepath.Join(dir, "git-credentials")
	line := strings.Replace(g.URL, "http://", "http://"+g.User+":"+g.Password+"@", 1) + "\n"
	return f, os.WriteFile(f, []byte(line), 0o600)
}

// RepoURL is the URL of repository name.
func (g *GitServer) RepoURL(name string) string { return g.URL + "/" + name + ".git" }

// SASTRepo is a repository with a commit gosec flags and a clean one.
type SASTRepo struct {
	URL string
	// Vulnerable has a hard-coded credential (gosec G101, HIGH) and a
	// GitHub token (Trivy secret github-pat, CRITICAL); Clean, its child,
	// removes both.
	Vulnerable, Clean string
}

// NewSASTRepo creates bare repository name with two commits: one with a
// hard-coded credential that gosec reports (G101) and a clean one.
func (g *GitServer) NewSASTRepo(name string) (SASTRepo, error) {
	bare := filepath.Join(g.Root, name+".git")
	work, err := os.MkdirTemp("", "ciss-sast-src-")
	if err != nil {
		return SASTRepo{}, err
	}
	defer os.RemoveAll(work)
	run := func(dir string, args ...string) (string, error) {
		cmd := exec.Command("git", append([]string{"-c", "user.name=Dev", "-c", "user.email=dev@example.com", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_AUTHOR_DATE=2026-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2026-01-02T03:04:05Z")
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("gitserver: git %v: %w: %s", args, err, stderr.String())
		}
		return strings.TrimSpace(out.String()), nil
	}
	write := func(name, body string) error { return os.WriteFile(filepath.Join(work, name), []byte(body), 0o644) }
	steps := []func() error{
		func() error { _, err := run(g.Root, "init", "-q", "--bare", bare); return err },
		func() error { _, err := run(bare, "config", "http.receivepack", "true"); return err },
		func() error { _, err := run(work, "init", "-q", "."); return err },
		func() error { return write("go.mod", "module example.com/app\n\ngo 1.22\n") },
		func() error {
			return write("main.go", "package main\n\nimport \"fmt\"\n\n// dbPassword is a planted finding (gosec G101).\nconst dbPassword = \"f62e5bcda4fae4f82370da0c6f20697b8f8447ef\"\n\nfunc main() { fmt.Println(len(dbPassword)) }\n")
		},
		// A GitHub token shape Trivy's secret scanner reports (github-pat,
		// CRITICAL); built here so this source file holds no such literal.
		func() error {
			return write("token.go", "package main\n\n// botToken is a planted secret (Trivy github-pat).\nvar botToken = \"ghp_"+"Zx9q7Lm2Pw4Rt6Yv8Bn1Cd3Ef5Gh7Jk9Mn0Q\"\n")
		},
		func() error { _, err := run(work, "add", "."); return err },
		func() error {
			_, err := run(work, "commit", "-q", "-m", "app with a hard-coded credential")
			return err
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return SASTRepo{}, err
		}
	}
	r := SASTRepo{URL: g.RepoURL(name)}
	if r.Vulnerable, err = run(work, "rev-parse", "HEAD"); err != nil {
		return SASTRepo{}, err
	}
	if err := write("main.go", "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() { fmt.Println(len(os.Getenv(\"DB_PASSWORD\"))) }\n"); err != nil {
		return SASTRepo{}, err
	}
	if _, err := run(work, "rm", "-q", "token.go"); err != nil {
		return SASTRepo{}, err
	}
	if _, err := run(work, "commit", "-q", "-am", "read the credential from the environment"); err != nil {
		return SASTRepo{}, err
	}
	if r.Clean, err = run(work, "rev-parse", "HEAD"); err != nil {
		return SASTRepo{}, err
	}
	if _, err := run(work, "push", "-q", bare, "main"); err != nil {
		return SASTRepo{}, err
	}
	return r, nil
}
