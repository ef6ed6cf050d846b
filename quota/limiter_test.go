package quota

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestLimiterKeyErrors: the calls whose key expression cannot be evaluated
// (a metadata key they lack) share one counter, whoever makes them; each
// is counted in gatehouse_quota_key_errors_total and the first is logged,
// once for the policy. Calls whose key evaluates are not.
func TestLimiterKeyErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	l, err := New([]Policy{{Name: "per-tenant", Key: `metadata["x-tenant"]`, Rate: &Rate{Requests: 2, Per: time.Hour, Burst: 2}}}, nil, 1,
		WithMetrics(m), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		call    Call
		allowed bool
	}{
		{"tenant a", Call{Route: "r", SourceIP: "192.0.2.1", Metadata: map[string][]string{"x-tenant": {"a"}}}, true},
		{"no tenant, first client", Call{Route: "r", SourceIP: "192.0.2.1"}, true},
		{"no tenant, second client", Call{Route: "r", SourceIP: "192.0.2.2"}, true},
		{"no tenant, third client: the shared counter is spent", Call{Route: "r", SourceIP: "192.0.2.3"}, false},
		{"tenant a again", Call{Route: "r", SourceIP: "192.0.2.3", Metadata: map[string][]string{"x-tenant": {"a"}}}, true},
	}
	for _, tt := range tests {
		v, err := l.Limit(context.Background(), &tt.call)
		if err != nil || len(v.Outcomes) != 1 {
			t.Fatalf("%s: %+v %v", tt.name, v, err)
		}
		if got := v.Outcomes[0].Allowed; got != tt.allowed {
			t.Errorf("%s: allowed %v, want %v", tt.name, got, tt.allowed)
		}
	}
	if got := counterValue(t, reg, "gatehouse_quota_key_errors_total", "per-tenant"); got != 3 {
		t.Errorf("gatehouse_quota_key_errors_total = %v, want 3", got)
	}
	if n := strings.Count(logs.String(), "quota policy key could not be evaluated"); n != 1 || !strings.Contains(logs.String(), "policy=per-tenant") {
		t.Errorf("logged %d times, want once, naming the policy:\n%s", n, logs.String())
	}
}

// counterValue is the value of the counter name{policy=policy} in reg; 0
// when there is none.
func counterValue(t *testing.T, reg *prometheus.Registry, name, policy string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "policy" && lp.GetValue() == policy {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
