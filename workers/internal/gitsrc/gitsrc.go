// Package gitsrc fetches a repository at one exact commit and pushes SSH-signed
// annotated tags to it, with the git CLI.
//
// The git CLI, not a Go git library, because (1) signed tags must verify with
// plain `git verify-tag`: letting git itself build and sign the tag object
// (gpg.format=ssh, which runs `ssh-keygen -Y sign` in namespace "git") means
// the bytes signed are exactly the bytes git later verifies, with no second
// implementation of the tag encoding to drift; (2) go-git signs only with
// OpenPGP, and building the object by hand with an sshsig library would add a
// dependency for what two git commands do; (3) fetch and push over the smart
// HTTP protocol behave exactly as the operator's git does (credential
// helpers, proxies, protocol v2). The cost is that workers need git and
// ssh-keygen on PATH (both are in every git installation).
//
// Everything a requester controls (the URL, the commit) is validated before it
// reaches git and passed as a separate argument, never through a shell. Git
// runs with no system or global configuration, no terminal prompts, only the
// allowed transports (GIT_ALLOW_PROTOCOL) and symlinks checked out as plain
// files, so a hostile repository cannot point the scanners outside its tree.
package gitsrc

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"ciss.dev/schemas"
)

// Config configures git access. Credentials come only from here (or the
// environment the worker runs in), never from a job.
type Config struct {
	// Git is the git binary; default "git" on PATH.
	Git string
	// AllowSchemes are the URL schemes fetched and pushed to (https, http,
	// file); default https only.
	AllowSchemes []string
	// CredentialsFile is a git-credential-store file
	// (https://user:token@host per line) used for fetch and push.
	CredentialsFile string
	// SigningKey is the SSH private key that signs tags (gpg.format=ssh).
	SigningKey string
	// TagPrefix is prepended to the short commit; default "ciss/sast/".
	TagPrefix string
	// TaggerName and TaggerEmail identify the tagger; defaults "CISS" and
	// "ciss@localhost". The email is what allowed-signers files name.
	TaggerName, TaggerEmail string
}

// Errors callers tell apart.
var (
	// ErrRefused means the request is not allowed (scheme, URL, commit).
	ErrRefused = errors.New("git: refused")
	// ErrNotFound means the commit is not in the repository.
	ErrNotFound = errors.New("git: commit not found")
	// ErrTagConflict means the tag exists and does not vouch for this
	// commit and report; it is never overwritten.
	ErrTagConflict = errors.New("git: tag exists with different content")
)

// Client runs git.
type Client struct {
	cfg     Config
	home    string
	allowed string // allowed-signers file with our own key
}

// New checks cfg and returns a client. home is an empty directory git may
// use as HOME (it holds nothing but what git writes there).
func New(cfg Config, home string) (*Client, error) {
	cfg.Git = cmp.Or(cfg.Git, "git")
	cfg.TagPrefix = cmp.Or(cfg.TagPrefix, "ciss/sast/")
	cfg.TaggerName = cmp.Or(cfg.TaggerName, "CISS")
	cfg.TaggerEmail = cmp.Or(cfg.TaggerEmail, "ciss@localhost")
	if len(cfg.AllowSchemes) == 0 {
		cfg.AllowSchemes = []string{"https"}
	}
	for _, s := range cfg.AllowSchemes {
		if !slices.Contains(schemas.RepoSchemes, s) {
			return nil, fmt.Errorf("gitsrc: scheme %q: want https, http or file", s)
		}
	}
	if strings.ContainsAny(cfg.TagPrefix, " ~^:?*[\\\x00\n") || strings.Contains(cfg.TagPrefix, "..") || strings.HasPrefix(cfg.TagPrefix, "-") {
		return nil, fmt.Errorf("gitsrc: tag prefix %q is not a valid ref prefix", cfg.TagPrefix)
	}
	if _, err := exec.LookPath(cfg.Git); err != nil {
		return nil, fmt.Errorf("gitsrc: %w", err)
	}
	c := &Client{cfg: cfg, home: home}
	if cfg.SigningKey != "" {
		// Our own public key as an allowed-signers file: a tag found in
		// the repository counts as ours only if it verifies with it.
		pub, err := exec.Command("ssh-keygen", "-y", "-f", cfg.SigningKey).Output()
		if err != nil {
			return nil, fmt.Errorf("gitsrc: signing key %s: %w", cfg.SigningKey, err)
		}
		c.allowed = filepath.Join(home, "ciss-allowed-signers")
		line := fmt.Sprintf("%s namespaces=\"git\" %s\n", cfg.TaggerEmail, strings.TrimSpace(string(pub)))
		if err := os.WriteFile(c.allowed, []byte(line), 0o600); err != nil {
			return nil, fmt.Errorf("gitsrc: %w", err)
		}
	}
	return c, nil
}

