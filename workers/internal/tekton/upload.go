package tekton

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// Uploads receives the report files of cluster runs over HTTP. Each run gets
// its own id and a random bearer token; only the report paths its manifest
// names are accepted, each at most MaxBytes, and only while the run is
// registered. Everything else is refused: unknown run or wrong token 401,
// another path 403, too large 413.
//
//	POST /v1/runs/{id}/reports/{path...}   Authorization: Bearer TOKEN
type Uploads struct {
	// MaxBytes bounds one report file; default 64 MiB.
	MaxBytes int64

	mu   sync.Mutex
	runs map[string]*uploadRun
}

type uploadRun struct {
	token [32]byte
	dir   string
	paths map[string]bool
}

// reportPathRE is what a report path may look like to be uploaded: it ends up
// in a shell script and a URL, so no quoting is ever needed.
var reportPathRE = regexp.MustCompile(`^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$`)

// ErrReportPath means a report path cannot be uploaded safely.
var ErrReportPath = errors.New("report path must be relative and use only letters, digits, '.', '_', '-' and '/'")

func checkReportPath(p string) error {
	if !reportPathRE.MatchString(p) || filepath.Clean(p) != p || strings.HasPrefix(p, "..") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
		return fmt.Errorf("%w: %q", ErrReportPath, p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == "." || part == ".." {
			return fmt.Errorf("%w: %q", ErrReportPath, p)
		}
	}
	return nil
}

// register accepts uploads of paths into dir until the returned func is
// called. It returns the run's id and token.
func (u *Uploads) register(dir string, paths []string) (id, token string, done func(), err error) {
	r := &uploadRun{dir: dir, paths: map[string]bool{}}
	for _, p := range paths {
		if err := checkReportPath(p); err != nil {
			return "", "", nil, err
		}
		r.paths[p] = true
	}
	var idb [16]byte
	_, _ = rand.Read(idb[:])
	_, _ = rand.Read(r.token[:])
	id = hex.EncodeToString(idb[:])
	u.mu.Lock()
	if u.runs == nil {
		u.runs = map[string]*uploadRun{}
	}
	u.runs[id] = r
	u.mu.Unlock()
	return id, hex.EncodeToString(r.token[:]), func() {
		u.mu.Lock()
		delete(u.runs, id)
		u.mu.Unlock()
	}, nil
}

// ServeHTTP stores one uploaded report.
func (u *Uploads) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rest, ok := strings.CutPrefix(req.URL.Path, "/v1/runs/")
	id, p, ok2 := strings.Cut(rest, "/reports/")
	if !ok || !ok2 {
		http.NotFound(w, req)
		return
	}
	if req.Method != http.MethodPost && req.Method != http.MethodPut {
		w.Header().Set("Allow", "POST, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	u.mu.Lock()
	r := u.runs[id]
	u.mu.Unlock()
	tok, _ := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	got, err := hex.DecodeString(tok)
	if r == nil || err != nil || subtle.ConstantTimeCompare(got, r.token[:]) != 1 {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if !r.paths[p] {
		http.Error(w, "not a report path of this run", http.StatusForbidden)
		return
	}
	limit := u.MaxBytes
	if limit <= 0 {
		limit = 64 << 20
	}
	dst := filepath.Join(r.dir, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		http.Error(w, "cannot store", http.StatusInternalServerError)
		return
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".upload-*")
	if err != nil {
		http.Error(w, "cannot store", http.StatusInternalServerError)
		return
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, http.MaxBytesReader(w, req.Body, limit))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		http.Error(w, fmt.Sprintf("report over %d bytes", limit), http.StatusRequestEntityTooLarge)
		return
	case err != nil:
		http.Error(w, "upload failed", http.StatusBadRequest)
		return
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		http.Error(w, "cannot store", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
