package edge

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/routing"
	"google.golang.org/grpc/metadata"
)

// CORSPolicy is a cross-origin resource sharing policy for a listener or a
// route; it mirrors the config's cors block (listeners[].cors,
// routes[].cors). The zero value allows no origin.
type CORSPolicy struct {
	// AllowedOrigins are the origins allowed to call: "*" (any), an exact
	// origin "https://app.example.com", or a wildcard subdomain
	// "https://*.example.org" (a.example.org and a.b.example.org, not
	// example.org). Compared case-insensitively.
	AllowedOrigins []string
	// AllowedMethods are the methods a preflight may ask for. Default GET,
	// HEAD, POST, PUT, PATCH, DELETE.
	AllowedMethods []string
	// AllowedHeaders are the request headers a preflight may ask for; "*"
	// allows any. Default: DefaultCORSAllowedHeaders.
	AllowedHeaders []string
	// ExposedHeaders are response headers scripts may read, besides
	// DefaultCORSExposedHeaders.
	ExposedHeaders []string
	// AllowCredentials allows cookies and HTTP authentication. Not with
	// origin "*".
	AllowCredentials bool
	// MaxAge is how long a browser may cache a preflight answer. Default
	// 10m; negative: not cached.
	MaxAge time.Duration
	// AllowPrivateNetwork answers private network access preflights.
	AllowPrivateNetwork bool
}

// DefaultCORSAllowedHeaders are the request headers preflights may ask for
// when a policy names none: what gRPC-Web, Connect and REST clients send.
var DefaultCORSAllowedHeaders = []string{
	"content-type", "authorization", "x-api-key", "x-grpc-web", "x-user-agent",
	"grpc-timeout", "connect-protocol-version", "connect-timeout-ms",
	"x-request-id", "traceparent", "tracestate", "baggage",
}

// DefaultCORSExposedHeaders are always exposed to scripts of an allowed
// origin: gRPC-Web's status headers, the request ID, and rate-limit
// headers.
var DefaultCORSExposedHeaders = []string{
	"grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id",
	"retry-after", "ratelimit", "ratelimit-policy", "ratelimit-limit",
	"ratelimit-remaining", "ratelimit-reset", "x-ratelimit-limit",
	"x-ratelimit-remaining", "x-ratelimit-reset",
}

var defaultCORSMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}

// WithCORS sets the CORS policy of the listener named listener. A
// listener's cors block in the config takes precedence.
func WithCORS(listener string, p CORSPolicy) Option {
	return optionFunc(func(o *options) {
		if o.browser.listenerCORS == nil {
			o.browser.listenerCORS = map[string]CORSPolicy{}
		}
		o.browser.listenerCORS[listener] = p
	})
}

// WithRouteCORS sets the CORS policy of the route named route; it replaces
// the listener's for the calls the route takes. A route's cors block in the
// config takes precedence.
func WithRouteCORS(route string, p CORSPolicy) Option {
	return optionFunc(func(o *options) {
		if o.browser.routeCORS == nil {
			o.browser.routeCORS = map[string]CORSPolicy{}
		}
		o.browser.routeCORS[route] = p
	})
}

// corsPolicy is a compiled CORSPolicy.
type corsPolicy struct {
	anyOrigin   bool
	exact       map[string]bool
	wildcards   []wildcardOrigin
	methods     map[string]bool
	methodsList string
	anyHeader   bool
	headers     map[string]bool
	exposed     string
	credentials bool
	maxAge      string // "" when not sent
	privateNet  bool
}

// wildcardOrigin is "scheme://*.domain[:port]": prefix "scheme://",
// suffix ".domain[:port]".
type wildcardOrigin struct{ prefix, suffix string }

