package routing

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"cel.dev/cel-go/cel"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"google.golang.org/grpc/metadata"
)

// Route is one compiled route: its name, what it matches and what it does.
// Routes are immutable once built.
type Route struct {
	// Name is the route's name from config.
	Name string
	// Index is the route's position in match order, from 0.
	Index int
	// Backend is the name of the backend the route sends calls to; empty
	// for a split or a direct response.
	Backend string
	// Config is the route as configured.
	Config *configv1.Route

	method     string // exact full method, or a prefix when methodGlob
	methodGlob bool
	service    string // exact service, or a package prefix ending in "." when serviceGlb
	serviceGlb bool
	authority  string // lower case; a leading "." means a wildcard suffix
	preds      []predicate
	needs      needs
	desc       string

	action action
}

// predicate is one condition of a route beyond method, service and
// authority: exactly one of its fields is set. It is a concrete type rather
// than an interface so that matching does not make the request escape to
// the heap.
type predicate struct {
	value      *valueMatcher
	httpMethod string
	path       *pathPredicate
	cidrs      cidrPredicate
	cel        *celPredicate
}

// test reports whether p holds; vars holds the request's CEL variables,
// built on first use.
func (p *predicate) test(req *Request, vars *map[string]any) bool {
	switch {
	case p.value != nil:
		return p.value.test(req)
	case p.httpMethod != "":
		return req.HTTPMethod == p.httpMethod
	case p.path != nil:
		return p.path.test(req)
	case p.cidrs != nil:
		return p.cidrs.test(req)
	case p.cel != nil:
		ok, _ := p.cel.test(req, vars)
		return ok
	}
	return false
}

// why says why p does not hold, for explain.
func (p *predicate) why(req *Request, vars *map[string]any) string {
	switch {
	case p.value != nil:
		return p.value.why(req)
	case p.httpMethod != "":
		if req.HTTPMethod == "" {
			return fmt.Sprintf("http_method %q: not a REST call", p.httpMethod)
		}
		return fmt.Sprintf("http_method %s is not %q", req.HTTPMethod, p.httpMethod)
	case p.path != nil:
		if req.Path == "" {
			return p.path.desc + ": not a REST call"
		}
		return fmt.Sprintf("%s: path %q", p.path.desc, req.Path)
	case p.cidrs != nil:
		if !req.SourceIP.IsValid() {
			return "source_cidrs: source address unknown"
		}
		return fmt.Sprintf("source_cidrs: %s is in none of %v", req.SourceIP, []netip.Prefix(p.cidrs))
	case p.cel != nil:
		_, why := p.cel.test(req, vars)
		return why
	}
	return "no condition"
}

// Table is an immutable, ordered route table built from config. The first
// route whose conditions all hold takes a call. A Table is safe for
// concurrent use; reloads build a new one and swap it in (see Router).
//
// Lookups do not scan every route. Each route sits in one index bucket, by
// the most selective condition it has that the call's method or authority
// alone decides: an exact service (or a method, which fixes the service), a
// service package glob, an exact authority, a wildcard authority; routes
// with none of these are generic. A call looks at the few buckets its
// service and authority can hit, plus the generic routes, merged in route
// order. Routes that none of these narrows but that require a header to
// equal a value sit in a bucket per value of that header (for up to
// maxHeaderIndexes header names), so that a call only meets those of the
// value it sends. So exact-service and exact-method routes cost the same with 10
// routes or 10,000, and so do package and authority routes.
type Table struct {
	routes      []*Route
	byService   map[string][]*Route // exact service
	byPackage   map[string][]*Route // service glob prefix, ending in "."
	byAuthority map[string][]*Route // exact host, lower case
	byWildcard  map[string][]*Route // wildcard suffix, lower case, leading "."
	headers     []headerIndex       // routes keyed by an exact header value
	generic     []*Route
	needs       needs
	// maxPackage and maxWildcard are the longest package prefix and
	// wildcard suffix in the table: a lookup tries no longer ones, so its
	// cost is bounded by the config, never by what a client sends.
	maxPackage, maxWildcard int
}

