package api

import (
	"strconv"
	"strings"
)

// mediaRange is one element of an Accept header.
type mediaRange struct {
	typ, sub string
	q        float64
}

// parseAccept parses an Accept header (RFC 9110 §12.5.1). Malformed elements
// are skipped rather than failing the request, as browsers send odd ones.
func parseAccept(header string) []mediaRange {
	var out []mediaRange
	for elem := range strings.SplitSeq(header, ",") {
		params := strings.Split(elem, ";")
		typ, sub, ok := strings.Cut(strings.ToLower(strings.TrimSpace(params[0])), "/")
		if !ok || typ == "" || sub == "" || (typ == "*" && sub != "*") {
			continue
		}
		mr := mediaRange{typ: typ, sub: sub, q: 1}
		for _, p := range params[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if !strings.EqualFold(strings.TrimSpace(k), "q") {
				continue
			}
			q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || q < 0 || q > 1 {
				mr.q = -1 // invalid weight: ignore the element
			} else {
				mr.q = q
			}
		}
		if mr.q >= 0 {
			out = append(out, mr)
		}
	}
	return out
}

// quality is the weight the most specific matching range gives to offer
// ("type/subtype"), or 0 when none matches.
func quality(ranges []mediaRange, offer string) float64 {
	typ, sub, _ := strings.Cut(strings.ToLower(offer), "/")
	best, q := -1, 0.0
	for _, r := range ranges {
		spec := -1
		switch {
		case r.typ == typ && r.sub == sub:
			spec = 2
		case r.typ == typ && r.sub == "*":
			spec = 1
		case r.typ == "*":
			spec = 0
		}
		if spec > best {
			best, q = spec, r.q
		}
	}
	return q
}

// negotiate picks the offer the Accept header weighs highest; ties go to the
// earlier offer, so offers are in server preference order. A missing header,
// or one without a single well-formed element, accepts anything (RFC 9110
// lets a server disregard a malformed Accept).
func negotiate(accept string, offers []string) (string, bool) {
	if len(offers) == 0 {
		return "", false
	}
	ranges := parseAccept(accept)
	if len(ranges) == 0 {
		return offers[0], true
	}
	best, bestQ := "", 0.0
	for _, o := range offers {
		if q := quality(ranges, o); q > bestQ {
			best, bestQ = o, q
		}
	}
	return best, bestQ > 0
}
