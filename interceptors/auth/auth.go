package auth

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

// Config lists the credential checkers.
type Config struct {
	// JWT are the JWT providers.
	JWT []JWTProvider
	// APIKeys are the API key sets.
	APIKeys []APIKeySet
	// ClockSkew is allowed when checking exp, nbf and iat. Zero means
	// none; the config's default is 60s.
	ClockSkew time.Duration
}

// Authenticator checks credentials. Build one with [New], share it between
// the interceptors of every listener, and Close it when the gateway stops.
// It is safe for concurrent use.
type Authenticator struct {
	opts      options
	skew      time.Duration
	client    *http.Client
	ownClient bool

	jwt  map[string]*jwtProvider
	keys map[string]*keySet
	// order is every credential name in the order they are tried when
	// route selection depends on the principal: mtls, JWT providers, API
	// key sets, each in config order.
	order []string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // JWKS fetches

	mu      sync.Mutex
	denials map[string]uint64
}

// New builds an Authenticator: it reads every key file (an error names the
// file's config field) and starts fetching every JWKS URL in the
// background.
func New(cfg Config, opts ...Option) (*Authenticator, error) {
	o := evaluate(opts)
	ctx, cancel := context.WithCancel(context.Background())
	a := &Authenticator{
		opts: o, skew: cfg.ClockSkew, client: o.client,
		jwt: map[string]*jwtProvider{}, keys: map[string]*keySet{},
		order: []string{MTLS}, ctx: ctx, cancel: cancel, denials: map[string]uint64{},
	}
	if a.client == nil {
		a.ownClient = true
		a.client = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			Timeout:   o.fetchTimeout,
			// A JWKS URL is configured exactly; a redirect could take the
			// fetch anywhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	for _, s := range cfg.JWT {
		if err := a.checkName(s.Name); err != nil {
			a.Close()
			return nil, err
		}
		p, err := newJWTProvider(a, s)
		if err != nil {
			a.Close()
			return nil, err
		}
		a.jwt[s.Name] = p
		a.order = append(a.order, s.Name)
	}
	for _, s := range cfg.APIKeys {
		if err := a.checkName(s.Name); err != nil {
			a.Close()
			return nil, err
		}
		ks, err := newKeySet(s, &a.opts)
		if err != nil {
			a.Close()
			return nil, err
		}
		a.keys[s.Name] = ks
		a.order = append(a.order, s.Name)
	}
	for _, name := range a.order[1:] {
		if p := a.jwt[name]; p != nil {
			p.start()
		}
	}
	return a, nil
}

func (a *Authenticator) checkName(name string) error {
	if name == "" || name == MTLS || name == None || slices.Contains(a.order, name) {
		return fmt.Errorf("credential name %q is empty, reserved or used twice", name)
	}
	return nil
}

// Close stops JWKS fetches and waits for those under way.
func (a *Authenticator) Close() {
	if a == nil {
		return
	}
	a.cancel()
	a.wg.Wait()
	if a.ownClient {
		a.client.CloseIdleConnections()
	}
}

// Has reports whether name is a configured credential, MTLS or None: a
// name a route's require list may give.
func (a *Authenticator) Has(name string) bool {
	_, j := a.jwt[name]
	_, k := a.keys[name]
	return name == MTLS || name == None || j || k
}

// JWKSFetches returns how many JWKS fetches provider started (for tests
// and metrics).
func (a *Authenticator) JWKSFetches(provider string) int64 {
	if p := a.jwt[provider]; p != nil {
		return p.Fetches()
	}
	return 0
}

// Denials returns the refusals so far, counted by reason:
// "missing_credentials", "invalid_credentials", "rule", "require_auth",
// "route_changed".
func (a *Authenticator) Denials() map[string]uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.denials)
}

// result is the outcome of one credential check within a call.
type result struct {
	presented bool
	err       error
	principal callinfo.Principal
	cert      *clientCert
}

// call holds one call's facts while it is checked.
type call struct {
	a      *Authenticator
	ctx    context.Context
	md     metadata.MD
	inProc bool
	cert   *clientCert
	done   map[string]*result
}

// check verifies the credential name once per call.
func (c *call) check(name string) *result {
	if r, ok := c.done[name]; ok {
		return r
	}
	r := c.verify(name)
	c.done[name] = r
	return r
}

