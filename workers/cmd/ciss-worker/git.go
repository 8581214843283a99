package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"ciss.dev/workers"
)

// gitOpts are the sast flags.
type gitOpts struct {
	schemes, credentials, signingKey, tagPrefix, taggerEmail string
}

func gitFlags(fs *flag.FlagSet) *gitOpts {
	o := &gitOpts{}
	fs.StringVar(&o.schemes, "git-allow-schemes", os.Getenv("CISS_GIT_ALLOW_SCHEMES"), "comma-separated repository URL schemes sast jobs may fetch: https, http, file; empty disables sast [CISS_GIT_ALLOW_SCHEMES]")
	fs.StringVar(&o.credentials, "git-credentials", os.Getenv("CISS_GIT_CREDENTIALS"), "git-credential-store file (https://user:token@host lines) for fetching repositories and pushing tags [CISS_GIT_CREDENTIALS]")
	fs.StringVar(&o.signingKey, "git-signing-key", os.Getenv("CISS_GIT_SIGNING_KEY"), "SSH private key signing the tags of commits that pass the policy (git gpg.format=ssh); empty: no tags [CISS_GIT_SIGNING_KEY]")
	fs.StringVar(&o.tagPrefix, "git-tag-prefix", envOr("CISS_GIT_TAG_PREFIX", "ciss/sast/"), "prefix of sast tags, followed by the 12-digit commit [CISS_GIT_TAG_PREFIX]")
	fs.StringVar(&o.taggerEmail, "git-tagger-email", envOr("CISS_GIT_TAGGER_EMAIL", "ciss@localhost"), "tagger email, the principal in allowed-signers files [CISS_GIT_TAGGER_EMAIL]")
	return o
}

// config returns the sast configuration, nil when sast is off.
func (o *gitOpts) config(policyFile string) (*workers.GitConfig, error) {
	if o.schemes == "" {
		if o.signingKey != "" || o.credentials != "" {
			return nil, fmt.Errorf("-git-signing-key and -git-credentials need -git-allow-schemes")
		}
		return nil, nil
	}
	g := &workers.GitConfig{CredentialsFile: o.credentials, SigningKey: o.signingKey, TagPrefix: o.tagPrefix, TaggerEmail: o.taggerEmail}
	for _, s := range strings.Split(o.schemes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			g.AllowSchemes = append(g.AllowSchemes, s)
		}
	}
	if policyFile != "" {
		p, err := workers.LoadPolicy(policyFile)
		if err != nil {
			return nil, err
		}
		g.Policy = p
	}
	return g, nil
}

// sastDefaults maps the gosec step image to a local gosec (flag, else PATH)
// and gives the sast Task a GOCACHE under the user's cache directory unless
// -workspace go-cache=DIR is set.
func sastDefaults(images, workspaces map[string]string, gosec string) error {
	if _, set := images["securego/gosec:*"]; !set {
		if gosec == "" {
			gosec, _ = exec.LookPath("gosec")
		}
		if gosec != "" {
			images["securego/gosec:*"] = gosec
		}
	}
	if _, set := workspaces["go-cache"]; !set {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir := filepath.Join(base, "ciss-worker", "go-build")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("go-cache workspace: %w", err)
		}
		workspaces["go-cache"] = dir
	}
	return nil
}