// CheckURL validates a repository URL against schemas.CheckRepoURL and the
// allowed schemes.
func (c *Client) CheckURL(repo string) error {
	if reason := schemas.CheckRepoURL(repo); reason != "" {
		return fmt.Errorf("%w: repo %s", ErrRefused, reason)
	}
	u, _ := url.Parse(repo)
	if !slices.Contains(c.cfg.AllowSchemes, u.Scheme) {
		return fmt.Errorf("%w: repo scheme %s is not allowed by this worker (allowed: %s)", ErrRefused, u.Scheme, strings.Join(c.cfg.AllowSchemes, ", "))
	}
	return nil
}

// git runs git in dir with a locked-down environment and returns stdout.
func (c *Client) git(ctx context.Context, dir string, args ...string) ([]byte, error) {
	base := []string{"-c", "core.symlinks=false", "-c", "core.hooksPath=/dev/null", "-c", "protocol.version=2",
		"-c", "credential.helper=", "-c", "advice.detachedHead=false", "-c", "init.defaultBranch=main"}
	if c.cfg.CredentialsFile != "" {
		base = append(base, "-c", "credential.helper=store --file="+c.cfg.CredentialsFile)
	}
	cmd := exec.CommandContext(ctx, c.cfg.Git, append(base, args...)...)
	cmd.Dir = dir
	cmd.Env = []string{
		"HOME=" + c.home, "PATH=" + os.Getenv("PATH"), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_ALLOW_PROTOCOL=" + strings.Join(c.cfg.AllowSchemes, ":"), "LC_ALL=C",
		"GIT_ASKPASS=/bin/false", "SSH_ASKPASS=/bin/false",
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[:2000]
		}
		return stdout.Bytes(), fmt.Errorf("git %s: %w: %s", args[0], err, msg)
	}
	return stdout.Bytes(), nil
}

