package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"ciss.dev/test/fixture"
)

// Files of the sast setup inside Config.Dir.
const (
	// GitSigningKeyFile is the dev SSH key that signs sast tags (and .pub).
	GitSigningKeyFile = "git-signing-key"
	// AllowedSignersFile is the ssh allowed-signers file naming it, what
	// `git -c gpg.ssh.allowedSignersFile=F verify-tag` takes; the gateway
	// publishes it at GET /v1/keys.
	AllowedSignersFile = "allowed_signers"
	// GitTaggerEmail is the dev tagger, the principal in AllowedSignersFile.
	GitTaggerEmail     = "ciss@localhost"
	gitCredentialsFile = "git-credentials"
)

// setupSAST starts the loopback git server with the demo sast repository,
// writes the worker's git credentials and the dev tag-signing key (created
// once, like the dev CA) with its allowed-signers file.
func (s *Stack) setupSAST(ctx context.Context) error {
	key := filepath.Join(s.cfg.Dir, GitSigningKeyFile)
	if _, err := os.Stat(key); errors.Is(err, os.ErrNotExist) {
		if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", GitTaggerEmail, "-f", key).CombinedOutput(); err != nil {
			return fmt.Errorf("stack: ssh-keygen: %w: %s", err, out)
		}
	} else if err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	f := strings.Fields(string(pub))
	if len(f) < 2 {
		return fmt.Errorf("stack: %s.pub is not an SSH public key", key)
	}
	s.GitSigningKeyFile = key
	s.AllowedSignersFile = filepath.Join(s.cfg.Dir, AllowedSignersFile)
	if err := os.WriteFile(s.AllowedSignersFile, []byte(fmt.Sprintf("%s namespaces=\"git\" %s %s\n", GitTaggerEmail, f[0], f[1])), 0o644); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	root := filepath.Join(s.cfg.Dir, "git")
	if err := os.RemoveAll(root); err != nil { // fresh repositories: tags of earlier runs would point at old commits
		return fmt.Errorf("stack: %w", err)
	}
	if s.Git, err = fixture.NewGitServer(root); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	if s.SASTRepo, err = s.Git.NewSASTRepo("demo"); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	s.gitCredentials, err = s.Git.CredentialsFile(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	return os.WriteFile(filepath.Join(s.cfg.Dir, "sast-repo"), []byte(fmt.Sprintf("%s %s %s\n", s.SASTRepo.URL, s.SASTRepo.Clean, s.SASTRepo.Vulnerable)), 0o644)
}

// sastArgs are the worker's and gateway's sast flags.
func (s *Stack) sastArgs(c string) []string {
	switch c {
	case Gateway:
		return []string{"-allowed-signers", s.AllowedSignersFile}
	case Worker:
		a := []string{"-git-allow-schemes", "http", "-git-credentials", s.gitCredentials,
			"-git-signing-key", s.GitSigningKeyFile, "-git-tagger-email", GitTaggerEmail}
		if s.cfg.Gosec != "" {
			a = append(a, "-gosec", s.cfg.Gosec)
		}
		if out, err := exec.Command("go", "env", "GOCACHE").Output(); err == nil && strings.TrimSpace(string(out)) != "" {
			// The Go build cache of this machine, warm: gosec type-checks
			// against it instead of compiling the standard library per run.
			a = append(a, "-workspace", "go-cache="+strings.TrimSpace(string(out)))
		}
		return a
	}
	return nil
}