// NewTable compiles routes. The config loader has already checked them; an
// error here means a route that cannot be compiled (a CEL expression that
// does not compile, say), named by its index and field.
func NewTable(routes []*configv1.Route) (*Table, error) {
	t := &Table{
		byService:   map[string][]*Route{},
		byPackage:   map[string][]*Route{},
		byAuthority: map[string][]*Route{},
		byWildcard:  map[string][]*Route{},
	}
	for i, rc := range routes {
		r, err := compileRoute(i, rc)
		if err != nil {
			return nil, fmt.Errorf("routes[%d].%w", i, err)
		}
		t.routes = append(t.routes, r)
		t.needs |= r.needs
		switch {
		case r.pinned():
			svc, _ := splitMethod(r.method)
			if r.method == "" {
				svc = r.service
			}
			t.byService[svc] = append(t.byService[svc], r)
		case r.serviceGlb:
			if strings.Count(r.service, ".") > maxDepth {
				return nil, fmt.Errorf("routes[%d].match.service: more than %d dots", i, maxDepth)
			}
			t.byPackage[r.service] = append(t.byPackage[r.service], r)
			t.maxPackage = max(t.maxPackage, len(r.service))
		case r.authority != "" && r.authority[0] == '.':
			if strings.Count(r.authority, ".") > maxDepth {
				return nil, fmt.Errorf("routes[%d].match.authority: more than %d dots", i, maxDepth)
			}
			t.byWildcard[r.authority] = append(t.byWildcard[r.authority], r)
			t.maxWildcard = max(t.maxWildcard, len(r.authority))
		case r.authority != "":
			t.byAuthority[r.authority] = append(t.byAuthority[r.authority], r)
		case t.indexHeader(r):
		default:
			t.generic = append(t.generic, r)
		}
	}
	return t, nil
}

// headerIndex holds the routes that no method or authority narrows but
// that require one header (metadata key) to equal a value: a call is a
// candidate only for the bucket of the value it sends.
type headerIndex struct {
	name    string
	byValue map[string][]*Route
	all     []*Route // every route of the index, for a call that sends several values
}

// maxHeaderIndexes bounds the header names indexed; routes on further
// names are generic.
const maxHeaderIndexes = 8

// indexHeader puts r in the index of its first exact, non-negated header
// condition, and reports whether it did.
func (t *Table) indexHeader(r *Route) bool {
	for i := range r.preds {
		m := r.preds[i].value
		if m == nil || m.src != fromMetadata || m.kind != kindExact || m.invert {
			continue
		}
		for j := range t.headers {
			if t.headers[j].name == m.name {
				h := &t.headers[j]
				h.byValue[m.value] = append(h.byValue[m.value], r)
				h.all = append(h.all, r)
				return true
			}
		}
		if len(t.headers) < maxHeaderIndexes {
			t.headers = append(t.headers, headerIndex{name: m.name, byValue: map[string][]*Route{m.value: {r}}, all: []*Route{r}})
			return true
		}
	}
	return false
}

// maxDepth bounds the dots in a package glob or wildcard authority, so that
// a lookup merges at most maxLists buckets: the exact service, the generic
// routes, the exact host, one per dot of a package prefix and of a
// wildcard suffix, and one per indexed header.
const (
	maxDepth = 30
	maxLists = 3 + 2*(maxDepth+1) + maxHeaderIndexes
)

// cursor walks several route lists, each in route order, merged in route
// order, without allocating.
type cursor struct {
	lists [maxLists][]*Route
	n     int
}

func (c *cursor) add(l []*Route) {
	if len(l) > 0 && c.n < maxLists {
		c.lists[c.n] = l
		c.n++
	}
}

