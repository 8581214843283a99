package api

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeJobRequest checks that decoding and validation never panic, that
// every rejection is one of the two client error types, and that an accepted
// request is a fixed point: re-encoding and decoding it again gives the same
// request and digest.
func FuzzDecodeJobRequest(f *testing.F) {
	f.Add([]byte(`{"type":"image-scan","target":{"image":"registry.example:5000/app/web:1.2"}}`))
	f.Add([]byte(`{"type":"image-scan","target":{"image":"r.example/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},"lane":"bulk","cache":false,"params":{"severity":"HIGH"}}`))
	f.Add([]byte(`{"type":"image-scan","target":{}}`))
	f.Add([]byte(`{"type":"image-scan","target":{"image":"x"},"unknown":true}`))
	f.Add([]byte(`{"type":"image-scan"} {}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"params":{"A":"b"},"lane":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeJobRequest(body)
		if err != nil {
			var me *MalformedError
			var ve *ValidationError
			if !errors.As(err, &me) && !errors.As(err, &ve) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			if ve != nil && len(ve.Fields) == 0 {
				t.Fatal("validation error without fields")
			}
			return
		}
		canon, err := json.Marshal(&req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeJobRequest(canon)
		if err != nil {
			t.Fatalf("canonical form %s rejected: %v", canon, err)
		}
		if requestDigest(&req) != requestDigest(&again) {
			t.Fatalf("digest not stable for %s", canon)
		}
	})
}
