package edge

import (
	"context"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
	"github.com/gatehouse-dev/gatehouse/routing"
)

// ingress prepares a call before any other layer reads it: it decides
// where the call comes from (callinfo.Source: its x-forwarded-for is
// believed only through the trusted proxies of
// authentication.trusted_proxies), which the router, the access log, the
// audit trail, quotas, auth rules and the director then all use; and it
// removes inbound metadata under the identity keys (authentication.identity
// and internal_jwt.header), so that no route, rule or backend ever sees a
// client's claim to an identity.
func (g *Gateway) ingress(ctx context.Context) context.Context {
	var trusted callinfo.TrustedProxies
	var ids identityKeys
	if g.auth != nil {
		trusted, ids = g.auth.trusted, g.auth.identity
	} else {
		ids = identityKeys{subject: defaultSubjectKey, credential: defaultCredentialKey, claimsPrefix: defaultClaimsPrefix}
	}
	xff := metadata.ValueFromIncomingContext(ctx, callinfo.ForwardedForKey)
	ctx = callinfo.WithSource(ctx, callinfo.ResolveSource(ctx, metadata.MD{callinfo.ForwardedForKey: xff}, trusted))
	md, ok := metadata.FromIncomingContext(ctx) // a copy
	if !ok {
		return ctx
	}
	for k := range md {
		if ids.has(k) {
			delete(md, k)
		}
	}
	// The copy becomes the call's metadata, which the request ID and
	// authentication stages then use without copying it again.
	ctx, ci := callinfo.With(ctx)
	ctx = metadata.NewIncomingContext(ctx, md)
	ci.SetIncoming(md)
	return ctx
}

func (g *Gateway) ingressStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		w := middleware.WrapServerStream(ss)
		w.WrappedContext = g.ingress(ss.Context())
		return handler(srv, w)
	}
}

func (g *Gateway) ingressUnary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(g.ingress(ctx), req)
	}
}

// identityStrip are the director options that strip the identity keys
// from what a backend gets, before the gateway sets them: ingress removed
// them already, and this holds even for a call that skipped it.
func (g *Gateway) identityStrip() []routing.Option {
	ids := identityKeys{subject: defaultSubjectKey, credential: defaultCredentialKey, claimsPrefix: defaultClaimsPrefix}
	if g.auth != nil {
		ids = g.auth.identity
	}
	return []routing.Option{routing.WithStripKeys(ids.exact()...), routing.WithStripPrefixes(ids.claimsPrefix)}
}
