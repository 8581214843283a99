package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"ciss.dev/gateway/internal/jobstore"
	"ciss.dev/gateway/internal/mtls"
	"ciss.dev/schemas"
	"github.com/stretchr/testify/require"
)

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		vals []string
		want string
		bad  bool
	}{
		{nil, "", false},
		{[]string{"abc-123 ~!"}, "abc-123 ~!", false},
		{[]string{strings.Repeat("k", 255)}, strings.Repeat("k", 255), false},
		{[]string{strings.Repeat("k", 256)}, "", true},
		{[]string{""}, "", true},
		{[]string{"tab\there"}, "", true},
		{[]string{"ünï"}, "", true},
		{[]string{"a", "b"}, "", true},
	} {
		h := http.Header{}
		for _, v := range tc.vals {
			h.Add("Idempotency-Key", v)
		}
		got, err := idempotencyKey(h)
		if tc.bad {
			var pe *ParamError
			require.ErrorAs(t, err, &pe, "%q", tc.vals)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, got)
	}
}

func TestToProblem(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		status int
		slug   string
	}{
		{mtls.ErrNoClientCertificate, 401, "unauthenticated"},
		{ErrNoBinding, 403, "forbidden"},
		{&ForbiddenError{Binding: "b"}, 403, "forbidden"},
		{ErrRouteNotFound, 404, "not-found"},
		{&MethodNotAllowedError{Allow: "GET"}, 405, "method-not-allowed"},
		{fmt.Errorf("get x: %w", jobstore.ErrNotFound), 404, "job-not-found"},
		{ErrJobNotFound, 404, "job-not-found"},
		{ErrUnsupportedMediaType, 415, "unsupported-media-type"},
		{&http.MaxBytesError{Limit: 10}, 413, "payload-too-large"},
		{&MalformedError{Err: errors.New("x")}, 400, "malformed-request"},
		{&ParamError{Name: "wait"}, 400, "invalid-parameter"},
		{&ValidationError{Fields: []schemas.FieldError{{Field: "type", Reason: "r"}}}, 422, "invalid-request"},
		{ErrIdempotencyKeyReused, 422, "idempotency-key-reused"},
		{&JobStateError{Slug: "job-terminal"}, 409, "job-terminal"},
		{ErrConcurrentUpdate, 409, "concurrent-update"},
		{&NotAcceptableError{}, 406, "not-acceptable"},
		{fmt.Errorf("publish: %w", jobstore.ErrNotConnected), 503, "unavailable"},
		{fmt.Errorf("x: %w", ErrReportMissing), 500, "internal"},
		{errors.New("boom"), 500, "internal"},
	} {
		p := toProblem(tc.err)
		require.Equal(t, tc.status, p.Status, "%v", tc.err)
		require.Equal(t, "https://ciss.dev/problems/"+tc.slug, p.Type, "%v", tc.err)
		require.NotEmpty(t, p.Title)
		if tc.status == 503 {
			require.Equal(t, 5, p.RetryAfter)
		}
		if tc.status == 500 {
			require.NotContains(t, p.Detail, "boom", "internal causes must not leak")
		}
	}
}

func TestDecodeJobRequest(t *testing.T) {
	t.Parallel()
	req, err := decodeJobRequest([]byte(`{"type":"image-scan","target":{"image":"registry.example:5000/app/web:1.2"}}`))
	require.NoError(t, err)
	require.Equal(t, schemas.LaneInteractive, req.Lane, "Validate fills the lane")

	_, err = decodeJobRequest([]byte(`{"type":"image-scan","target":{"image":"r.example/a:1"},"extra":1}`))
	var me *MalformedError
	require.ErrorAs(t, err, &me)

	_, err = decodeJobRequest([]byte(`{"type":"nope","lane":"fast","params":{"B":"x"}}`))
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	var names []string
	for _, f := range ve.Fields {
		names = append(names, f.Field)
	}
	require.Equal(t, []string{"lane", "params", "type"}, names)

	a, err := decodeJobRequest([]byte(`{"type":"image-scan","target":{"image":"r.example/a:1"},"params":{"a":"1","b":"2"}}`))
	require.NoError(t, err)
	b, err := decodeJobRequest([]byte(`{"params":{"b":"2","a":"1"},"lane":"interactive","target":{"image":"r.example/a:1"},"type":"image-scan"}`))
	require.NoError(t, err)
	require.Equal(t, requestDigest(&a), requestDigest(&b), "the digest is of the normalised request")
}
