package quota_test

import (
	"testing"
	"time"

	iquota "github.com/gatehouse-dev/gatehouse/interceptors/quota"
	"github.com/gatehouse-dev/gatehouse/quota"
)

// TestHeaders checks the RateLimit-Policy and RateLimit values built from
// a verdict: every deciding policy in order, shadow and unavailable ones
// left out, a refused one's time its retry-after.
func TestHeaders(t *testing.T) {
	allowed := quota.Outcome{Policy: "per-tenant", Allowed: true, Limit: 100, Window: time.Minute, Remaining: 99, ResetAfter: 1500 * time.Millisecond}
	refused := quota.Outcome{Policy: `odd "name"`, Limit: 5, Window: 500 * time.Millisecond, Remaining: -1, RetryAfter: 2 * time.Second, ResetAfter: time.Hour}
	shadow := quota.Outcome{Policy: "shadow", Shadow: true, Allowed: true, Limit: 1, Window: time.Second}
	down := quota.Outcome{Policy: "down", Unavailable: true}
	for _, tt := range []struct {
		name           string
		outcomes       []quota.Outcome
		policy, limits string // "" for no headers
	}{
		{name: "none"},
		{name: "only shadow and unavailable", outcomes: []quota.Outcome{shadow, down}},
		{name: "one", outcomes: []quota.Outcome{allowed},
			policy: `"per-tenant";q=100;w=60`, limits: `"per-tenant";r=99;t=2`},
		{name: "two and the others", outcomes: []quota.Outcome{shadow, allowed, down, refused},
			policy: `"per-tenant";q=100;w=60, "odd \"name\"";q=5;w=1`,
			limits: `"per-tenant";r=99;t=2, "odd \"name\"";r=0;t=2`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			md := iquota.Headers(quota.Verdict{Outcomes: tt.outcomes})
			if tt.policy == "" {
				if len(md) != 0 {
					t.Fatalf("headers %v, want none", md)
				}
				return
			}
			if got := md.Get(iquota.HeaderPolicy); len(got) != 1 || got[0] != tt.policy {
				t.Errorf("%s = %q, want %q", iquota.HeaderPolicy, got, tt.policy)
			}
			if got := md.Get(iquota.HeaderRateLimit); len(got) != 1 || got[0] != tt.limits {
				t.Errorf("%s = %q, want %q", iquota.HeaderRateLimit, got, tt.limits)
			}
		})
	}
}
