package schemas

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that travels as a Go duration string ("90s", "5m").
type Duration time.Duration

// MarshalJSON encodes d as a duration string. A negative duration is an
// error: it could not be decoded again.
func (d Duration) MarshalJSON() ([]byte, error) {
	if d < 0 {
		return nil, fmt.Errorf("duration %s is negative", time.Duration(d))
	}
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts a duration string; numbers are rejected because their
// unit would be ambiguous.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"90s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}
