package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// writeSigningKey creates the dev cosign key pair in Config.Dir with the
// worker binary's keygen (the test module links no signer), unless it exists.
func (s *Stack) writeSigningKey(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, filepath.Join(s.cfg.BinDir, "ciss-worker"), "keygen", "-dir", s.cfg.Dir)
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=")
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("stack: ciss-worker keygen: %w", err)
	}
	s.SigningKeyFile = strings.TrimSpace(string(out))
	s.SigningPublicKeyFile = filepath.Join(s.cfg.Dir, "cosign.pub")
	return nil
}
