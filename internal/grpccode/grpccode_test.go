package grpccode

import (
	"testing"

	"google.golang.org/grpc/codes"
)

func TestNameAndParse(t *testing.T) {
	want := map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.InvalidArgument: "INVALID_ARGUMENT",
		codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.Unavailable: "UNAVAILABLE", codes.Unauthenticated: "UNAUTHENTICATED",
	}
	for c, name := range want {
		if got := Name(c); got != name {
			t.Errorf("Name(%v) = %q, want %q", c, got, name)
		}
	}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if got, ok := Parse(Name(c)); !ok || got != c {
			t.Errorf("Parse(Name(%v)) = %v, %v", c, got, ok)
		}
	}
	for _, bad := range []string{"", "Unavailable", "BROKEN", `"`} {
		if _, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}