// next returns the route with the lowest index among the lists' heads.
func (c *cursor) next() *Route {
	best := -1
	for i := range c.n {
		if len(c.lists[i]) == 0 {
			continue
		}
		if best < 0 || c.lists[i][0].Index < c.lists[best][0].Index {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	r := c.lists[best][0]
	c.lists[best] = c.lists[best][1:]
	return r
}

// candidates loads c with the buckets a call to svc with metadata md can
// match.
func (t *Table) candidates(c *cursor, svc string, md metadata.MD) {
	c.add(t.byService[svc])
	c.add(t.generic)
	for i := range t.headers {
		h := &t.headers[i]
		switch vals := md[h.name]; len(vals) {
		case 0: // an exact condition never holds
		case 1:
			c.add(h.byValue[vals[0]])
		default: // any value may hold: every route of the index
			c.add(h.all)
		}
	}
	// Every prefix of svc that ends at a dot and is no longer than the
	// longest package in the table: "a.b.C" → "a.", "a.b.".
	for i := 0; i < len(svc) && i < t.maxPackage; i++ {
		if svc[i] == '.' {
			c.add(t.byPackage[svc[:i+1]])
		}
	}
	if len(t.byAuthority) == 0 && t.maxWildcard == 0 {
		return
	}
	host := authorityHost(md)
	if host == "" {
		return
	}
	c.add(t.byAuthority[host])
	// Every suffix of host that starts at a dot, is shorter than host and
	// no longer than the longest wildcard: "a.b.c" → ".c", ".b.c".
	for i := len(host) - 1; i > 0 && len(host)-i <= t.maxWildcard; i-- {
		if host[i] == '.' {
			c.add(t.byWildcard[host[i:]])
		}
	}
}

// authorityHost is the call's authority without its port, lower case.
func authorityHost(md metadata.MD) string {
	vals := md[":authority"]
	if len(vals) == 0 {
		return ""
	}
	return strings.ToLower(hostOnly(vals[0]))
}

// hostOnly strips a port and IPv6 brackets from an authority.
func hostOnly(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		if _, err := strconv.Atoi(host[i+1:]); err == nil {
			host = host[:i]
		}
	}
	return strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
}

// Routes returns the routes in match order. The slice must not be modified.
func (t *Table) Routes() []*Route { return t.routes }

// Match returns the first route that takes a gRPC call to fullMethod
// ("/pkg.Service/Method") with incoming metadata md. For grpc-go servers md
// carries ":authority".
func (t *Table) Match(fullMethod string, md metadata.MD) (*Route, bool) {
	return t.MatchRequest(&Request{Method: fullMethod, Metadata: md})
}

// MatchRequest returns the first route that takes req.
func (t *Table) MatchRequest(req *Request) (*Route, bool) {
	svc, _ := splitMethod(req.Method)
	var vars map[string]any
	var c cursor
	t.candidates(&c, svc, req.Metadata)
	for r := c.next(); r != nil; r = c.next() {
		if r.test(req, svc, &vars) {
			return r, true
		}
	}
	return nil, false
}

// PassedOver is a route that did not take a call, and why.
type PassedOver struct {
	// Route is the route's name.
	Route string
	// Reason is the first condition that did not hold.
	Reason string
}

// Explain returns the route that takes req (nil when none does) and every
// route before it, in order, with the first condition that failed.
func (t *Table) Explain(req *Request) (*Route, []PassedOver) {
	svc, _ := splitMethod(req.Method)
	var vars map[string]any
	var passed []PassedOver
	for _, r := range t.routes { // every route, not the index: explain names them all
		if r.test(req, svc, &vars) {
			return r, passed
		}
		passed = append(passed, PassedOver{Route: r.Name, Reason: r.why(req, svc, &vars)})
	}
	return nil, passed
}

// String describes the route's conditions in a readable form, as the admin
// API shows them.
func (r *Route) String() string { return r.desc }

// pinned reports whether the route's conditions fix the one service every
// call it takes is made to (an exact service, or a method).
func (r *Route) pinned() bool {
	return r.method != "" || (r.service != "" && !r.serviceGlb)
}

// test reports whether every condition of r holds for req.
func (r *Route) test(req *Request, svc string, vars *map[string]any) bool {
	if r.method != "" {
		if r.methodGlob {
			if !globMethod(r.method, req.Method) {
				return false
			}
		} else if req.Method != r.method {
			return false
		}
	}
	if r.service != "" {
		if r.serviceGlb {
			if !strings.HasPrefix(svc, r.service) {
				return false
			}
		} else if svc != r.service {
			return false
		}
	}
	if r.authority != "" && !matchAuthority(r.authority, req.Metadata) {
		return false
	}
	for i := range r.preds {
		if !r.preds[i].test(req, vars) {
			return false
		}
	}
	return true
}

// why names the first condition of r that does not hold for req; "" when
// all hold.
func (r *Route) why(req *Request, svc string, vars *map[string]any) string {
	if r.method != "" {
		if r.methodGlob {
			if !globMethod(r.method, req.Method) {
				return fmt.Sprintf("method %s is not %q", req.Method, r.method+"*")
			}
		} else if req.Method != r.method {
			return fmt.Sprintf("method %s is not %q", req.Method, r.method)
		}
	}
	if r.service != "" {
		if r.serviceGlb {
			if !strings.HasPrefix(svc, r.service) {
				return fmt.Sprintf("service %s is not in %q", svc, r.service+"*")
			}
		} else if svc != r.service {
			return fmt.Sprintf("service %s is not %q", svc, r.service)
		}
	}
	if r.authority != "" && !matchAuthority(r.authority, req.Metadata) {
		return fmt.Sprintf("authority %q does not match %q", first(req.Metadata, ":authority"), r.Config.GetMatch().GetAuthority())
	}
	for i := range r.preds {
		if !r.preds[i].test(req, vars) {
			return r.preds[i].why(req, vars)
		}
	}
	return ""
}

// globMethod reports whether method matches the glob prefix+"*", where
// prefix is "/pkg.Service/" or "/pkg.Service/Name": the glob stands for the
// rest of a method name, never a further "/" (as grpc-go splits a path,
// "/pkg.Service/Get/x" is method "x" of service "pkg.Service/Get").
func globMethod(prefix, method string) bool {
	return strings.HasPrefix(method, prefix) && strings.IndexByte(method[len(prefix):], '/') < 0
}

// SplitMethod splits "/pkg.Service/Method" into service and method.
func SplitMethod(fullMethod string) (service, method string) { return splitMethod(fullMethod) }

// splitMethod splits "/pkg.Service/Method" into service and method.
func splitMethod(fullMethod string) (service, method string) {
	s := strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

func matchAuthority(pattern string, md metadata.MD) bool {
	vals := md[":authority"]
	if len(vals) == 0 {
		return false
	}
	host := hostOnly(vals[0])
	if pattern[0] == '.' { // wildcard: any subdomain, not the bare domain
		return len(host) > len(pattern) && hasSuffixFold(host, pattern)
	}
	return strings.EqualFold(host, pattern)
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

type valueKind uint8

const (
	kindExact valueKind = iota
	kindPrefix
	kindSuffix
	kindRegex
	kindPresent
	kindAbsent
)

// source says where a value condition reads its values.
type source uint8

const (
	fromMetadata source = iota
	fromQuery
	fromClaims
)

// valueMatcher is a condition on the values of one key of metadata, query
// parameters or claims.
type valueMatcher struct {
	src    source
	name   string
	kind   valueKind
	value  string
	re     *regexp.Regexp
	invert bool
	desc   string
}

func (m *valueMatcher) values(req *Request) []string {
	switch m.src {
	case fromQuery:
		return req.Query[m.name]
	case fromClaims:
		return claimValues(req.Claims[m.name])
	default:
		return req.Metadata[m.name]
	}
}

func (m *valueMatcher) test(req *Request) bool {
	return m.holds(m.values(req)) != m.invert
}

func (m *valueMatcher) why(req *Request) string {
	vals := m.values(req)
	switch {
	case len(vals) == 0:
		return m.desc + ": absent"
	case len(vals) == 1:
		return fmt.Sprintf("%s: value %q", m.desc, vals[0])
	default:
		return fmt.Sprintf("%s: values %q", m.desc, vals)
	}
}

func (m *valueMatcher) holds(vals []string) bool {
	switch m.kind {
	case kindPresent:
		return len(vals) > 0
	case kindAbsent:
		return len(vals) == 0
	}
	for _, v := range vals {
		switch m.kind {
		case kindExact:
			if v == m.value {
				return true
			}
		case kindPrefix:
			if strings.HasPrefix(v, m.value) {
				return true
			}
		case kindSuffix:
			if strings.HasSuffix(v, m.value) {
				return true
			}
		case kindRegex:
			if m.re.MatchString(v) {
				return true
			}
		}
	}
	return false
}

// claimValues turns a claim into the strings conditions compare: a list
// claim gives each element.
func claimValues(v any) []string {
	switch c := v.(type) {
	case nil:
		return nil
	case string:
		return []string{c}
	case []string:
		return c
	case []any:
		out := make([]string, 0, len(c))
		for _, e := range c {
			out = append(out, fmt.Sprint(e))
		}
		return out
	default:
		return []string{fmt.Sprint(c)}
	}
}

// pathPredicate is match.path.
type pathPredicate struct {
	kind  valueKind
	value string
	re    *regexp.Regexp
	desc  string
}

func (p *pathPredicate) test(req *Request) bool {
	switch p.kind {
	case kindExact:
		return req.Path == p.value
	case kindPrefix:
		return strings.HasPrefix(req.Path, p.value)
	case kindRegex:
		return p.re.MatchString(req.Path)
	}
	return false
}

// cidrPredicate is match.source_cidrs.
type cidrPredicate []netip.Prefix

func (p cidrPredicate) test(req *Request) bool {
	for _, pfx := range p {
		if req.SourceIP.IsValid() && pfx.Contains(req.SourceIP) {
			return true
		}
	}
	return false
}

func compileValueMatcher(src source, field string, mm *configv1.MetadataMatch) (*valueMatcher, error) {
	name := mm.GetName()
	if src == fromMetadata {
		name = strings.ToLower(name)
	}
	m := &valueMatcher{src: src, name: name, invert: mm.GetInvert()}
	var d string
	switch k := mm.GetKind().(type) {
	case *configv1.MetadataMatch_Exact:
		m.kind, m.value, d = kindExact, k.Exact, fmt.Sprintf("==%q", k.Exact)
	case *configv1.MetadataMatch_Prefix:
		m.kind, m.value, d = kindPrefix, k.Prefix, fmt.Sprintf(" prefix %q", k.Prefix)
	case *configv1.MetadataMatch_Suffix:
		m.kind, m.value, d = kindSuffix, k.Suffix, fmt.Sprintf(" suffix %q", k.Suffix)
	case *configv1.MetadataMatch_Regex:
		re, err := regexp.Compile("^(?:" + k.Regex + ")$")
		if err != nil {
			return nil, fmt.Errorf("regex: %w", err)
		}
		m.kind, m.re, d = kindRegex, re, fmt.Sprintf(" =~ /%s/", k.Regex)
	case *configv1.MetadataMatch_Present:
		m.kind, d = kindPresent, " present"
	case *configv1.MetadataMatch_Absent:
		m.kind, d = kindAbsent, " absent"
	default:
		return nil, fmt.Errorf("no condition")
	}
	prefix := ""
	if m.invert {
		prefix = "!"
	}
	m.desc = fmt.Sprintf("%s%s[%s]%s", prefix, field, m.name, d)
	return m, nil
}

func compileRoute(i int, rc *configv1.Route) (*Route, error) {
	r := &Route{Name: rc.GetName(), Index: i, Backend: rc.GetBackend(), Config: rc}
	m := rc.GetMatch()
	var desc []string
	if meth := m.GetMethod(); meth != "" {
		desc = append(desc, fmt.Sprintf("method=%q", meth))
		if strings.HasSuffix(meth, "*") {
			r.method, r.methodGlob = strings.TrimSuffix(meth, "*"), true
		} else {
			r.method = meth
		}
	}
	if svc := m.GetService(); svc != "" {
		desc = append(desc, fmt.Sprintf("service=%q", svc))
		switch {
		case svc == "*":
		case strings.HasSuffix(svc, ".*"):
			r.service, r.serviceGlb = strings.TrimSuffix(svc, "*"), true
		default:
			r.service = svc
		}
	}
	if a := m.GetAuthority(); a != "" {
		desc = append(desc, fmt.Sprintf("authority=%q", a))
		r.authority = strings.ToLower(strings.TrimPrefix(a, "*"))
	}
	lists := []struct {
		field string
		src   source
		list  []*configv1.MetadataMatch
	}{
		{"metadata", fromMetadata, m.GetMetadata()},
		{"headers", fromMetadata, m.GetHeaders()},
		{"query", fromQuery, m.GetQuery()},
		{"claims", fromClaims, m.GetClaims()},
	}
	for _, l := range lists {
		for j, mm := range l.list {
			vm, err := compileValueMatcher(l.src, l.field, mm)
			if err != nil {
				return nil, fmt.Errorf("match.%s[%d]: %w", l.field, j, err)
			}
			switch l.src {
			case fromQuery:
				r.needs |= needHTTP
			case fromClaims:
				r.needs |= needClaims
			}
			r.preds = append(r.preds, predicate{value: vm})
			desc = append(desc, vm.desc)
		}
	}
	if hm := m.GetHttpMethod(); hm != "" {
		r.preds = append(r.preds, predicate{httpMethod: hm})
		r.needs |= needHTTP
		desc = append(desc, fmt.Sprintf("http_method=%q", hm))
	}
	if pm := m.GetPath(); pm != nil {
		p := &pathPredicate{}
		switch k := pm.GetKind().(type) {
		case *configv1.PathMatch_Exact:
			p.kind, p.value, p.desc = kindExact, k.Exact, fmt.Sprintf("path==%q", k.Exact)
		case *configv1.PathMatch_Prefix:
			p.kind, p.value, p.desc = kindPrefix, k.Prefix, fmt.Sprintf("path prefix %q", k.Prefix)
		case *configv1.PathMatch_Regex:
			re, err := regexp.Compile("^(?:" + k.Regex + ")$")
			if err != nil {
				return nil, fmt.Errorf("match.path.regex: %w", err)
			}
			p.kind, p.re, p.desc = kindRegex, re, fmt.Sprintf("path =~ /%s/", k.Regex)
		default:
			return nil, fmt.Errorf("match.path: no condition")
		}
		r.preds = append(r.preds, predicate{path: p})
		r.needs |= needHTTP
		desc = append(desc, p.desc)
	}
	if cidrs := m.GetSourceCidrs(); len(cidrs) > 0 {
		var p cidrPredicate
		for j, c := range cidrs {
			pfx, err := netip.ParsePrefix(c)
			if err != nil {
				return nil, fmt.Errorf("match.source_cidrs[%d]: %w", j, err)
			}
			p = append(p, pfx.Masked())
		}
		r.preds = append(r.preds, predicate{cidrs: p})
		r.needs |= needSource
		desc = append(desc, fmt.Sprintf("source_cidrs=%v", cidrs))
	}
	if expr := m.GetCel(); expr != "" {
		prg, err := compileCEL(expr, cel.BoolType)
		if err != nil {
			return nil, fmt.Errorf("match.cel: %w", err)
		}
		r.preds = append(r.preds, predicate{cel: &celPredicate{expr: expr, prg: prg}})
		r.needs |= needCEL | needHTTP | needSource | needClaims
		desc = append(desc, fmt.Sprintf("cel(%s)", expr))
	}
	if len(desc) == 0 {
		r.desc = "*"
	} else {
		r.desc = strings.Join(desc, " ")
	}
	a, err := compileAction(rc)
	if err != nil {
		return nil, err
	}
	r.action = a
	if a.sticky != nil {
		r.needs |= needCEL | needHTTP | needSource | needClaims
	}
	return r, nil
}
