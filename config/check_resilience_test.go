package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/config"
)

const resilienceBase = `
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends:
  - name: orders
    endpoints: ["orders.shop.svc.cluster.local:9000"]
    discovery: DNS
    load_balancing: LEAST_REQUEST
    health_check: { interval: "5s", timeout: "1s", unhealthy_threshold: 3 }
    circuit_breaker: { max_concurrent: 1024, max_pending: 1024, consecutive_failures: 5, open_for: "30s" }
    outlier_detection: { consecutive_failures: 5, ejection_time: "30s", max_ejection_percent: 50 }
routes:
  - name: orders
    match: { service: "shop.orders.v1.Orders" }
    backend: orders
    timeout: { default: "2s", max: "10s" }
    retry: { attempts: 3, on: ["UNAVAILABLE"], backoff: { base: "25ms", max: "250ms" }, budget_percent: 20 }
`

// TestResilienceIssueExample: the configuration shape of issue 6 loads as
// written (including the YAML 1.1 key "on") and its defaults fill in.
func TestResilienceIssueExample(t *testing.T) {
	cfg, err := config.Parse("gatehouse.yaml", []byte(resilienceBase))
	if err != nil {
		t.Fatal(err)
	}
	b, r := cfg.GetBackends()[0], cfg.GetRoutes()[0]
	if hc, ok := config.HealthCheck(b); !ok || hc.Interval != 5*time.Second || hc.HealthyThreshold != 1 {
		t.Errorf("HealthCheck = %+v, %v", hc, ok)
	}
	if rs, ok := config.RouteRetry(r); !ok || rs.Attempts != 3 || len(rs.On) != 1 || rs.On[0] != "UNAVAILABLE" || rs.BufferBytes != 65536 {
		t.Errorf("RouteRetry = %+v, %v", rs, ok)
	}
	if cb := config.CircuitBreaker(b); cb.ConsecutiveFailures != 5 || cb.HalfOpenProbes != 1 {
		t.Errorf("CircuitBreaker = %+v", cb)
	}
	if cb := config.CircuitBreaker(nil); cb.ConsecutiveFailures != 0 || cb.MaxConcurrent != 1024 {
		t.Errorf("CircuitBreaker(absent) = %+v, want the caps only", cb)
	}
	if got := config.DNSRefresh(b); got != 30*time.Second {
		t.Errorf("DNSRefresh = %v", got)
	}
}

func TestResilienceChecks(t *testing.T) {
	for _, tt := range []struct{ name, from, to, want string }{
		{"weights name endpoints", `discovery: DNS`, `discovery: DNS
    endpoint_weights: { "other:1": 2 }`, `backends[0].endpoint_weights: "other:1" is not one of endpoints`},
		{"weights need round robin", `discovery: DNS`, `discovery: DNS
    endpoint_weights: { "orders.shop.svc.cluster.local:9000": 2 }`, `weights apply to ROUND_ROBIN only`},
		{"default over max", `default: "2s"`, `default: "20s"`, `routes[0].timeout.default: the default (20s) is longer than max (10s)`},
		{"backoff", `max: "250ms" }`, `max: "5ms" }`, `routes[0].retry.backoff.max: max (5ms) is shorter than base (25ms)`},
		{"health timeout", `timeout: "1s"`, `timeout: "10s"`, `backends[0].health_check.timeout: the timeout (10s) is longer than the interval (5s)`},
		{"attempts", `attempts: 3`, `attempts: 6`, `routes[0].retry.attempts`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(resilienceBase, tt.from, tt.to, 1)
			_, err := config.Parse("gatehouse.yaml", []byte(src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}
