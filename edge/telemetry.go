package edge

import (
	"context"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/peer"

	"github.com/gatehouse-dev/gatehouse/config"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/interceptors/accesslog"
	"github.com/gatehouse-dev/gatehouse/interceptors/requestid"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
	"github.com/gatehouse-dev/gatehouse/telemetry"
	"github.com/gatehouse-dev/gatehouse/upstream"
)

// telemetryOptions are the Options of this file.
type telemetryOptions struct {
	version string // for gatehouse_build_info and service.version
}

// WithVersion sets the version the gateway reports in
// gatehouse_build_info and as the service.version of its spans.
func WithVersion(v string) Option {
	return optionFunc(func(o *options) { o.telemetry.version = v })
}

// observability is the gateway's metrics, tracing and audit trail, built from
// the config's telemetry and audit sections.
type observability struct {
	settings config.TelemetrySettings
	metrics  *telemetry.Metrics // nil when metrics are off
	tracing  *telemetry.Tracing // nil when tracing is off
	audit    *auditState        // nil when the audit trail is off
}

// newObservability builds what cfg's telemetry and audit sections ask for.
// Nothing connects yet.
func newObservability(cfg *configv1.Config, o options) (*observability, error) {
	s := config.Telemetry(cfg)
	obs := &observability{settings: s}
	if s.Metrics {
		obs.metrics = telemetry.NewMetrics(o.telemetry.version)
	}
	if s.TracingEndpoint != "" {
		tr, err := telemetry.NewTracing(telemetry.TracingConfig{
			Endpoint:       s.TracingEndpoint,
			Protocol:       s.OTLPProtocol,
			Insecure:       s.OTLPInsecure,
			SamplingRatio:  s.SamplingRatio,
			ServiceName:    s.ServiceName,
			ServiceVersion: o.telemetry.version,
			QueueSize:      s.QueueSize,
		}, obs.metrics)
		if err != nil {
			return nil, err
		}
		obs.tracing = tr
	}
	a, err := newAuditState(cfg, obs.metrics)
	if err != nil {
		_ = obs.tracing.Shutdown(context.Background())
		return nil, err
	}
	obs.audit = a
	return obs, nil
}

// serverOptions are the grpc.Server options of client listeners: when
// tracing is on, the stats handler that traces every call (the calls
// interceptors count them: chain.go).
func (obs *observability) serverOptions() []grpc.ServerOption {
	if obs == nil || obs.tracing == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(telemetry.ServerHandler(obs.tracing))}
}

// metricsOrNil is the gateway's metrics, nil when off.
func (obs *observability) metricsOrNil() *telemetry.Metrics {
	if obs == nil {
		return nil
	}
	return obs.metrics
}

// upstreamOptions are the backend pool's options: the stats handler that
// counts and traces every attempt.
func (obs *observability) upstreamOptions() []upstream.Option {
	if obs == nil || (obs.metrics == nil && obs.tracing == nil) {
		return nil
	}
	return []upstream.Option{upstream.WithStatsHandler(telemetry.ClientHandler(obs.metrics, obs.tracing))}
}

// watchPool makes gatehouse_upstream_endpoint_up and
// gatehouse_upstream_breaker_state follow the pool.
func (obs *observability) watchPool(pool *upstream.Pool) {
	obs.metrics.WatchBreakers(func() []telemetry.BreakerState {
		var out []telemetry.BreakerState
		for name, st := range pool.Breakers() {
			out = append(out, telemetry.BreakerState{Backend: name, State: int(st)})
		}
		return out
	})
	obs.metrics.WatchEndpoints(func() []telemetry.EndpointState {
		var out []telemetry.EndpointState
		for _, b := range pool.Backends() {
			for _, e := range b.Endpoints {
				out = append(out, telemetry.EndpointState{Backend: b.Name, Endpoint: e.Address, Up: e.State == connectivity.Ready})
			}
		}
		return out
	})
}

// spanFlushLimit bounds the time a shutdown spends exporting the spans
// still queued: a collector that does not answer must not hold the exit.
const spanFlushLimit = 2 * time.Second

// shutdown writes every accepted audit record, until ctx ends, and exports
// the queued spans, for at most spanFlushLimit. It runs after the listeners
// have drained.
func (obs *observability) shutdown(ctx context.Context) {
	if obs == nil {
		return
	}
	obs.audit.close(ctx)
	ctx, cancel := context.WithTimeout(ctx, spanFlushLimit)
	defer cancel()
	_ = obs.tracing.Shutdown(ctx)
}

// Metrics returns the gateway's metrics, nil when they are off. The reload
// code reports each reload with Metrics().ConfigReloaded(ok); its methods
// are no-ops on nil.
func (g *Gateway) Metrics() *telemetry.Metrics {
	if g.obs == nil {
		return nil
	}
	return g.obs.metrics
}

// adminHTTP puts /metrics and, when admin.pprof is set, /debug/pprof/ in
// front of the admin listener's REST handler.
func (g *Gateway) adminHTTP(rest http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", rest)
	if m := g.Metrics(); m != nil {
		mux.Handle("GET /metrics", m.Handler())
	}
	if g.cfg.GetAdmin().GetPprof() {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// traceID returns the trace id of the call's span, "" when there is none.
func traceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

// restHTTPStatus returns the HTTP status a REST client gets for a call that
// ended with code, or 0 for a native gRPC call. REST calls are those that
// arrive on the in-process connection; the status follows the REST error
// handler (restError): 404 for a call no route took, else grpc-gateway's
// table.
func restHTTPStatus(ctx context.Context, code codes.Code) int {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil || p.Addr.Network() != "bufconn" {
		return 0
	}
	if code == codes.Unimplemented {
		if route, _ := callinfo.From(ctx).Route(); route == "" {
			return http.StatusNotFound
		}
	}
	return runtime.HTTPStatusFromCode(code)
}

// accessLogOptions are the access log's options: request and trace ids,
// the HTTP status of REST calls and success sampling.
func (g *Gateway) accessLogOptions() []accesslog.Option {
	return []accesslog.Option{
		accesslog.WithRequestID(requestid.FromContext),
		accesslog.WithTraceID(traceID),
		accesslog.WithHTTPStatus(restHTTPStatus),
		accesslog.WithSampleSuccesses(g.obs.settings.SampleSuccesses),
	}
}