func compileCORS(p CORSPolicy) (*corsPolicy, error) {
	c := &corsPolicy{
		exact:       map[string]bool{},
		methods:     map[string]bool{},
		headers:     map[string]bool{},
		credentials: p.AllowCredentials,
		privateNet:  p.AllowPrivateNetwork,
	}
	for _, o := range p.AllowedOrigins {
		o = strings.ToLower(strings.TrimSuffix(o, "/"))
		switch {
		case o == "*":
			c.anyOrigin = true
		case strings.Contains(o, "://*."):
			i := strings.Index(o, "://*.")
			c.wildcards = append(c.wildcards, wildcardOrigin{prefix: o[:i+3], suffix: o[i+4:]})
		case strings.Contains(o, "*"):
			return nil, fmt.Errorf("cors: origin %q: a wildcard may only be the first label of the host", o)
		default:
			if _, err := url.Parse(o); err != nil || !strings.Contains(o, "://") {
				return nil, fmt.Errorf("cors: origin %q is not scheme://host[:port]", o)
			}
			c.exact[o] = true
		}
	}
	if c.anyOrigin && c.credentials {
		return nil, fmt.Errorf("cors: allow_credentials cannot be used with allowed_origins \"*\"")
	}
	methods := p.AllowedMethods
	if len(methods) == 0 {
		methods = defaultCORSMethods
	}
	for _, m := range methods {
		c.methods[strings.ToUpper(m)] = true
	}
	c.methodsList = strings.ToUpper(strings.Join(methods, ", "))
	headers := p.AllowedHeaders
	if len(headers) == 0 {
		headers = DefaultCORSAllowedHeaders
	}
	for _, h := range headers {
		if h == "*" {
			c.anyHeader = true
		}
		c.headers[strings.ToLower(h)] = true
	}
	exposed := append(append([]string(nil), DefaultCORSExposedHeaders...), p.ExposedHeaders...)
	c.exposed = strings.Join(exposed, ", ")
	switch {
	case p.MaxAge == 0:
		c.maxAge = "600"
	case p.MaxAge > 0:
		c.maxAge = strconv.Itoa(int(p.MaxAge / time.Second))
	}
	return c, nil
}

// allows reports whether origin may call.
func (c *corsPolicy) allows(origin string) bool {
	if c == nil || origin == "" {
		return false
	}
	if c.anyOrigin {
		return true
	}
	o := strings.ToLower(origin)
	if c.exact[o] {
		return true
	}
	for _, w := range c.wildcards {
		// prefix "https://", suffix ".example.org": at least one label
		// before the suffix.
		if strings.HasPrefix(o, w.prefix) && strings.HasSuffix(o, w.suffix) && len(o) > len(w.prefix)+len(w.suffix) {
			host := o[len(w.prefix) : len(o)-len(w.suffix)]
			if !strings.ContainsAny(host, "/:@") {
				return true
			}
		}
	}
	return false
}

// allowOrigin sets the headers every answer to an allowed origin carries.
func (c *corsPolicy) allowOrigin(h http.Header, origin string) {
	if c.anyOrigin && !c.credentials {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
	}
	if c.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
}

// preflight answers a preflight at the edge: 204, with CORS headers only
// when the origin, method and headers are all allowed.
func (c *corsPolicy) preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Add("Vary", "Origin")
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	origin := r.Header.Get("Origin")
	method := strings.ToUpper(r.Header.Get("Access-Control-Request-Method"))
	reqHeaders := parseHeaderList(r.Header.Values("Access-Control-Request-Headers"))
	ok := c.allows(origin) && c.methods[method]
	if ok && !c.anyHeader {
		for _, rh := range reqHeaders {
			if !c.headers[rh] {
				ok = false
				break
			}
		}
	}
	if ok {
		c.allowOrigin(h, origin)
		h.Set("Access-Control-Allow-Methods", c.methodsList)
		if len(reqHeaders) > 0 {
			h.Set("Access-Control-Allow-Headers", strings.Join(reqHeaders, ", "))
		}
		if c.maxAge != "" {
			h.Set("Access-Control-Max-Age", c.maxAge)
		}
		if c.privateNet && r.Header.Get("Access-Control-Request-Private-Network") == "true" {
			h.Set("Access-Control-Allow-Private-Network", "true")
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func parseHeaderList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, f := range strings.Split(v, ",") {
			if f = strings.ToLower(strings.TrimSpace(f)); f != "" {
				out = append(out, f)
			}
		}
	}
	return out
}

// corsFromConfig turns a config cors block into a CORSPolicy.
func corsFromConfig(c *configv1.Cors) CORSPolicy {
	p := CORSPolicy{
		AllowedOrigins:      c.GetAllowedOrigins(),
		AllowedMethods:      c.GetAllowedMethods(),
		AllowedHeaders:      c.GetAllowedHeaders(),
		ExposedHeaders:      c.GetExposedHeaders(),
		AllowCredentials:    c.GetAllowCredentials(),
		AllowPrivateNetwork: c.GetAllowPrivateNetwork(),
	}
	if d := c.GetMaxAge(); d != nil {
		p.MaxAge = d.AsDuration()
		if p.MaxAge == 0 {
			p.MaxAge = -1 // "0s": not cached
		}
	}
	return p
}

// listenerCORS returns the compiled CORS policy of a listener: its config
// cors block, else the WithCORS option; nil when it has neither.
func (g *Gateway) listenerCORS(name string) (*corsPolicy, error) {
	for _, l := range g.Config().GetListeners() {
		if l.GetName() == name && l.GetCors() != nil {
			return compileCORS(corsFromConfig(l.GetCors()))
		}
	}
	if p, ok := g.opts.browser.listenerCORS[name]; ok {
		return compileCORS(p)
	}
	return nil, nil
}

