package config

import (
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
)

// checkResilience checks what the resilience fields' own rules cannot:
// weights name endpoints, settings that only make sense together.
func (c checker) checkResilience(cfg *configv1.Config) {
	for i, b := range cfg.GetBackends() {
		p := path{}.field("backends").index(i)
		eps := map[string]bool{}
		for _, e := range b.GetEndpoints() {
			eps[e] = true
		}
		for ep := range b.GetEndpointWeights() {
			if !eps[ep] {
				c.errorf(p.field("endpoint_weights"), "%q is not one of endpoints", ep)
			}
		}
		if len(b.GetEndpointWeights()) > 0 && LoadBalancing(b) != "ROUND_ROBIN" {
			c.errorf(p.field("endpoint_weights"), "weights apply to ROUND_ROBIN only, and load_balancing is %s", b.GetLoadBalancing())
		}
		if b.GetDnsRefreshInterval() != nil && b.GetDiscovery() != "DNS" {
			c.errorf(p.field("dns_refresh_interval"), "only meaningful with discovery: DNS")
		}
		if hc, ok := HealthCheck(b); ok && hc.Timeout > hc.Interval {
			c.errorf(p.field("health_check").field("timeout"), "the timeout (%v) is longer than the interval (%v)", hc.Timeout, hc.Interval)
		}
		if cb := b.GetCircuitBreaker(); cb != nil && cb.GetMinRequests() > 0 && cb.GetFailureRatio() == 0 {
			c.errorf(p.field("circuit_breaker").field("min_requests"), "only meaningful with failure_ratio")
		}
	}
	for i, r := range cfg.GetRoutes() {
		p := path{}.field("routes").index(i)
		t := RouteTimeout(r)
		if t.Max > 0 && t.Default > t.Max {
			c.errorf(p.field("timeout").field("default"), "the default (%v) is longer than max (%v)", t.Default, t.Max)
		}
		if rs, ok := RouteRetry(r); ok {
			if rs.BackoffMax < rs.BackoffBase {
				c.errorf(p.field("retry").field("backoff").field("max"), "max (%v) is shorter than base (%v)", rs.BackoffMax, rs.BackoffBase)
			}
			if r.GetRetry().GetHedgeDelay() != nil && t.Idle > 0 {
				c.errorf(p.field("retry").field("hedge_delay"), "hedging is for unary routes, and timeout.idle is for streaming ones")
			}
		}
	}
}
