package edge

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/interceptors/auth"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
	"github.com/gatehouse-dev/gatehouse/routing"
	"github.com/gatehouse-dev/gatehouse/telemetry"
	"github.com/gatehouse-dev/gatehouse/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// WithAuthOptions adds options to the authenticator, for example a clock or
// an HTTP client that trusts a test CA for JWKS fetches.
func WithAuthOptions(opts ...auth.Option) Option {
	return optionFunc(func(o *options) { o.auth = append(o.auth, opts...) })
}

// defaultClockSkew is authentication.clock_skew's default.
const defaultClockSkew = 60 * time.Second

// authState is the gateway's authentication: the authenticator built from
// the config's authentication section (which needs a restart to change) and
// the compiled auth blocks of the routes in force (which reload).
type authState struct {
	a        *auth.Authenticator
	log      authLogger
	policies atomic.Pointer[policyCache]

	// trusted are the proxies whose x-forwarded-for is believed
	// (authentication.trusted_proxies).
	trusted callinfo.TrustedProxies
	// identity are the keys of the identity passed to backends
	// (authentication.identity); minter signs the internal JWT, nil when off.
	identity identityKeys
	minter   *auth.Minter
}

// identityKeys are the metadata keys that only the gateway sets.
type identityKeys struct {
	subject, credential, claimsPrefix, jwt string
}

// Defaults of authentication.identity and authentication.internal_jwt.
const (
	defaultSubjectKey    = "x-gatehouse-subject"
	defaultCredentialKey = "x-gatehouse-credential"
	defaultClaimsPrefix  = "x-gatehouse-claims-"
	defaultJWTKey        = "x-gatehouse-jwt"
)

// identityConfig returns the identity keys of cfg, defaults filled in.
func identityConfig(cfg *configv1.Config) identityKeys {
	ac := cfg.GetAuthentication()
	k := identityKeys{
		subject:      cmp.Or(ac.GetIdentity().GetSubjectHeader(), defaultSubjectKey),
		credential:   cmp.Or(ac.GetIdentity().GetCredentialHeader(), defaultCredentialKey),
		claimsPrefix: cmp.Or(ac.GetIdentity().GetClaimsPrefix(), defaultClaimsPrefix),
	}
	if ac.GetInternalJwt() != nil {
		k.jwt = cmp.Or(ac.GetInternalJwt().GetHeader(), defaultJWTKey)
	}
	return k
}

// exact are the keys matched exactly; claimsPrefix is matched as a prefix.
func (k identityKeys) exact() []string {
	out := []string{k.subject, k.credential}
	if k.jwt != "" {
		out = append(out, k.jwt)
	}
	return out
}

// has reports whether key (lower case) is an identity key.
func (k identityKeys) has(key string) bool {
	return key == k.subject || key == k.credential || (k.jwt != "" && key == k.jwt) || strings.HasPrefix(key, k.claimsPrefix)
}

type authLogger interface {
	Warn(msg string, args ...any)
}

// policyCache holds the compiled auth blocks of one route table; a reload
// swaps the table and so starts a new cache.
type policyCache struct {
	table    *routing.Table
	byClaims bool
	compiled sync.Map // *configv1.Route -> policyEntry
}

type policyEntry struct {
	p   *auth.Policy
	err error
}

// newAuthState builds the authenticator of cfg: it reads key files (errors
// name their field) and starts fetching JWKS documents.
// Failures are counted in m (nil: metrics off).
func newAuthState(cfg *configv1.Config, o options, m *telemetry.Metrics) (*authState, error) {
	ac := cfg.GetAuthentication()
	trusted, err := callinfo.NewTrustedProxies(ac.GetTrustedProxies())
	if err != nil {
		return nil, fmt.Errorf("authentication.trusted_proxies: %w", err)
	}
	s := &authState{log: o.logger, trusted: trusted, identity: identityConfig(cfg)}
	if ij := ac.GetInternalJwt(); ij != nil {
		key, err := tlsconfig.ReadSecret(ij.GetSigningKeyFile())
		if err != nil {
			return nil, fmt.Errorf("authentication.internal_jwt.signing_key_file: %w", err)
		}
		spec := auth.InternalJWT{
			SigningKey: key, KeyID: ij.GetKeyId(), Issuer: ij.GetIssuer(), Audience: ij.GetAudience(),
			Header: s.identity.jwt,
		}
		if d := ij.GetLifetime(); d != nil {
			spec.Lifetime = d.AsDuration()
		}
		if s.minter, err = auth.NewMinter(spec, o.auth...); err != nil {
			return nil, fmt.Errorf("authentication.internal_jwt.signing_key_file: %s: %w", ij.GetSigningKeyFile(), err)
		}
	}
	opts := []auth.Option{auth.WithLogger(o.logger)}
	if m != nil {
		opts = append(opts, auth.WithDenialHook(m.AuthFailed))
	}
	if s.a, err = auth.New(authConfig(cfg), append(opts, o.auth...)...); err != nil {
		return nil, fmt.Errorf("authentication: %w", err)
	}
	return s, nil
}

