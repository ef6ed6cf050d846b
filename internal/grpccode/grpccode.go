// Package grpccode spells gRPC status codes the way configs and service
// configs write them: upper-case names such as "UNAVAILABLE" and
// "CANCELLED".
package grpccode

import (
	"strings"

	"google.golang.org/grpc/codes"
)

// Name returns the canonical upper-case name of c ("CANCELLED",
// "DEADLINE_EXCEEDED"), as service configs and Gatehouse's config write it.
func Name(c codes.Code) string {
	if c == codes.Canceled {
		return "CANCELLED"
	}
	// "DeadlineExceeded" → "DEADLINE_EXCEEDED": a word starts at an upper-case
	// letter that follows a lower-case one ("OK" stays whole).
	var b strings.Builder
	prevLower := false
	for _, r := range c.String() {
		upper := 'A' <= r && r <= 'Z'
		if upper && prevLower {
			b.WriteByte('_')
		}
		prevLower = !upper
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// Parse returns the code named name ("UNAVAILABLE"), with grpc-go's own
// parser (codes.Code's JSON form).
func Parse(name string) (codes.Code, bool) {
	var c codes.Code
	if err := c.UnmarshalJSON([]byte(`"` + name + `"`)); err != nil {
		return 0, false
	}
	return c, true
}
