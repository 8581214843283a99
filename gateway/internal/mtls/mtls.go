// Package mtls serves TLS 1.3 with mandatory, verified client certificates from
// files that can be replaced while the server runs, and derives a caller's
// identity from the verified client certificate.
//
// The server certificate and the client CA pool are read at start and on every
// Reload. Reloads apply to new connections only: the tls.Config handed to the
// listener resolves the current material per handshake (GetConfigForClient), so
// established keep-alive connections keep the identity they were verified with.
package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"sync/atomic"
)

// Files names the PEM files the server's TLS material is loaded from.
type Files struct {
	// CertFile and KeyFile hold the server certificate (chain) and its key.
	CertFile, KeyFile string
	// ClientCAFile is a bundle of the CA certificates trusted to issue client
	// certificates.
	ClientCAFile string
}

// Paths lists the files, for change detection.
func (f Files) Paths() []string { return []string{f.CertFile, f.KeyFile, f.ClientCAFile} }

// Reloader holds the current TLS material and swaps it atomically on Reload.
type Reloader struct {
	files Files
	cur   atomic.Pointer[tls.Config]
}

// NewReloader loads the files once; it fails when any of them cannot be used.
func NewReloader(files Files) (*Reloader, error) {
	r := &Reloader{files: files}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again. On error the previous material stays in use and
// the error (a *LoadError) says which file was wrong.
func (r *Reloader) Reload() error {
	cfg, err := load(r.files)
	if err != nil {
		return err
	}
	r.cur.Store(cfg)
	return nil
}

// Files returns the files the reloader reads.
func (r *Reloader) Files() Files { return r.files }

// Certificate returns the server certificate in use.
func (r *Reloader) Certificate() *tls.Certificate { return &r.cur.Load().Certificates[0] }

// TLSConfig returns a server configuration that requires TLS 1.3 and a client
// certificate verified against the current CA pool, and that picks up reloaded
// material on every new handshake.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.Certificate(), nil
		},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.cur.Load(), nil
		},
	}
}

func load(f Files) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, &LoadError{What: "server certificate and key", Path: f.CertFile + ", " + f.KeyFile, Err: err}
	}
	pool, err := loadPool(f.ClientCAFile)
	if err != nil {
		return nil, &LoadError{What: "client CA bundle", Path: f.ClientCAFile, Err: err}
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

// loadPool parses every CERTIFICATE block strictly; x509.CertPool's
// AppendCertsFromPEM would silently skip a corrupt one.
func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, ErrNoCertificates
	}
	return pool, nil
}