// authConfig turns the config's authentication section into the
// authenticator's.
func authConfig(cfg *configv1.Config) auth.Config {
	ac := cfg.GetAuthentication()
	out := auth.Config{ClockSkew: defaultClockSkew}
	if d := ac.GetClockSkew(); d != nil {
		out.ClockSkew = d.AsDuration()
	}
	for i, p := range ac.GetJwt() {
		jp := auth.JWTProvider{
			Name: p.GetName(), Issuer: p.GetIssuer(), Audiences: p.GetAudiences(),
			JWKSURI: p.GetJwksUri(), JWKSFile: p.GetJwksFile(),
			JWKSFileField: fmt.Sprintf("authentication.jwt[%d].jwks_file", i),
			Algorithms:    p.GetAlgorithms(),
			Header:        p.GetFrom().GetHeader(), Query: p.GetFrom().GetQuery(),
		}
		if d := p.GetJwksRefreshInterval(); d != nil {
			jp.Refresh = d.AsDuration()
		}
		out.JWT = append(out.JWT, jp)
	}
	for i, k := range ac.GetApiKeys() {
		ks := auth.APIKeySet{
			Name: k.GetName(), KeysFile: k.GetKeysFile(), Header: k.GetHeader(),
			KeysFileField: fmt.Sprintf("authentication.api_keys[%d].keys_file", i),
		}
		for _, key := range k.GetKeys() {
			ks.Keys = append(ks.Keys, auth.APIKey{ID: key.GetId(), SHA256: key.GetSha256(), Labels: key.GetLabels()})
		}
		out.APIKeys = append(out.APIKeys, ks)
	}
	return out
}

// close stops JWKS fetches.
func (s *authState) close() {
	if s != nil {
		s.a.Close()
	}
}

// Authenticator returns the gateway's authenticator (for tests and metrics).
func (g *Gateway) Authenticator() *auth.Authenticator { return g.auth.a }

// cache returns the policy cache of table t. Only the cache of the table
// in force (current) is kept: a call still pinned to an older table gets a
// throwaway cache, so that it does not evict the current one.
func (s *authState) cache(t, current *routing.Table) *policyCache {
	if c := s.policies.Load(); c != nil && c.table == t {
		return c
	}
	c := &policyCache{table: t, byClaims: t.UsesClaims()}
	if t == current {
		s.policies.Store(c)
	}
	return c
}

// policy returns the compiled auth block of route rc; nil when it has none.
func (s *authState) policy(c *policyCache, rc *configv1.Route) (*auth.Policy, error) {
	ra := rc.GetAuth()
	if ra == nil {
		return nil, nil
	}
	if v, ok := c.compiled.Load(rc); ok {
		e := v.(policyEntry)
		return e.p, e.err
	}
	p, err := auth.NewPolicy(auth.PolicySpec{
		Require: ra.GetRequire(), Rules: ra.GetRules(),
		ForwardToken: ra.GetForwardToken(), ForwardClaims: ra.GetForwardClaims(),
	})
	if err == nil {
		for _, name := range ra.GetRequire() {
			if !s.a.Has(name) {
				s.log.Warn("route requires a credential that is not configured (authentication needs a restart to change); its calls are refused",
					"route", rc.GetName(), "credential", name)
			}
		}
	} else {
		s.log.Warn("route auth block does not compile; its calls are refused", "route", rc.GetName(), "error", err)
	}
	c.compiled.Store(rc, policyEntry{p: p, err: err})
	return p, err
}

// authRoutes is the auth interceptor's view of the router: the route the
// call takes, with its auth block, from the table pinned to the call
// (routing.Router.Match), which the quota layer and the director use too.
func (g *Gateway) authRoutes(ctx context.Context, fullMethod string, md metadata.MD) (auth.Route, bool) {
	t, rt, ok := g.router.Match(ctx, fullMethod, md)
	c := g.auth.cache(t, g.router.Table())
	if !ok {
		return auth.Route{ByPrincipal: c.byClaims}, false
	}
	p, err := g.auth.policy(c, rt.Config)
	return auth.Route{Name: rt.Name, Policy: p, Invalid: err, ByPrincipal: c.byClaims}, true
}

