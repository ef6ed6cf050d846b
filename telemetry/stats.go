package telemetry

import (
	"context"
	"strconv"
	"strings"
	"sync"

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
	// the call (those whose RateLimit-Policy the client got), and on a
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

// headerRateLimitPolicy is the header the quota interceptor lists the
// enforcing policies of a call in (interceptors/quota.HeaderPolicy).
const headerRateLimitPolicy = "ratelimit-policy"

// ServerHandler returns the stats handler of the gateway's server when
// tracing is on: it attaches a callinfo.Info to each call (which the
// interceptors and the router then share) and makes the call's server span,
// child of the trace context the client sent (W3C traceparent, tracestate
// and baggage). The route, backend, decision and upstream attempts that the
// call recorded in its callinfo.Info become span attributes when it ends,
// and on every call how authentication ended (AttrAuthResult, with the
// credential in AttrAuth) and what quotas decided (AttrQuotaResult, with
// the enforcing policies in AttrQuotaPolicies, as the RateLimit-Policy
// header the client got lists them; shadow policies are not seen there).
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

// serverCall is what the server handler learns of a call before it ends:
// the quota policies in the headers it sent.
type serverCall struct {
	mu       sync.Mutex
	policies []string
}

type serverCallKey struct{}

func (h *serverHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	ctx, _ = callinfo.With(ctx)
	ctx = h.trace.TagRPC(ctx, info)
	if trace.SpanFromContext(ctx).IsRecording() {
		ctx = context.WithValue(ctx, serverCallKey{}, &serverCall{})
	}
	return ctx
}

func (h *serverHandler) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	switch rs := rs.(type) {
	case *stats.OutHeader:
		if sc, ok := ctx.Value(serverCallKey{}).(*serverCall); ok {
			if v := rs.Header.Get(headerRateLimitPolicy); len(v) > 0 {
				p := policyNames(v)
				sc.mu.Lock()
				sc.policies = p
				sc.mu.Unlock()
			}
		}
	case *stats.End:
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.SetAttributes(endAttributes(ctx, rs.Error)...)
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
	var policies []string
	if sc, ok := ctx.Value(serverCallKey{}).(*serverCall); ok {
		sc.mu.Lock()
		policies = sc.policies
		sc.mu.Unlock()
	}
	quota := QuotaNone
	switch {
	case quotaDenied:
		quota = QuotaRefused
		if status.Code(err) == codes.Unavailable {
			quota = QuotaUnavailable // a fail-closed policy without its store
		}
		policies = append([]string{refusedBy}, removeString(policies, refusedBy)...)
	case len(policies) > 0:
		quota = QuotaAllowed
	}
	attrs = append(attrs, attribute.String(AttrQuotaResult, quota))
	if len(policies) > 0 {
		attrs = append(attrs, attribute.StringSlice(AttrQuotaPolicies, policies))
	}
	return attrs
}

// policyNames returns the policy names of RateLimit-Policy values:
// `"name";q=10;w=60, "other";q=5;w=1`.
func policyNames(values []string) []string {
	var out []string
	for _, v := range values {
		for v != "" {
			v = strings.TrimLeft(v, ", ")
			q, err := strconv.QuotedPrefix(v)
			if err != nil {
				break
			}
			if name, err := strconv.Unquote(q); err == nil {
				out = append(out, name)
			}
			v = v[len(q):]
			i := strings.Index(v, ", ")
			if i < 0 {
				break
			}
			v = v[i:]
		}
	}
	return out
}

// removeString returns list without s.
func removeString(list []string, s string) []string {
	out := make([]string, 0, len(list))
	for _, e := range list {
		if e != s {
			out = append(out, e)
		}
	}
	return out
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
