package telemetry

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
)

// unmatched is the method label of calls that no route took.
const unmatched = "unmatched"

// durationBuckets are the bucket bounds of the duration histograms, in
// seconds: those OpenTelemetry recommends for rpc.server.call.duration.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// EndpointState is one backend endpoint's reachability, for
// gatehouse_upstream_endpoint_up.
type EndpointState struct {
	Backend  string
	Endpoint string
	Up       bool
}

// Metrics holds the gateway's Prometheus series. Its methods are safe for
// concurrent use, and they are no-ops on a nil *Metrics, so that callers
// need not check whether metrics are on.
type Metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	inFlight        prometheus.Gauge

	attempts        *prometheus.CounterVec
	retries         *prometheus.CounterVec
	upstreamErrors  *prometheus.CounterVec
	attemptDuration *prometheus.HistogramVec

	reloads        *prometheus.CounterVec
	lastReloadOK   prometheus.Gauge
	lastReloadTime prometheus.Gauge

	spansDropped  prometheus.Counter
	spansExported prometheus.Counter
	exportErrors  prometheus.Counter

	auditWritten prometheus.Counter
	auditLost    prometheus.Counter

	authFailures *prometheus.CounterVec

	now func() time.Time
}

// NewMetrics returns the gateway's metrics, in a registry of their own.
// version is the gateway's version, for gatehouse_build_info.
func NewMetrics(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		now: time.Now,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_requests_total",
			Help: "Calls handled by the gateway, by route, full gRPC method and gRPC status code.",
		}, []string{"route", "method", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatehouse_request_duration_seconds",
			Help:    "Duration of calls handled by the gateway, from the first header to the status.",
			Buckets: durationBuckets,
		}, []string{"route", "method", "code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_requests_in_flight",
			Help: "Calls in progress.",
		}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_upstream_attempts_total",
			Help: "Attempts sent to a backend, retries included.",
		}, []string{"backend"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_upstream_retries_total",
			Help: "Attempts sent to a backend after the first attempt of the same call.",
		}, []string{"backend"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_upstream_errors_total",
			Help: "Backend attempts that ended with a status other than OK, by code.",
		}, []string{"backend", "code"}),
		attemptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatehouse_upstream_attempt_duration_seconds",
			Help:    "Duration of backend attempts.",
			Buckets: durationBuckets,
		}, []string{"backend"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_config_reloads_total",
			Help: "Configuration reloads, by result (success or failure).",
		}, []string{"result"}),
		lastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_config_last_reload_successful",
			Help: "1 when the last configuration reload succeeded (or none was tried), else 0.",
		}),
		lastReloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_config_last_reload_success_timestamp_seconds",
			Help: "Unix time at which the configuration in force was loaded.",
		}),
		spansDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_tracing_spans_dropped_total",
			Help: "Spans dropped because the export queue was full.",
		}),
		spansExported: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_tracing_spans_exported_total",
			Help: "Spans the collector accepted.",
		}),
		exportErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_tracing_export_errors_total",
			Help: "Span batches whose export failed (their spans are lost).",
		}),
		auditWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_audit_records_total",
			Help: "Audit records written to the audit file.",
		}),
		auditLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_audit_records_lost_total",
			Help: "Audit records that could not be written.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_auth_failures_total",
			Help: "Calls refused by authentication or authorization, by reason (missing_credentials, invalid_credentials, rule, require_auth, invalid_policy, route_changed) and route (\"\" when no route took the call).",
		}, []string{"reason", "route"}),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "gatehouse_build_info",
		Help:        "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	m.lastReloadOK.Set(1)
	m.lastReloadTime.Set(float64(m.now().UnixNano()) / 1e9)
	m.reg.MustRegister(
		m.requests, m.requestDuration, m.inFlight,
		m.attempts, m.retries, m.upstreamErrors, m.attemptDuration,
		m.reloads, m.lastReloadOK, m.lastReloadTime,
		m.spansDropped, m.spansExported, m.exportErrors,
		m.auditWritten, m.auditLost,
		m.authFailures,
		buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Handler serves the metrics in the Prometheus text format (or
// OpenMetrics, when the scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// Registry returns the registry, to add series to it.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// ConfigReloaded records the result of a configuration reload: the reload
// code calls it once per attempt, ok when the new configuration is in force.
func (m *Metrics) ConfigReloaded(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.reloads.WithLabelValues("success").Inc()
		m.lastReloadOK.Set(1)
		m.lastReloadTime.Set(float64(m.now().UnixNano()) / 1e9)
		return
	}
	m.reloads.WithLabelValues("failure").Inc()
	m.lastReloadOK.Set(0)
}

// WatchEndpoints makes gatehouse_upstream_endpoint_up report what states
// returns, read at each scrape. states must not block.
func (m *Metrics) WatchEndpoints(states func() []EndpointState) {
	if m == nil || states == nil {
		return
	}
	m.reg.MustRegister(&endpointCollector{states: states})
}

// AuthFailed counts a call refused by authentication or authorization.
func (m *Metrics) AuthFailed(reason, route string) {
	if m != nil {
		m.authFailures.WithLabelValues(reason, route).Inc()
	}
}

// BreakerState is one backend's circuit breaker state, for
// gatehouse_upstream_breaker_state: 0 closed, 1 half-open, 2 open.
type BreakerState struct {
	Backend string
	State   int
}

// WatchBreakers makes gatehouse_upstream_breaker_state report what states
// returns, read at each scrape. states must not block.
func (m *Metrics) WatchBreakers(states func() []BreakerState) {
	if m == nil || states == nil {
		return
	}
	m.reg.MustRegister(&breakerCollector{states: states})
}

// AuditWritten and AuditLost count audit records written and lost.
func (m *Metrics) AuditWritten() {
	if m != nil {
		m.auditWritten.Inc()
	}
}

// AuditLost counts an audit record that could not be written.
func (m *Metrics) AuditLost() {
	if m != nil {
		m.auditLost.Inc()
	}
}

// callStarted and callEnded bracket one call on the gateway's server.
func (m *Metrics) callStarted() {
	if m != nil {
		m.inFlight.Inc()
	}
}

func (m *Metrics) callEnded(route, method string, code codes.Code, d time.Duration) {
	if m == nil {
		return
	}
	m.inFlight.Dec()
	if route == "" {
		method = unmatched
	}
	c := code.String()
	m.requests.WithLabelValues(route, method, c).Inc()
	m.requestDuration.WithLabelValues(route, method, c).Observe(d.Seconds())
}

// attemptStarted and attemptEnded bracket one backend attempt.
func (m *Metrics) attemptStarted(backend string, n int) {
	if m == nil {
		return
	}
	m.attempts.WithLabelValues(backend).Inc()
	if n > 1 {
		m.retries.WithLabelValues(backend).Inc()
	}
}

func (m *Metrics) attemptEnded(backend string, code codes.Code, d time.Duration) {
	if m == nil {
		return
	}
	if code != codes.OK {
		m.upstreamErrors.WithLabelValues(backend, code.String()).Inc()
	}
	m.attemptDuration.WithLabelValues(backend).Observe(d.Seconds())
}

func (m *Metrics) spans(exported, dropped int, failed bool) {
	if m == nil {
		return
	}
	m.spansExported.Add(float64(exported))
	m.spansDropped.Add(float64(dropped))
	if failed {
		m.exportErrors.Inc()
	}
}

// endpointCollector reports endpoint reachability at scrape time.
type endpointCollector struct {
	states func() []EndpointState
}

var endpointUpDesc = prometheus.NewDesc("gatehouse_upstream_endpoint_up",
	"1 when the backend endpoint's connection is READY, else 0.", []string{"backend", "endpoint"}, nil)

func (c *endpointCollector) Describe(ch chan<- *prometheus.Desc) { ch <- endpointUpDesc }

func (c *endpointCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.states() {
		v := 0.0
		if s.Up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(endpointUpDesc, prometheus.GaugeValue, v, s.Backend, s.Endpoint)
	}
}

// breakerCollector reports circuit breaker states at scrape time.
type breakerCollector struct {
	states func() []BreakerState
}

var breakerStateDesc = prometheus.NewDesc("gatehouse_upstream_breaker_state",
	"The backend's circuit breaker: 0 closed, 1 half-open, 2 open. Backends without a breaker are absent.", []string{"backend"}, nil)

func (c *breakerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- breakerStateDesc }

func (c *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.states() {
		ch <- prometheus.MustNewConstMetric(breakerStateDesc, prometheus.GaugeValue, float64(s.State), s.Backend)
	}
}
