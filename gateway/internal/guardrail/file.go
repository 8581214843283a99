package guardrail

import (
	"sync/atomic"

	"ciss.dev/schemas"
)

// File is a guardrail document loaded from a file that can be reloaded while
// requests are being evaluated.
type File struct {
	path string
	cur  atomic.Pointer[Rules]
}

// OpenFile loads the guardrail file; it fails when it is missing or invalid.
func OpenFile(file string) (*File, error) {
	f := &File{path: file}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Reload reads the file again. On error the previous rules stay in force.
func (f *File) Reload() error {
	r, err := Load(f.path)
	if err != nil {
		return err
	}
	f.cur.Store(r)
	return nil
}

// Rules returns the rules in force.
func (f *File) Rules() *Rules { return f.cur.Load() }

// Evaluate evaluates against the rules in force.
func (f *File) Evaluate(a *schemas.VaultAction, roles []string) (Decision, error) {
	return f.cur.Load().Evaluate(a, roles)
}