func (c *call) verify(name string) *result {
	a := c.a
	if name == MTLS {
		if c.cert == nil {
			return &result{}
		}
		return &result{presented: true, cert: c.cert, principal: callinfo.Principal{
			Subject: c.cert.subject(), Credential: MTLS,
			Claims: map[string]any{"uri_sans": c.cert.uris, "dns_sans": c.cert.dns},
		}}
	}
	if p := a.jwt[name]; p != nil {
		tok, err := p.src.extract(c.md, c.inProc)
		if err != nil {
			return &result{presented: true, err: err}
		}
		if tok == "" {
			return &result{}
		}
		if len(tok) > a.opts.maxTokenBytes {
			return &result{presented: true, err: fmt.Errorf("token of %d bytes, more than %d", len(tok), a.opts.maxTokenBytes)}
		}
		claims, sum, ok := p.cached(tok) // a token verified lately: no parsing at all
		if ok {
			return jwtResult(name, claims)
		}
		hs, ps, err := splitToken(tok)
		if err != nil {
			return &result{presented: true, err: err}
		}
		iss, err := peekIssuer(ps)
		if err != nil {
			return &result{presented: true, err: err}
		}
		if iss != p.issuer {
			return &result{presented: true, err: errors.New("issuer not this provider's")}
		}
		claims, err = p.verify(c.ctx, tok, hs, ps, sum)
		if err != nil {
			return &result{presented: true, err: err}
		}
		return jwtResult(name, claims)
	}
	if ks := a.keys[name]; ks != nil {
		key, err := tokenSource{header: ks.header}.extract(c.md, c.inProc)
		if err != nil {
			return &result{presented: true, err: err}
		}
		if key == "" {
			return &result{}
		}
		if len(key) > a.opts.maxTokenBytes {
			return &result{presented: true, err: errors.New("API key too long")}
		}
		e, ok := ks.verify(key)
		if !ok {
			return &result{presented: true, err: errors.New("unknown API key")}
		}
		claims := make(map[string]any, len(e.labels))
		for k, v := range e.labels {
			claims[k] = v
		}
		return &result{presented: true, principal: callinfo.Principal{Subject: e.id, Credential: "apikey:" + name, Claims: claims}}
	}
	return &result{err: fmt.Errorf("credential %q is not configured", name)}
}

// jwtResult is the result of a token provider name verified.
func jwtResult(name string, claims map[string]any) *result {
	sub, _ := claims["sub"].(string)
	return &result{presented: true, principal: callinfo.Principal{Subject: sub, Credential: "jwt:" + name, Claims: claims}}
}

