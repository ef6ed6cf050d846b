package config

import (
	"slices"
	"time"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
)

// resilienceDefaults are the defaults of issue 6's fields, as documented in
// config.proto.
type resilienceDefaults struct {
	dnsRefresh    time.Duration
	loadBalancing string
	health        HealthCheckSettings
	breaker       BreakerSettings
	outlier       OutlierSettings
	retry         RetrySettings
}

// HealthCheckSettings is Backend.health_check with defaults filled in.
type HealthCheckSettings struct {
	Interval, Timeout                    time.Duration
	UnhealthyThreshold, HealthyThreshold int
	Service                              string
}

// BreakerSettings is Backend.circuit_breaker with defaults filled in. Zero
// caps and triggers are off. Window (10s, not configurable) clears the
// counts behind failure_ratio.
type BreakerSettings struct {
	MaxConcurrent, MaxPending, ConsecutiveFailures int
	FailureRatio                                   float64
	MinRequests                                    int
	Window, OpenFor                                time.Duration
	HalfOpenProbes                                 int
}

// OutlierSettings is Backend.outlier_detection with defaults filled in.
type OutlierSettings struct {
	ConsecutiveFailures int
	EjectionTime        time.Duration
	MaxEjectionPercent  int
	Interval            time.Duration
}

// RetrySettings is Route.retry with defaults filled in.
type RetrySettings struct {
	Attempts                int
	On                      []string
	BackoffBase, BackoffMax time.Duration
	BudgetPercent           int
	HedgeDelay              time.Duration // 0: no hedging
	BufferBytes             int
}

// TimeoutSettings is Route.timeout; zero durations are unset.
type TimeoutSettings struct {
	Default, Max, Idle time.Duration
}

// DNSRefresh is how often b's DNS endpoints are re-resolved.
func DNSRefresh(b *configv1.Backend) time.Duration {
	d := defaults.resilience.dnsRefresh
	durationOr(&d, b.GetDnsRefreshInterval())
	return d
}

// LoadBalancing is b's load_balancing, "ROUND_ROBIN" by default.
func LoadBalancing(b *configv1.Backend) string {
	if lb := b.GetLoadBalancing(); lb != "" {
		return lb
	}
	return defaults.resilience.loadBalancing
}

// HealthCheck returns b's health checking; ok is false when it is off.
func HealthCheck(b *configv1.Backend) (s HealthCheckSettings, ok bool) {
	hc := b.GetHealthCheck()
	if hc == nil {
		return s, false
	}
	s = defaults.resilience.health
	durationOr(&s.Interval, hc.GetInterval())
	durationOr(&s.Timeout, hc.GetTimeout())
	if v := hc.GetUnhealthyThreshold(); v > 0 {
		s.UnhealthyThreshold = int(v)
	}
	if v := hc.GetHealthyThreshold(); v > 0 {
		s.HealthyThreshold = int(v)
	}
	s.Service = hc.GetService()
	return s, true
}

// CircuitBreaker returns b's caps and breaker. When circuit_breaker is
// absent only the default caps apply (1024 calls in flight, 1024 pending):
// a breaker that nobody asked for would fail calls fast for open_for after
// a backend restart.
func CircuitBreaker(b *configv1.Backend) BreakerSettings {
	s := defaults.resilience.breaker
	cb := b.GetCircuitBreaker()
	if cb == nil {
		s.ConsecutiveFailures = 0
		return s
	}
	if cb.MaxConcurrent != nil {
		s.MaxConcurrent = int(cb.GetMaxConcurrent())
	}
	if cb.MaxPending != nil {
		s.MaxPending = int(cb.GetMaxPending())
	}
	if cb.ConsecutiveFailures != nil {
		s.ConsecutiveFailures = int(cb.GetConsecutiveFailures())
	}
	s.FailureRatio = cb.GetFailureRatio()
	if v := cb.GetMinRequests(); v > 0 {
		s.MinRequests = int(v)
	}
	durationOr(&s.OpenFor, cb.GetOpenFor())
	if v := cb.GetHalfOpenProbes(); v > 0 {
		s.HalfOpenProbes = int(v)
	}
	return s
}

// OutlierDetection returns b's outlier detection; ok is false when off.
func OutlierDetection(b *configv1.Backend) (s OutlierSettings, ok bool) {
	od := b.GetOutlierDetection()
	if od == nil {
		return s, false
	}
	s = defaults.resilience.outlier
	if v := od.GetConsecutiveFailures(); v > 0 {
		s.ConsecutiveFailures = int(v)
	}
	durationOr(&s.EjectionTime, od.GetEjectionTime())
	if od.MaxEjectionPercent != nil {
		s.MaxEjectionPercent = int(od.GetMaxEjectionPercent())
	}
	durationOr(&s.Interval, od.GetInterval())
	return s, true
}

// RouteRetry returns r's retry policy; ok is false when retry is absent.
func RouteRetry(r *configv1.Route) (s RetrySettings, ok bool) {
	rt := r.GetRetry()
	if rt == nil {
		return s, false
	}
	s = defaults.resilience.retry
	s.On = slices.Clone(s.On)
	s.Attempts = int(rt.GetAttempts())
	if on := rt.GetOn(); len(on) > 0 {
		s.On = slices.Clone(on)
	}
	durationOr(&s.BackoffBase, rt.GetBackoff().GetBase())
	durationOr(&s.BackoffMax, rt.GetBackoff().GetMax())
	if rt.BudgetPercent != nil {
		s.BudgetPercent = int(rt.GetBudgetPercent())
	}
	durationOr(&s.HedgeDelay, rt.GetHedgeDelay())
	if rt.BufferBytes != nil {
		s.BufferBytes = int(rt.GetBufferBytes())
	}
	return s, true
}

// RouteTimeout returns r's timeouts; unset ones are zero.
func RouteTimeout(r *configv1.Route) TimeoutSettings {
	var s TimeoutSettings
	t := r.GetTimeout()
	durationOr(&s.Default, t.GetDefault())
	durationOr(&s.Max, t.GetMax())
	durationOr(&s.Idle, t.GetIdle())
	return s
}
