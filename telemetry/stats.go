package telemetry

import (
	"context"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

// Span attributes the gateway adds to OpenTelemetry's RPC conventions.
const (
	AttrRoute    = "gatehouse.route"
	AttrBackend  = "gatehouse.backend"
	AttrAttempt  = "gatehouse.upstream.attempt"
	AttrAttempts = "gatehouse.upstream.attempts"
	AttrDecision = "gatehouse.decision"
	AttrDecider  = "gatehouse.decision.by"
	AttrAuth     = "gatehouse.auth.credential"
)

// ServerHandler returns the stats handler of the gateway's server when
// tracing is on: it attaches a callinfo.Info to each call (which the
// interceptors and the router then share) and makes the call's server span,
// child of the trace context the client sent (W3C traceparent, tracestate
// and baggage). The route, backend, decision and upstream attempts that the
// call recorded in its callinfo.Info become span attributes when it ends.
// Calls are counted by the calls interceptors (calls.go), not here.
//
// Transcoded REST calls enter the server through an in-process connection
// that has no stats handler, with the HTTP request's traceparent as
// metadata: they too get exactly one server span, in the client's trace.
func ServerHandler(t *Tracing) stats.Handler {
	return &serverHandler{trace: otelgrpc.NewServerHandler(t.otelOptions()...)}
}

// ClientHandler returns the stats handler of backend connections: each
// attempt, retries included, is counted per backend in m and, when t is not
// nil, is a client span, child of the call's server span, whose trace
// context is sent to the backend. The backend is the one the router
// recorded in the call's callinfo.Info. Either m or t may be nil.
func ClientHandler(m *Metrics, t *Tracing) stats.Handler {
	h := &clientHandler{m: m}
	if t != nil {
		h.trace = otelgrpc.NewClientHandler(t.otelOptions()...)
	}
	return h
}

type serverHandler struct {
	trace stats.Handler
}

func (h *serverHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	ctx, _ = callinfo.With(ctx)
	return h.trace.TagRPC(ctx, info)
}

func (h *serverHandler) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	if _, ok := rs.(*stats.End); ok {
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			ci := callinfo.From(ctx)
			route, backend := ci.Route()
			attempts, _ := ci.Upstream()
			d := ci.Decision()
			decision := "allowed"
			if d.Denied {
				decision = "denied"
			}
			attrs := []attribute.KeyValue{
				attribute.String(AttrRoute, route),
				attribute.String(AttrBackend, backend),
				attribute.Int(AttrAttempts, attempts),
				attribute.String(AttrDecision, decision),
			}
			if d.By != "" {
				attrs = append(attrs, attribute.String(AttrDecider, d.By))
			}
			if p := ci.Principal(); p.Credential != "" {
				attrs = append(attrs, attribute.String(AttrAuth, p.Credential))
			}
			span.SetAttributes(attrs...)
		}
	}
	h.trace.HandleRPC(ctx, rs)
}

func (h *serverHandler) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	return h.trace.TagConn(ctx, info)
}

func (h *serverHandler) HandleConn(ctx context.Context, cs stats.ConnStats) {
	h.trace.HandleConn(ctx, cs)
}

type attemptKey struct{}

type clientHandler struct {
	m     *Metrics
	trace stats.Handler // nil when tracing is off
}

func (h *clientHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	ci := callinfo.From(ctx)
	n := ci.StartAttempt()
	_, backend := ci.Route()
	if h.trace != nil {
		ctx = h.trace.TagRPC(ctx, info)
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.SetAttributes(attribute.String(AttrBackend, backend), attribute.Int(AttrAttempt, n))
		}
	}
	h.m.attemptStarted(backend, n)
	return context.WithValue(ctx, attemptKey{}, backend)
}

func (h *clientHandler) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	if end, ok := rs.(*stats.End); ok {
		d := end.EndTime.Sub(end.BeginTime)
		callinfo.From(ctx).EndAttempt(d)
		backend, _ := ctx.Value(attemptKey{}).(string)
		h.m.attemptEnded(backend, status.Code(end.Error), d)
	}
	if h.trace != nil {
		h.trace.HandleRPC(ctx, rs)
	}
}

func (h *clientHandler) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	if h.trace != nil {
		return h.trace.TagConn(ctx, info)
	}
	return ctx
}

func (h *clientHandler) HandleConn(ctx context.Context, cs stats.ConnStats) {
	if h.trace != nil {
		h.trace.HandleConn(ctx, cs)
	}
}
