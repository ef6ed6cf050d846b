package routing

import (
	"context"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Target is where the router sends one call.
type Target struct {
	// Route is the name of the route that matched.
	Route string
	// Backend is the name of the backend the route picked.
	Backend string
	// Conn is the pooled connection to that backend. The director opens one
	// stream on it per call and never closes it.
	Conn grpc.ClientConnInterface
	// Method is the method to call on the backend when the route rewrites
	// it; empty means the call's own method.
	Method string
	// Config is the matched route's configuration, for per-route policies
	// (timeouts, retries, limits). Nil for targets not made from config.
	Config *configv1.Route
	// Metadata are the route's changes to request metadata, applied after
	// the director's own sanitising; nil for none.
	Metadata *MetadataActions
	// Mirror, when set, is a shadow backend that gets a copy of this call;
	// its answer is discarded.
	Mirror *Shadow
}

// Shadow is a backend that receives a copy of a call.
type Shadow struct {
	// Backend is the shadow backend's name.
	Backend string
	// Conn is its pooled connection.
	Conn grpc.ClientConnInterface
}

// Resolver picks the Target for a call from its full method name
// ("/pkg.Service/Method") and its incoming metadata (which, for grpc-go,
// includes ":authority"). It must not block and must be safe for concurrent
// use. An error it returns should carry a gRPC status (UNIMPLEMENTED when no
// route matches, UNAVAILABLE when the backend is unknown); the director
// returns it to the client unchanged. md belongs to the call: Resolve may
// read it but must not keep or modify it, because the director sanitises it
// in place once Resolve returns.
type Resolver interface {
	Resolve(ctx context.Context, fullMethod string, md metadata.MD) (Target, error)
}

// ResolverFunc adapts a function to the Resolver interface.
type ResolverFunc func(ctx context.Context, fullMethod string, md metadata.MD) (Target, error)

// Resolve calls f.
func (f ResolverFunc) Resolve(ctx context.Context, fullMethod string, md metadata.MD) (Target, error) {
	return f(ctx, fullMethod, md)
}
