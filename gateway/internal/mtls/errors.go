package mtls

import "errors"

// ErrNoClientCertificate means a request arrived without a verified client
// certificate chain. With RequireAndVerifyClientCert this only happens when the
// handler is served outside the mTLS listener.
var ErrNoClientCertificate = errors.New("no verified client certificate")

// ErrNoCertificates means a CA bundle held no PEM CERTIFICATE block.
var ErrNoCertificates = errors.New("no certificates found")

// LoadError says which file could not be loaded. The previously loaded material
// stays in use.
type LoadError struct {
	// What names the file's role, e.g. "client CA bundle".
	What string
	// Path is the file that failed.
	Path string
	// Err is the cause.
	Err error
}

// Error implements error.
func (e *LoadError) Error() string { return "load " + e.What + " " + e.Path + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *LoadError) Unwrap() error { return e.Err }