// exemptFromAuth names the methods a default-deny listener serves without
// credentials when no route takes them: health checks.
func exemptFromAuth(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/")
}

// authStream returns the auth interceptor of a client listener; none for
// the admin listener (l nil).
func (g *Gateway) authStream(l *configv1.Listener) []grpc.StreamServerInterceptor {
	if l == nil || g.auth == nil {
		return nil
	}
	return []grpc.StreamServerInterceptor{auth.StreamServerInterceptor(g.auth.a, g.authRoutes, g.auth.listenerOptions(l)...)}
}

func (g *Gateway) authUnary(l *configv1.Listener) []grpc.UnaryServerInterceptor {
	if l == nil || g.auth == nil {
		return nil
	}
	return []grpc.UnaryServerInterceptor{auth.UnaryServerInterceptor(g.auth.a, g.authRoutes, g.auth.listenerOptions(l)...)}
}

func (s *authState) listenerOptions(l *configv1.Listener) []auth.Option {
	return []auth.Option{
		auth.WithRequireAuth(l.GetRequireAuth()), auth.WithExempt(exemptFromAuth),
		auth.WithIdentityKeys(s.identity.subject, s.identity.credential, s.identity.claimsPrefix),
		auth.WithInternalJWT(s.minter),
	}
}

// withIdentity wraps the director's resolver: the call must resolve to the
// route the auth interceptor approved (it does: both match against the
// table pinned to the call, see routing.Router.Match), and the route's
// metadata actions get the identity for the
// backend and the removal of credentials the route does not relay. The
// identity keys are the gateway's alone: a route's own actions on them are
// dropped.
func (g *Gateway) withIdentity(r routing.Resolver) routing.Resolver {
	return routing.ResolverFunc(func(ctx context.Context, fullMethod string, md metadata.MD) (routing.Target, error) {
		f, ok := auth.ForwardFrom(ctx)
		if !ok {
			// Every call on a client listener passes the auth interceptor.
			return routing.Target{}, status.Error(codes.Internal, "gatehouse: call not checked by the auth interceptor")
		}
		t, err := r.Resolve(ctx, fullMethod, md)
		if err != nil {
			return t, err
		}
		if t.Route != f.Route {
			// Cannot happen while the table is pinned to the call; refuse
			// rather than apply another route's identity.
			return routing.Target{}, status.Errorf(codes.Internal, "gatehouse: the call resolved to another route than the one approved")
		}
		if len(f.Remove) == 0 && len(f.Set) == 0 {
			return t, nil
		}
		t.Metadata = identityActions(t.Metadata, f)
		return t, nil
	})
}

// identityActions returns the route's metadata actions with the identity
// added: credentials removed, identity keys set, and the route's own
// actions on identity keys dropped. base is shared by every call of the
// route and is not modified.
func identityActions(base *routing.MetadataActions, f auth.Forward) *routing.MetadataActions {
	isIdentity := func(k string) bool {
		for _, ik := range f.IdentityKeys {
			if k == ik || (strings.HasSuffix(ik, "-") && strings.HasPrefix(k, ik)) {
				return true
			}
		}
		return false
	}
	out := &routing.MetadataActions{}
	if base != nil {
		out.Remove = append(out.Remove, base.Remove...)
		for _, kv := range base.Set {
			if !isIdentity(kv.Key) {
				out.Set = append(out.Set, kv)
			}
		}
		for _, kv := range base.Add {
			if !isIdentity(kv.Key) {
				out.Add = append(out.Add, kv)
			}
		}
	}
	out.Remove = append(out.Remove, f.Remove...)
	// Credentials stripped win over a route that sets the same key.
	if len(f.Remove) > 0 {
		kept := out.Set[:0:0]
		for _, kv := range out.Set {
			if !contains(f.Remove, kv.Key) {
				kept = append(kept, kv)
			}
		}
		out.Set = kept
	}
	for _, kv := range f.Set {
		out.Set = append(out.Set, routing.KeyValue{Key: kv[0], Value: kv[1]})
	}
	return out
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// clientCertMetadata passes the client certificate a TLS listener verified
// to the in-process call of a REST or browser request (as metadata trusted
// only in process), so that routes requiring "mtls" hold for them as for
// native gRPC calls.
func clientCertMetadata(_ context.Context, r *http.Request) metadata.MD {
	if r.TLS == nil {
		return nil
	}
	return auth.CertMetadata(r.TLS.VerifiedChains)
}