// routeCORSCache holds the compiled route policies of one route table;
// rebuilt when the table is swapped (a reload).
type routeCORSCache struct {
	mu      sync.Mutex
	table   *routing.Table
	any     bool                   // some route of table has a policy
	byRoute map[string]*corsPolicy // nil value: the route has none
}

// routePolicies returns the cache's policies for t, compiling them when t is
// new. Policies that do not compile (config validation prevents it) are
// logged and left out.
func (b *browser) routePolicies(t *routing.Table) (map[string]*corsPolicy, bool) {
	c := &b.routeCache
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.table == t {
		return c.byRoute, c.any
	}
	c.table, c.any, c.byRoute = t, false, map[string]*corsPolicy{}
	for _, rt := range t.Routes() {
		var cp CORSPolicy
		if rc := rt.Config.GetCors(); rc != nil {
			cp = corsFromConfig(rc)
		} else if o, ok := b.g.opts.browser.routeCORS[rt.Name]; ok {
			cp = o
		} else {
			continue
		}
		p, err := compileCORS(cp)
		if err != nil {
			b.g.log.Warn("route cors ignored", "route", rt.Name, "error", err)
			continue
		}
		c.byRoute[rt.Name], c.any = p, true
	}
	return c.byRoute, c.any
}

// routeCORS returns the policy of the route that takes r, and whether that
// route has one of its own. Routes are matched as the call itself will be:
// on its gRPC method (callMethod; method when the caller knows it already),
// and on the request's HTTP method, path, query and headers.
func (b *browser) routeCORS(r *http.Request, httpMethod, method string) (*corsPolicy, bool) {
	t := b.g.router.Table()
	policies, any := b.routePolicies(t)
	if !any {
		return nil, false
	}
	md := make(metadata.MD, len(r.Header)+1)
	for k, vs := range r.Header {
		md[strings.ToLower(k)] = vs
	}
	md[":authority"] = []string{r.Host}
	if method == "" {
		method = b.callMethod(r, httpMethod, false)
	}
	req := &routing.Request{Method: method, Metadata: md, HTTPMethod: httpMethod, Path: r.URL.Path, Query: r.URL.Query()}
	rt, ok := t.MatchRequest(req)
	if !ok {
		return nil, false
	}
	p, ok := policies[rt.Name]
	return p, ok
}

// callMethod returns the gRPC method that r, made with HTTP method
// httpMethod (a preflight's Access-Control-Request-Method), calls: its path
// for gRPC-Web and for the path of a known method, else the method whose
// REST binding (google.api.http rule) matches, else the path when it looks
// like /pkg.Service/Method (a proxied service the gateway has no schema
// of); "" when none.
func (b *browser) callMethod(r *http.Request, httpMethod string, grpcWeb bool) string {
	p := r.URL.Path
	methodPath := validMethodPath(p) && strings.Contains(p[1:strings.LastIndexByte(p, '/')], ".")
	if grpcWeb && methodPath {
		return p
	}
	x := b.rests.index(b.g)
	if methodPath && x.knownMethod(p) {
		return p
	}
	if m, _, ok := x.lookup(r.Context(), httpMethod, r.URL); ok {
		return m
	}
	if methodPath {
		return p
	}
	return ""
}

// corsOn reports whether any CORS policy applies on this listener.
func (b *browser) corsOn() bool {
	if b.cors != nil {
		return true
	}
	_, any := b.routePolicies(b.g.router.Table())
	return any
}

// applyCORS applies the CORS policy in force for r: it answers a preflight
// and returns false, or adds the CORS headers of an allowed origin to the
// response and returns true. A disallowed origin gets no CORS headers.
func (b *browser) applyCORS(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	httpMethod := r.Method
	if preflight {
		httpMethod = strings.ToUpper(r.Header.Get("Access-Control-Request-Method"))
	}
	p := b.cors
	method := ""
	if !preflight && isGRPCWeb(r) {
		method = b.callMethod(r, httpMethod, true)
	}
	if rp, ok := b.routeCORS(r, httpMethod, method); ok {
		p = rp
	}
	if p == nil {
		if preflight && b.corsOn() {
			(&corsPolicy{}).preflight(w, r) // CORS is on here, not for this origin
			return false
		}
		return true
	}
	if preflight {
		p.preflight(w, r)
		return false
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	if p.allows(origin) {
		p.allowOrigin(h, origin)
		h.Set("Access-Control-Expose-Headers", p.exposed)
	}
	return true
}
