package callinfo

import "context"

// Principal is who made a call, as authentication established it.
type Principal struct {
	// Subject identifies the caller (a JWT "sub", an API key's identity, a
	// certificate's SPIFFE ID).
	Subject string
	// Credential names how the caller authenticated, e.g. "jwt:corp".
	Credential string
	// Claims are the caller's verified claims (JWT claims, API key labels).
	Claims map[string]any
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p. Authentication calls it before the
// router runs, so that routes can match on claims.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal attached to ctx; the zero Principal
// (no subject, no claims) when the call is unauthenticated.
func PrincipalFrom(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}
