package routing

import (
	"context"

	"google.golang.org/grpc/metadata"
)

// RequestOf returns the Request the router builds for a call, every part
// filled in, so that code outside the router (the auth interceptor, which
// must know the route before the director runs) picks the same route with
// Table.MatchRequest as Router.Resolve does.
func RequestOf(ctx context.Context, fullMethod string, md metadata.MD) Request {
	return requestFrom(ctx, fullMethod, md, needHTTP|needSource|needClaims)
}

// UsesClaims reports whether any route's conditions (claims, or a CEL
// expression, which may read claims) depend on the caller's principal, in
// which case the route of a call is known only once the caller is
// authenticated.
func (t *Table) UsesClaims() bool { return t.needs&needClaims != 0 }
