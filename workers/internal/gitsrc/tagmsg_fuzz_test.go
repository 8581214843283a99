package gitsrc

import (
	"strings"
	"testing"
)

// FuzzTagMessage: tag objects come from the remote repository (untrusted).
// The message never includes the signature block and never panics.
func FuzzTagMessage(f *testing.F) {
	f.Add([]byte("object 0123\ntype commit\ntag t\ntagger CISS <ciss@localhost> 1 +0000\n\nCISS SAST passed\n\nreport: sha256:ab\n-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"))
	f.Add([]byte("no header separator"))
	f.Add([]byte("\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := tagMessage(b)
		if strings.Contains(m, "-----BEGIN SSH SIGNATURE-----") {
			t.Fatalf("message %q keeps the signature", m)
		}
	})
}
