package stack

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// GitHubPush returns a GitHub push event payload in GitHub's documented shape
// (trimmed: one commit, the repository's essential fields) for a push of
// commit to ref of repo ("owner/name").
func GitHubPush(repo, ref, commit string) []byte {
	owner, name, _ := strings.Cut(repo, "/")
	url := "https://github.com/" + repo
	author := map[string]any{"name": "Mona Lisa Octocat", "email": "octocat@users.noreply.github.com", "username": "octocat"}
	head := map[string]any{
		"id": commit, "tree_id": strings.Repeat("f", 40), "distinct": true, "message": "Update dependencies",
		"timestamp": "2025-01-14T17:20:11+01:00", "url": url + "/commit/" + commit,
		"author": author, "committer": author, "added": []string{}, "removed": []string{}, "modified": []string{"go.mod", "go.sum"},
	}
	b, _ := json.Marshal(map[string]any{ // a map of plain values always encodes
		"ref": ref, "before": strings.Repeat("0", 39) + "1", "after": commit,
		"repository": map[string]any{
			"id": 186853002, "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=", "name": name, "full_name": repo, "private": true,
			"owner":    map[string]any{"name": owner, "login": owner, "id": 21031067, "type": "Organization", "html_url": "https://github.com/" + owner},
			"html_url": url, "url": "https://api.github.com/repos/" + repo, "created_at": 1558015221, "pushed_at": 1736870412,
			"clone_url": url + ".git", "default_branch": "main", "master_branch": "main", "visibility": "private",
		},
		"pusher":       map[string]any{"name": "octocat", "email": "octocat@users.noreply.github.com"},
		"organization": map[string]any{"login": owner, "id": 21031067, "url": "https://api.github.com/orgs/" + owner},
		"sender":       map[string]any{"login": "octocat", "id": 583231, "type": "User", "site_admin": false},
		"created":      false, "deleted": false, "forced": false, "base_ref": nil,
		"compare":     url + "/compare/" + strings.Repeat("0", 11) + "1..." + commit[:12],
		"commits":     []any{head},
		"head_commit": head,
	})
	return b
}

// GitLabPush returns a GitLab Push Hook payload in GitLab's documented shape
// (trimmed to one commit) for a push of commit to ref of project
// ("group/name") on gitlab.example.com.
func GitLabPush(project, ref, commit string) []byte {
	web := "https://gitlab.example.com/" + project
	_, name, _ := strings.Cut(project, "/")
	b, _ := json.Marshal(map[string]any{ // a map of plain values always encodes
		"object_kind": "push", "event_name": "push", "before": strings.Repeat("0", 39) + "1", "after": commit,
		"ref": ref, "ref_protected": true, "checkout_sha": commit, "message": nil,
		"user_id": 4, "user_name": "John Smith", "user_username": "jsmith", "user_email": "",
		"project_id": 15,
		"project": map[string]any{
			"id": 15, "name": name, "web_url": web, "git_http_url": web + ".git", "namespace": "dev",
			"visibility_level": 0, "path_with_namespace": project, "default_branch": "main", "homepage": web,
		},
		"commits": []any{map[string]any{
			"id": commit, "message": "Update dependencies", "title": "Update dependencies", "timestamp": "2025-01-14T15:57:21+02:00",
			"url": web + "/-/commit/" + commit, "author": map[string]any{"name": "John Smith", "email": "jsmith@example.com"},
			"added": []string{}, "modified": []string{"go.mod"}, "removed": []string{},
		}},
		"total_commits_count": 1, "push_options": map[string]any{},
		"repository": map[string]any{"name": name, "url": web + ".git", "homepage": web, "visibility_level": 0},
	})
	return b
}

// SignGitHub is the X-Hub-Signature-256 value GitHub sends for body.
func SignGitHub(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// WebhookClient is an HTTPS client as a git host is one: it trusts the dev CA
// and has no client certificate.
func (s *Stack) WebhookClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.PKI.CA.CertPEM())
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64,
	}}
}
