package dispatcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"sigs.k8s.io/yaml"

	"ciss.dev/dispatcher/internal/route"
	"ciss.dev/schemas"
)

// loadRouting reads and validates the routing file (and, with a catalog
// directory configured, checks every tool against the catalog's manifests).
// It always returns the audit record of the attempt.
func loadRouting(cfg Config) (*route.Table, schemas.RoutingAudit, error) {
	audit := schemas.RoutingAudit{File: cfg.RoutingFile, Owner: fileOwner(cfg.RoutingFile), At: time.Now().UTC()}
	b, err := os.ReadFile(cfg.RoutingFile)
	if err != nil {
		err = fmt.Errorf("routing: %w", err)
		audit.Error = err.Error()
		return nil, audit, err
	}
	sum := sha256.Sum256(b)
	audit.Digest = "sha256:" + hex.EncodeToString(sum[:])
	tab, err := route.Parse(b)
	if err == nil && cfg.CatalogDir != "" {
		err = checkCatalog(tab, cfg.CatalogDir)
	}
	if err != nil {
		audit.Error = truncate(err.Error(), 2000)
		return nil, audit, err
	}
	audit.Accepted, audit.Trials = true, tab.Trials()
	return tab, audit, nil
}

// builtinVaultTool is the name the workers register their protected-action tool
// under (workers.VaultToolName; the dispatcher does not link the workers).
const builtinVaultTool = "vault"

// catalogManifest is the part of a CISS tool manifest (deploy/tekton/*.tool.yaml)
// the dispatcher reads: it knows tools by name only, never runs them.
type catalogManifest struct {
	Kind     string   `json:"kind"`
	Name     string   `json:"name"`
	JobTypes []string `json:"jobTypes"`
}

// checkCatalog refuses routing that names a tool the catalog has no manifest
// for, or a job type the manifest does not serve.
func checkCatalog(tab *route.Table, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.tool.yaml"))
	if err != nil {
		return fmt.Errorf("routing: catalog %s: %w", dir, err)
	}
	// The protected-action tool is built into the workers (ciss-worker
	// -vault-addr), not a Tekton Task: it serves exactly the vault-* job types.
	cat := map[string][]string{builtinVaultTool: schemas.VaultActionTypes()}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("routing: catalog: %w", err)
		}
		var m catalogManifest
		if err := yaml.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("routing: catalog %s: %w", filepath.Base(f), err)
		}
		if m.Kind == "Tool" {
			cat[m.Name] = m.JobTypes
		}
	}
	for _, name := range slices.Sorted(maps.Keys(tab.Tools())) {
		served, ok := cat[name]
		if !ok {
			return fmt.Errorf("routing: tool %q has no manifest in the catalog %s", name, dir)
		}
		for _, jt := range tab.Tools()[name] {
			if !slices.Contains(served, jt) {
				return fmt.Errorf("routing: tool %q: the catalog manifest does not serve %q", name, jt)
			}
		}
	}
	return nil
}

// fileOwner names who owns path: "uid N (name)".
func fileOwner(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "unknown"
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "unknown"
	}
	uid := strconv.FormatUint(uint64(st.Uid), 10)
	if u, err := user.LookupId(uid); err == nil {
		return "uid " + uid + " (" + u.Username + ")"
	}
	return "uid " + uid
}

// auditRouting records a routing change in the audit stream. Failing to
// record is logged, never blocks the change.
func (d *Dispatcher) auditRouting(ctx context.Context, a schemas.RoutingAudit) {
	if d.js == nil || a.File == "" {
		return
	}
	b, err := schemas.Marshal(schemas.TypeRoutingAudited, d.cfg.Source, a.Digest, a)
	if err == nil {
		_, err = d.js.Publish(ctx, schemas.SubjectAuditRouting(a.Accepted), b, jetstream.WithMsgID("routing."+a.Digest+"."+a.At.Format(time.RFC3339Nano)))
	}
	if err != nil {
		d.log.Error("routing audit record not stored", "err", err)
	}
}
