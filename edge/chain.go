package edge

import (
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/interceptors/accesslog"
	"github.com/gatehouse-dev/gatehouse/interceptors/recovery"
	"github.com/gatehouse-dev/gatehouse/interceptors/requestid"
	"github.com/gatehouse-dev/gatehouse/interceptors/validate"
	"github.com/gatehouse-dev/gatehouse/routing"
	"github.com/gatehouse-dev/gatehouse/telemetry"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// The interceptor chain is wired here and only here. Order, outermost first:
//
//  0. calls:     (client listeners) attaches the callinfo.Info that every
//     layer and the router share, and counts the call (in flight, then
//     by route, method and code with its duration: telemetry/calls.go).
//     It cannot panic, so it may sit outside recovery, whose INTERNAL it
//     then counts.
//  1. recovery:  a panic anywhere below becomes INTERNAL and is logged with
//     its stack; it must be outermost to catch the others' panics.
//  2. shed:      (client listeners with limits.max_concurrent_calls;
//     shed.go) refuses a call over the listener's cap at once with
//     RESOURCE_EXHAUSTED (503). Right inside calls and recovery, which
//     count it, and before everything that costs: a shed call pays for no
//     JWT check, quota lookup (nor uses up quota), audit record or decode.
//     It is therefore neither access-logged nor audited, and its response
//     carries no x-request-id: under overload, logging every refusal
//     would add load; the calls metrics count them by code. A route's own
//     max_concurrent_calls is applied later, by the director, once the
//     route is known.
//  3. ingress:   (ingress.go) decides where the call comes from, believing
//     x-forwarded-for only through trusted proxies, and removes inbound
//     identity metadata, before any layer reads either.
//  4. requestid: accepts or mints x-request-id before anything logs, so
//     that every line about the call carries it and the backend sees it.
//  5. accesslog: times the whole call below it and writes one line when it
//     ends, with the route and backend the router recorded, and sees the
//     UNAVAILABLE of a call that audit refused.
//  6. audit:     (when audit is configured) records who did what with which
//     decision and outcome, after the call; fails it closed when the
//     audit trail is down and on_sink_failure says so. Outside validate,
//     so that refused invalid requests are audited too.
//  7. auth:      (client listeners) resolves the route the call will take
//     and applies its auth block: credentials (UNAUTHENTICATED, 401 with
//     WWW-Authenticate), CEL rules (PERMISSION_DENIED, 403), the
//     listener's require_auth default-deny; establishes the principal that
//     quotas and routes key on and the identity the backend gets. Inside
//     audit and accesslog, so that refusals are logged and audited with
//     their decision; before quota and validate, so that unauthenticated
//     calls cost neither a quota lookup nor a decode.
//  8. quota:     (when quota policies are configured) refuses calls over a
//     rate limit or calendar quota (RESOURCE_EXHAUSTED, 429 for REST)
//     before any decoding, and sets the RateLimit headers; inside audit and
//     accesslog, so that refusals are logged and audited.
//  9. validate:  refuses invalid requests before they reach a handler or a
//     backend.
//
// Outside the chain, when tracing is on, the server's stats handler
// (telemetry.go) makes the call's server span, so the chain's interceptors
// already run inside the span.
//
// Proxied calls pass only through stream interceptors, so every concern has
// a stream variant; unary variants serve the gateway's own services.

// streamChain is the stream interceptor chain of a listener: lc is the
// client listener (nil for the admin listener) and shed its call cap (nil
// for none).
func (g *Gateway) streamChain(lc *configv1.Listener, shed *shedder) []grpc.StreamServerInterceptor {
	var c []grpc.StreamServerInterceptor
	if lc != nil {
		c = append(c, telemetry.StreamServerInterceptor(g.obs.metricsOrNil()))
	}
	c = append(c, recovery.StreamServerInterceptor(recovery.WithLogger(g.log)))
	c = append(c, shed.stream()...) // shed.go
	c = append(c,
		g.ingressStream(), // ingress.go
		requestid.StreamServerInterceptor(),
	)
	if g.opts.accessLogger != nil {
		c = append(c, accesslog.StreamServerInterceptor(g.opts.accessLogger, g.accessLogOptions()...))
	}
	c = append(c, g.obs.audit.stream()...)
	c = append(c, g.authStream(lc)...)   // auth.go
	c = append(c, g.quotaStream()...)    // quota.go
	return append(c, g.validateStream()) // schema.go: compiled-in and runtime-schema request types
}

// unaryChain is streamChain's unary twin, for the gateway's own services.
func (g *Gateway) unaryChain(lc *configv1.Listener, shed *shedder) []grpc.UnaryServerInterceptor {
	var c []grpc.UnaryServerInterceptor
	if lc != nil {
		c = append(c, telemetry.UnaryServerInterceptor(g.obs.metricsOrNil()))
	}
	c = append(c, recovery.UnaryServerInterceptor(recovery.WithLogger(g.log)))
	c = append(c, shed.unary()...) // shed.go
	c = append(c,
		g.ingressUnary(), // ingress.go
		requestid.UnaryServerInterceptor(),
	)
	if g.opts.accessLogger != nil {
		c = append(c, accesslog.UnaryServerInterceptor(g.opts.accessLogger, g.accessLogOptions()...))
	}
	c = append(c, g.obs.audit.unary()...)
	c = append(c, g.authUnary(lc)...) // auth.go
	c = append(c, g.quotaUnary()...)  // quota.go
	return append(c, validate.UnaryServerInterceptor(g.validator))
}

// compiledInRequestType returns the request type of a method whose schema is
// compiled into the binary, so that proxied calls to it are validated at the
// edge. Methods of unknown services pass undecoded.
func compiledInRequestType(fullMethod string) (protoreflect.MessageType, bool) {
	svc, method := routing.SplitMethod(fullMethod)
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, false
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, false
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return nil, false
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		return nil, false
	}
	return mt, true
}