// carriers are the metadata keys that carry the credentials of names.
func (a *Authenticator) carriers(names []string) []string {
	var out []string
	for _, n := range names {
		var k string
		if p := a.jwt[n]; p != nil {
			k = p.src.carrier()
		} else if ks := a.keys[n]; ks != nil {
			k = ks.header
		}
		if k != "" && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// challenge is the WWW-Authenticate value of an UNAUTHENTICATED answer,
// which is also its status message: grpc-gateway copies that message into
// the header of the 401.
func (a *Authenticator) challenge(names []string, invalid bool) string {
	for _, n := range names {
		if a.jwt[n] != nil {
			if invalid {
				return `Bearer realm="gatehouse", error="invalid_token"`
			}
			return `Bearer realm="gatehouse"`
		}
	}
	for _, n := range names {
		if ks := a.keys[n]; ks != nil {
			return fmt.Sprintf(`APIKey realm="gatehouse", header=%q`, ks.header)
		}
	}
	return `ClientCertificate realm="gatehouse"`
}

// Forward is what an approved call carries to the director: the route it
// was approved for and the metadata changes for the backend.
type Forward struct {
	// Route is the route the call was approved for; "" when no route took
	// it. The director must refuse the call if it resolves another route
	// (the table was swapped in between).
	Route string
	// Remove lists the credential keys to strip (unless the route relays
	// the token).
	Remove []string
	// Set lists the identity keys and values for the backend.
	Set [][2]string
	// IdentityKeys are the keys of the identity metadata (and the internal
	// JWT's), then the claims prefix, ending in "-": nothing else may set
	// them.
	IdentityKeys []string
}

type forwardKey struct{}

// ForwardFrom returns the Forward the interceptor attached to ctx.
func ForwardFrom(ctx context.Context) (Forward, bool) {
	f, ok := ctx.Value(forwardKey{}).(*Forward)
	if !ok {
		return Forward{}, false
	}
	return *f, true
}

// guard is one listener's interceptor state.
type guard struct {
	a      *Authenticator
	routes RouteFunc
	o      options
}

// StreamServerInterceptor returns a stream server interceptor that applies
// the policy of the route that takes each call (see the package
// documentation).
func StreamServerInterceptor(a *Authenticator, routes RouteFunc, opts ...Option) grpc.StreamServerInterceptor {
	g := &guard{a: a, routes: routes, o: evaluate(opts)}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := g.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		w := middleware.WrapServerStream(ss)
		w.WrappedContext = ctx
		return handler(srv, w)
	}
}

// UnaryServerInterceptor returns the unary variant of
// StreamServerInterceptor.
func UnaryServerInterceptor(a *Authenticator, routes RouteFunc, opts ...Option) grpc.UnaryServerInterceptor {
	g := &guard{a: a, routes: routes, o: evaluate(opts)}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := g.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// Status messages: no more detail than the client needs.
const msgDenied = "gatehouse: permission denied"

// authorize decides one call and returns the context to continue with.
func (g *guard) authorize(ctx context.Context, method string) (context.Context, error) {
	a := g.a
	md, ok := callinfo.From(ctx).Incoming() // read only: no copy
	if !ok {
		md, _ = metadata.FromIncomingContext(ctx)
	}
	inProc := inProcess(ctx)
	c := &call{a: a, ctx: ctx, md: md, inProc: inProc, cert: peerCert(ctx, md, inProc), done: map[string]*result{}}

	r, found := g.routes(ctx, method, md)
	var first *result // the first credential that verified, when the route depends on it
	if r.ByPrincipal {
		for _, name := range a.order {
			if res := c.check(name); res.err == nil && res.presented {
				first = res
				break
			}
		}
		if first != nil {
			r, found = g.routes(callinfo.WithPrincipal(ctx, first.principal), method, md)
		}
	}
	approve := func(res *result, f *Forward) context.Context {
		if res != nil {
			ctx = callinfo.WithPrincipal(ctx, res.principal)
			callinfo.From(ctx).SetPrincipal(res.principal)
		}
		return context.WithValue(ctx, forwardKey{}, f)
	}
	if !found {
		if g.o.requireAuth && !g.o.exempt(method) {
			return nil, g.deny(ctx, codes.PermissionDenied, msgDenied, "require_auth", method, "", "no route takes the call and the listener requires auth")
		}
		return approve(first, &Forward{}), nil
	}
	if r.Invalid != nil {
		return nil, g.deny(ctx, codes.PermissionDenied, msgDenied, "invalid_policy", method, r.Name, r.Invalid.Error())
	}
	pol := r.Policy
	if pol == nil {
		if g.o.requireAuth {
			return nil, g.deny(ctx, codes.PermissionDenied, msgDenied, "require_auth", method, r.Name, "the route has no auth block and the listener requires auth")
		}
		return approve(first, &Forward{Route: r.Name}), nil
	}
	if pol.public {
		// require: [none]: no credential is checked, the rules are.
		if err := g.checkRules(ctx, c, method, r.Name, pol, &result{}); err != nil {
			return nil, err
		}
		f := &Forward{Route: r.Name, IdentityKeys: g.identityKeys()}
		if !pol.forwardToken {
			f.Remove = a.carriers(a.order)
		}
		return approve(first, f), nil
	}

	var chosen *result
	invalid := false
	var why []string
	for _, name := range pol.require {
		res := c.check(name)
		if res.err == nil && res.presented {
			chosen = res
			break
		}
		if res.presented {
			invalid = true
		}
		if res.err != nil {
			why = append(why, name+": "+res.err.Error())
		}
	}
	if chosen == nil {
		reason := "missing_credentials"
		if invalid {
			reason = "invalid_credentials"
		}
		detail := "no credential the route accepts"
		if len(why) > 0 {
			detail = strings.Join(why, "; ")
		}
		return nil, g.deny(ctx, codes.Unauthenticated, a.challenge(pol.require, invalid), reason, method, r.Name, detail)
	}
	if r.ByPrincipal && chosen != first {
		// The route was picked with another principal: ask again with
		// this one, and refuse if the answer changes.
		r2, ok := g.routes(callinfo.WithPrincipal(ctx, chosen.principal), method, md)
		if !ok || r2.Name != r.Name {
			return nil, g.deny(ctx, codes.PermissionDenied, msgDenied, "route_changed", method, r.Name, "the route depends on which credential is used")
		}
	}
	if err := g.checkRules(ctx, c, method, r.Name, pol, chosen); err != nil {
		callinfo.From(ctx).SetPrincipal(chosen.principal)
		return nil, err
	}
	f := &Forward{Route: r.Name, IdentityKeys: g.identityKeys()}
	if !pol.forwardToken {
		f.Remove = a.carriers(pol.require)
	}
	if chosen.principal.Subject != "" && validValue(chosen.principal.Subject) {
		f.Set = append(f.Set, [2]string{g.o.subjectKey, chosen.principal.Subject})
	}
	f.Set = append(f.Set, [2]string{g.o.credentialKey, chosen.principal.Credential})
	for _, name := range pol.forwardClaims {
		if v, ok := claimString(chosen.principal.Claims[name]); ok {
			f.Set = append(f.Set, [2]string{g.o.claimsPrefix + name, v})
		}
	}
	if m := g.o.minter; m != nil {
		tok, err := m.Mint(chosen.principal, pol.forwardClaims)
		if err != nil {
			a.opts.logger.Error("internal JWT not signed; call refused", "method", method, "route", r.Name, "error", err)
			return nil, status.Error(codes.Internal, "gatehouse: internal error")
		}
		f.Set = append(f.Set, [2]string{m.Header(), "Bearer " + tok})
	}
	return approve(chosen, f), nil
}

// checkRules evaluates the rules of pol for the credential res (empty for
// a route that requires none) and returns the refusal of the first that
// does not hold; nil when all hold.
func (g *guard) checkRules(ctx context.Context, c *call, method, route string, pol *Policy, res *result) error {
	if len(pol.rules) == 0 {
		return nil
	}
	i, err := pol.evalRules(g.vars(ctx, c, method, route, res))
	if i < 0 {
		return nil
	}
	detail := fmt.Sprintf("rule %q is false", pol.rules[i].src)
	if err != nil {
		detail = fmt.Sprintf("rule %q: %v", pol.rules[i].src, err)
	}
	return g.denyBy(ctx, codes.PermissionDenied, msgDenied, "rule", fmt.Sprintf("%s.auth.rules[%d]", route, i), method, route, detail)
}

// identityKeys are the metadata keys (and, last, the claims prefix) that
// only the gateway sets.
func (g *guard) identityKeys() []string {
	keys := []string{g.o.subjectKey, g.o.credentialKey}
	if g.o.minter != nil {
		keys = append(keys, g.o.minter.Header())
	}
	return append(keys, g.o.claimsPrefix)
}

func (g *guard) deny(ctx context.Context, code codes.Code, msg, reason, method, route, detail string) error {
	by := "authentication"
	if code == codes.PermissionDenied {
		by = "authorization"
	}
	return g.denyBy(ctx, code, msg, reason, by, method, route, detail)
}

func (g *guard) denyBy(ctx context.Context, code codes.Code, msg, reason, by, method, route, detail string) error {
	a := g.a
	a.mu.Lock()
	a.denials[reason]++
	a.mu.Unlock()
	if a.opts.onDeny != nil {
		a.opts.onDeny(reason, route)
	}
	callinfo.From(ctx).SetDecision(callinfo.Decision{Denied: true, By: by})
	a.opts.logger.Info("call refused", "method", method, "route", route, "code", code.String(), "reason", reason, "detail", detail)
	return status.Error(code, msg)
}

// vars builds the CEL variables of a rule evaluation.
func (g *guard) vars(ctx context.Context, c *call, method, route string, res *result) map[string]any {
	mdv := make(map[string]string, len(c.md))
	for k, v := range c.md {
		if len(v) > 0 {
			mdv[k] = v[0]
		}
	}
	claims := res.principal.Claims
	if claims == nil {
		claims = map[string]any{}
	}
	labels := map[string]any{}
	if strings.HasPrefix(res.principal.Credential, "apikey:") {
		labels = claims
	}
	peer := map[string]any{"address": peerIP(ctx, c.md), "uri_sans": []string{}, "dns_sans": []string{}}
	if c.cert != nil {
		peer["uri_sans"] = c.cert.uris
		peer["dns_sans"] = c.cert.dns
	}
	return map[string]any{
		"method":   method,
		"route":    route,
		"metadata": mdv,
		"principal": map[string]any{
			"subject": res.principal.Subject, "credential": res.principal.Credential,
			"labels": labels, "claims": claims,
		},
		"claims": claims,
		"peer":   peer,
	}
}

// maxClaimValue bounds a claim forwarded as metadata.
const maxClaimValue = 4 << 10

// claimString renders a claim as a metadata value: strings as they are,
// lists of strings joined with ",", numbers and booleans in JSON. Claims
// that are not printable ASCII, or too long, are not forwarded.
func claimString(v any) (string, bool) {
	var s string
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		s = x
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			es, ok := e.(string)
			if !ok {
				return "", false
			}
			parts = append(parts, es)
		}
		s = strings.Join(parts, ",")
	case []string:
		s = strings.Join(x, ",")
	case bool, int64, float64, int:
		s = fmt.Sprint(x)
	default:
		return "", false
	}
	if len(s) > maxClaimValue || !validValue(s) {
		return "", false
	}
	return s, true
}

// validValue reports whether s is printable ASCII, as metadata values must
// be.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