// Fetch puts the tree of commit in repo into dir (created empty), as a
// repository whose HEAD is that commit, detached. It fetches just that
// commit (protocol v2 allows any reachable object), shallow.
func (c *Client) Fetch(ctx context.Context, repo, commit, dir string) error {
	if err := c.CheckURL(repo); err != nil {
		return err
	}
	if !schemas.ValidCommit(commit) {
		return fmt.Errorf("%w: commit %q is not a full SHA", ErrRefused, commit)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if _, err := c.git(ctx, dir, "init", "-q", "."); err != nil {
		return err
	}
	if _, err := c.git(ctx, dir, "remote", "add", "origin", repo); err != nil {
		return err
	}
	if _, err := c.git(ctx, dir, "fetch", "-q", "--no-tags", "--depth=1", "origin", commit); err != nil {
		if strings.Contains(err.Error(), "not our ref") || strings.Contains(err.Error(), "couldn't find remote ref") ||
			strings.Contains(err.Error(), "unadvertised object") {
			return fmt.Errorf("%w: %s in %s: %w", ErrNotFound, commit, repo, err)
		}
		return err
	}
	if _, err := c.git(ctx, dir, "checkout", "-q", "--detach", commit); err != nil {
		return err
	}
	head, err := c.git(ctx, dir, "rev-parse", "HEAD")
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(string(head)); got != commit {
		return fmt.Errorf("gitsrc: checked out %s, want %s", got, commit)
	}
	return nil
}

// TagName is the tag for commit: the prefix and the first 12 hex digits.
func (c *Client) TagName(commit string) string { return c.cfg.TagPrefix + commit[:12] }

// Tag is a pushed (or found) signed tag.
type Tag struct {
	Name, Object, Commit string
	// Existing is true when the tag was already in the repository with the
	// same commit and message.
	Existing bool
}

// TagAndPush signs an annotated tag of commit with message in the checkout
// dir (made by Fetch) and pushes it to origin, never forcing. When the tag
// already exists remotely pointing at commit and its message contains the
// line same (the report digest) it is left alone (Existing); if it points
// elsewhere or lacks that line, ErrTagConflict.
func (c *Client) TagAndPush(ctx context.Context, dir, commit, message, same string) (Tag, error) {
	if c.cfg.SigningKey == "" {
		return Tag{}, errors.New("gitsrc: no signing key configured")
	}
	name := c.TagName(commit)
	ref := "refs/tags/" + name
	if t, ok, err := c.remoteTag(ctx, dir, ref, commit, same); err != nil || ok {
		return t, err
	}
	signing := []string{"-c", "gpg.format=ssh", "-c", "user.signingkey=" + c.cfg.SigningKey,
		"-c", "user.name=" + c.cfg.TaggerName, "-c", "user.email=" + c.cfg.TaggerEmail}
	if _, err := c.git(ctx, dir, append(signing, "tag", "-s", "-m", message, "--", name, commit)...); err != nil {
		return Tag{}, err
	}
	obj, err := c.git(ctx, dir, "rev-parse", ref)
	if err != nil {
		return Tag{}, err
	}
	if _, err := c.git(ctx, dir, "push", "-q", "--no-verify", "origin", ref+":"+ref); err != nil {
		// Someone (an earlier attempt of this job) may have pushed first.
		if t, ok, err2 := c.remoteTag(ctx, dir, ref, commit, same); err2 == nil && ok {
			return t, nil
		} else if errors.Is(err2, ErrTagConflict) {
			return Tag{}, err2
		}
		return Tag{}, err
	}
	return Tag{Name: name, Object: strings.TrimSpace(string(obj)), Commit: commit}, nil
}

// remoteTag looks ref up in origin; ok is true when it exists and vouches for
// the same commit with a message holding the line same.
func (c *Client) remoteTag(ctx context.Context, dir, ref, commit, same string) (Tag, bool, error) {
	out, err := c.git(ctx, dir, "ls-remote", "origin", ref)
	if err != nil {
		return Tag{}, false, err
	}
	if len(bytes.TrimSpace(out)) == 0 {
		return Tag{}, false, nil
	}
	if _, err := c.git(ctx, dir, "fetch", "-q", "--no-tags", "origin", "+"+ref+":refs/ciss/existing"); err != nil {
		return Tag{}, false, err
	}
	obj, err := c.git(ctx, dir, "rev-parse", "refs/ciss/existing")
	if err != nil {
		return Tag{}, false, err
	}
	typ, _ := c.git(ctx, dir, "cat-file", "-t", "refs/ciss/existing")
	if strings.TrimSpace(string(typ)) != "tag" {
		return Tag{}, false, fmt.Errorf("%w: %s is not an annotated tag", ErrTagConflict, ref)
	}
	target, err := c.git(ctx, dir, "rev-parse", "refs/ciss/existing^{commit}")
	if err != nil {
		return Tag{}, false, err
	}
	if got := strings.TrimSpace(string(target)); got != commit {
		return Tag{}, false, fmt.Errorf("%w: %s points at %s, not %s; it is not replaced", ErrTagConflict, ref, got, commit)
	}
	body, err := c.git(ctx, dir, "cat-file", "tag", "refs/ciss/existing")
	if err != nil {
		return Tag{}, false, err
	}
	if !slices.Contains(strings.Split(tagMessage(body), "\n"), strings.TrimSpace(same)) {
		return Tag{}, false, fmt.Errorf("%w: %s carries a different message (another report); it is not replaced", ErrTagConflict, ref)
	}
	if _, err := c.git(ctx, dir, "-c", "gpg.ssh.allowedSignersFile="+c.allowed, "verify-tag", "refs/ciss/existing"); err != nil {
		return Tag{}, false, fmt.Errorf("%w: %s is not signed by this worker's key; it is not replaced: %w", ErrTagConflict, ref, err)
	}
	return Tag{Name: strings.TrimPrefix(ref, "refs/tags/"), Object: strings.TrimSpace(string(obj)), Commit: commit, Existing: true}, true, nil
}

// tagMessage is a tag object's message without its signature.
func tagMessage(obj []byte) string {
	_, msg, _ := strings.Cut(string(obj), "\n\n")
	if i := strings.Index(msg, "-----BEGIN SSH SIGNATURE-----"); i >= 0 {
		msg = msg[:i]
	}
	return strings.TrimSpace(msg)
}

// KeyFingerprint returns the SHA256 fingerprint of an SSH public key file
// (ssh-keygen -lf).
func KeyFingerprint(ctx context.Context, pub string) (string, error) {
	out, err := exec.CommandContext(ctx, "ssh-keygen", "-l", "-E", "sha256", "-f", pub).Output()
	if err != nil {
		return "", fmt.Errorf("ssh-keygen -l %s: %w", pub, err)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		return "", fmt.Errorf("ssh-keygen -l %s: unexpected output %q", pub, out)
	}
	return f[1], nil
}

// GenerateKey writes an ed25519 SSH key pair (path, path.pub) unless path
// exists, and an allowed-signers file (allowed) naming email for namespace
// git. `make run` uses it for the dev tag-signing key.
func GenerateKey(ctx context.Context, path, allowed, email string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", email, "-f", path).CombinedOutput(); err != nil {
			return fmt.Errorf("ssh-keygen: %w: %s", err, out)
		}
	} else if err != nil {
		return err
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		return err
	}
	f := strings.Fields(string(pub))
	if len(f) < 2 {
		return fmt.Errorf("%s.pub: not an SSH public key", path)
	}
	line := fmt.Sprintf("%s namespaces=\"git\" %s %s\n", email, f[0], f[1])
	return os.WriteFile(allowed, []byte(line), 0o644)
}
