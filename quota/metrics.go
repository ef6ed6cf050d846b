package quota

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the quota series. The methods of a nil *Metrics do nothing.
//
//	gatehouse_quota_decisions_total{policy, decision}   decision: allowed,
//	    refused, shadow_refused (a shadow policy would have refused),
//	    unavailable (the store failed and the policy fails closed)
//	gatehouse_quota_store_fallbacks_total{policy, action}   decisions taken
//	    without the shared store; action: fail_open, fail_closed
//	gatehouse_quota_store_transitions_total{to}   to: down, up
//	gatehouse_quota_store_up   1 while the shared store answers
//	gatehouse_quota_key_errors_total{policy}   calls whose key expression
//	    could not be evaluated (say, metadata the call lacks): they share
//	    the policy's one counter for the empty key
type Metrics struct {
	decisions   *prometheus.CounterVec
	fallbacks   *prometheus.CounterVec
	transitions *prometheus.CounterVec
	up          prometheus.Gauge
	keyErrors   *prometheus.CounterVec
}

// NewMetrics makes the quota series and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_quota_decisions_total",
			Help: "Quota policy decisions, by policy and decision (allowed, refused, shadow_refused, unavailable).",
		}, []string{"policy", "decision"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_quota_store_fallbacks_total",
			Help: "Quota decisions taken without the shared store, by policy and action (fail_open, fail_closed).",
		}, []string{"policy", "action"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_quota_store_transitions_total",
			Help: "Times the shared quota store went down or came back, by direction (down, up).",
		}, []string{"to"}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_quota_store_up",
			Help: "1 while the shared quota store answers, 0 while policies fall back.",
		}),
		keyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_quota_key_errors_total",
			Help: "Calls whose quota policy key could not be evaluated, by policy: they share one counter, the empty key's.",
		}, []string{"policy"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.decisions, m.fallbacks, m.transitions, m.up, m.keyErrors} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *Metrics) decided(o Outcome) {
	if m == nil {
		return
	}
	d := "allowed"
	switch {
	case o.Allowed:
	case o.Shadow:
		d = "shadow_refused"
	case o.Unavailable:
		d = "unavailable"
	default:
		d = "refused"
	}
	m.decisions.WithLabelValues(o.Policy, d).Inc()
}

func (m *Metrics) fallback(policy, action string) {
	if m != nil {
		m.fallbacks.WithLabelValues(policy, action).Inc()
	}
}

func (m *Metrics) keyError(policy string) {
	if m != nil {
		m.keyErrors.WithLabelValues(policy).Inc()
	}
}

func (m *Metrics) transition(up bool) {
	if m == nil {
		return
	}
	m.storeUp(up)
	to := "down"
	if up {
		to = "up"
	}
	m.transitions.WithLabelValues(to).Inc()
}

func (m *Metrics) storeUp(up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.up.Set(v)
}
