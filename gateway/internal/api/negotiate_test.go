package api

import (
	"testing"

	"ciss.dev/schemas"
	"github.com/stretchr/testify/require"
)

func TestNegotiate(t *testing.T) {
	t.Parallel()
	all := []string{schemas.MediaTypeJSON, schemas.MediaTypeSARIF, schemas.MediaTypeCycloneDX}
	for _, tc := range []struct {
		accept string
		offers []string
		want   string // "" = not acceptable
	}{
		{"", all, schemas.MediaTypeJSON},
		{"*/*", all, schemas.MediaTypeJSON},
		{"application/json", all, schemas.MediaTypeJSON},
		{"application/sarif+json", all, schemas.MediaTypeSARIF},
		{"Application/Vnd.CycloneDX+JSON", all, schemas.MediaTypeCycloneDX},
		{"application/sarif+json;q=0.5, application/vnd.cyclonedx+json;q=0.9", all, schemas.MediaTypeCycloneDX},
		{"application/sarif+json, */*;q=0.1", all, schemas.MediaTypeSARIF},
		{"application/*", all, schemas.MediaTypeJSON},
		{"application/json;q=0, */*", all, schemas.MediaTypeSARIF},
		{"text/html", all, ""},
		{"application/json;q=0", all, ""},
		{"application/vnd.cyclonedx+json", all[:2], ""},
		{"*/*", all[1:], schemas.MediaTypeSARIF},
		{"garbage, application/sarif+json;q=bad, application/json;q=0.2", all, schemas.MediaTypeJSON},
		{"*/json", all, schemas.MediaTypeJSON}, // malformed: disregarded
		{"garbage", all[1:], schemas.MediaTypeSARIF},
	} {
		got, ok := negotiate(tc.accept, tc.offers)
		if tc.want == "" {
			require.False(t, ok, "Accept %q gave %q", tc.accept, got)
			continue
		}
		require.True(t, ok, "Accept %q", tc.accept)
		require.Equal(t, tc.want, got, "Accept %q", tc.accept)
	}
}

func TestChooseReportFormatOverride(t *testing.T) {
	t.Parallel()
	reps := []schemas.Report{
		{Format: schemas.FormatSARIF, Object: "s"},
		{Format: schemas.FormatNative, MediaType: schemas.MediaTypeJSON, Object: "n"},
	}
	r, err := chooseReport(reps, schemas.FormatSARIF, "application/json")
	require.NoError(t, err)
	require.Equal(t, "s", r.Object)
	require.Equal(t, schemas.MediaTypeSARIF, r.MediaType, "media type defaults by format")
	_, err = chooseReport(reps, schemas.FormatCycloneDX, "")
	var nae *NotAcceptableError
	require.ErrorAs(t, err, &nae)
	require.Equal(t, []string{schemas.MediaTypeJSON, schemas.MediaTypeSARIF}, nae.Available)
}
