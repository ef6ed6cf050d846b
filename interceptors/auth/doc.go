// Package auth authenticates and authorizes calls at the edge, once, so
// that backends can trust what reaches them.
//
// An [Authenticator] holds the credential checkers the configuration names:
// JWT providers (issuer, audiences, allowed algorithms, keys from a JWKS URL
// or file, cached and refreshed), API key sets (SHA-256 hashes only, from
// config or a file that is reread when it changes) and verified client
// certificates ("mtls"). [StreamServerInterceptor] and
// [UnaryServerInterceptor] apply, per call, the policy of the route that
// takes it ([RouteFunc]): which credentials the route accepts (or [None],
// for a route public on purpose), then its CEL rules (see package
// internal/authcel for their variables).
//
// Answers, and only as much detail as the client needs:
//
//   - no acceptable credential, or one that does not verify:
//     UNAUTHENTICATED, whose message is a WWW-Authenticate challenge
//     (grpc-gateway copies the message of an UNAUTHENTICATED status into
//     that header, so REST clients get 401 with it);
//   - a rule says no, or the listener requires auth and the route has no
//     auth block: PERMISSION_DENIED (403).
//
// The precise reason is logged and counted ([Authenticator.Denials]).
//
// Safe by default: exp is required; exp, nbf and iat are checked with the
// configured skew; only asymmetric algorithms from the provider's list are
// accepted, and the token's alg must fit the key it names (key type, curve,
// and the JWK's own alg when it has one); tokens with jku, x5u or jwk
// headers are refused and those URLs are never fetched; tokens are bounded
// in size and checked for shape before anything is decoded. A JWKS is
// fetched at start, again every refresh interval, and for an unknown kid at
// most once per interval; while the endpoint is down the cached keys keep
// working, and with no keys at all calls are refused, never let through.
//
// A call that passes carries its [callinfo.Principal] in its context (the
// router matches routes' claims conditions on it) and in its callinfo.Info
// (the access log and the audit trail read it there), and its [Forward]:
// the identity metadata the backend gets (x-gatehouse-subject,
// x-gatehouse-credential, x-gatehouse-claims-<name>; [WithIdentityKeys]
// renames them), with [WithInternalJWT] a short-lived token signed by the
// gateway ([Minter]), and the credential headers stripped unless the route
// relays the token. The gateway strips every inbound key under those names
// before that, so no client can claim an identity. Refusals are counted by
// reason and route ([WithDenialHook]).
//
// Install it after the access log and audit, before quotas and validation,
// and install both variants: proxied calls pass only through stream
// interceptors.
package auth
