package telemetry

import (
	"context"
	"slices"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
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
	// AttrAuthResult is how authentication ended, on every call: one of
	// AuthAnonymous, AuthAuthenticated, AuthDenied.
	AttrAuthResult = "gatehouse.auth.result"
	// AttrQuotaResult is the quota decision, on every call: one of
	// QuotaNone, QuotaAllowed, QuotaRefused, QuotaUnavailable.
	AttrQuotaResult = "gatehouse.quota.result"
	// AttrQuotaPolicies lists the enforcing quota policies that decided on
	// the call (those whose RateLimit-Policy the client gets), and on a
	// refusal the refusing policy first.
	AttrQuotaPolicies = "gatehouse.quota.policies"
)

// Values of AttrAuthResult.
const (
	// AuthAnonymous: no credential was verified (none was required).
	AuthAnonymous = "anonymous"
	// AuthAuthenticated: a credential verified; AttrAuth names it.
	AuthAuthenticated = "authenticated"
	// AuthDenied: authentication or authorization refused the call.
	AuthDenied = "denied"
)

// Values of AttrQuotaResult.
const (
	// QuotaNone: no quota policy applies to the call.
	QuotaNone = "none"
	// QuotaAllowed: every enforcing policy allowed the call.
	QuotaAllowed = "allowed"
	// QuotaRefused: a policy refused the call (RESOURCE_EXHAUSTED).
	QuotaRefused = "refused"
	// QuotaUnavailable: a fail-closed policy could not decide.
	QuotaUnavailable = "unavailable"
)

// ServerHandler returns the stats handler of the gateway's server when
// tracing is on: it attaches a callinfo.Info to each call (which the
// interceptors and the router then share) and makes the call's server span,
// child of the trace context the client sent (W3C traceparent, tracestate
// and baggage). The route, backend, decision and upstream attempts that the
// call recorded in its callinfo.Info become span attributes when it ends,
// and on every call how authentication ended (AttrAuthResult, with the
// credential in AttrAuth) and what quotas decided (AttrQuotaResult, with
// the enforcing policies the quota interceptor recorded in
// AttrQuotaPolicies; shadow policies are left out, as in the
// RateLimit-Policy header).
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
	if end, ok := rs.(*stats.End); ok {
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.SetAttributes(endAttributes(ctx, end.Error)...)
		}
	}
	h.trace.HandleRPC(ctx, rs)
}

// endAttributes are the attributes of a call's server span that the call
// recorded in its callinfo.Info: route, backend, attempts, the decision,
// and on every call the authentication result and the quota decision.
func endAttributes(ctx context.Context, err error) []attribute.KeyValue {
	ci := callinfo.From(ctx)
	route, backend := ci.Route()
	attempts, _ := ci.Upstream()
	d := ci.Decision()
	decision := "allowed"
	if d.Denied {
		decision = "denied"
	}
	attrs := make([]attribute.KeyValue, 0, 9)
	attrs = append(attrs,
		attribute.String(AttrRoute, route),
		attribute.String(AttrBackend, backend),
		attribute.Int(AttrAttempts, attempts),
		attribute.String(AttrDecision, decision),
	)
	if d.By != "" {
		attrs = append(attrs, attribute.String(AttrDecider, d.By))
	}
	p := ci.Principal()
	if p.Credential != "" {
		attrs = append(attrs, attribute.String(AttrAuth, p.Credential))
	}
	refusedBy, quotaDenied := strings.CutPrefix(d.By, "quota:")
	quotaDenied = quotaDenied && d.Denied
	authResult := AuthAnonymous
	switch {
	case d.Denied && !quotaDenied && d.By != "audit":
		authResult = AuthDenied // authentication, authorization or a rule
	case p.Credential != "":
		authResult = AuthAuthenticated
	}
	attrs = append(attrs, attribute.String(AttrAuthResult, authResult))
	policies := ci.Quota()
	quota := QuotaNone
	switch {
	case quotaDenied:
		quota = QuotaRefused
		if status.Code(err) == codes.Unavailable {
			quota = QuotaUnavailable // a fail-closed policy without its store
		}
		others := slices.DeleteFunc(slices.Clone(policies), func(p string) bool { return p == refusedBy })
		policies = append([]string{refusedBy}, others...) // the refusing policy first
	case len(policies) > 0:
		quota = QuotaAllowed
	}
	attrs = append(attrs, attribute.String(AttrQuotaResult, quota))
	if len(policies) > 0 {
		attrs = append(attrs, attribute.StringSlice(AttrQuotaPolicies, policies))
	}
	return attrs
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
