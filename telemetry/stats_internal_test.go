package telemetry

import (
	"fmt"
	"testing"
)

// TestPolicyNames reads policy names back from RateLimit-Policy values as
// the quota interceptor writes them.
func TestPolicyNames(t *testing.T) {
	tests := []struct {
		in   []string
		want []string
	}{
		{nil, nil},
		{[]string{`"per-key";q=10;w=60`}, []string{"per-key"}},
		{[]string{`"a";q=1;w=1, "b";q=5;w=3600`}, []string{"a", "b"}},
		{[]string{`"odd, \"name\"";q=1;w=1, "c";q=2;w=2`}, []string{`odd, "name"`, "c"}},
		{[]string{`"a";q=1;w=1`, `"b";q=2;w=2`}, []string{"a", "b"}},
		{[]string{`garbage`}, nil},
	}
	for _, tt := range tests {
		if got := policyNames(tt.in); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("policyNames(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
