package routing

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"google.golang.org/grpc/metadata"
)

// Route is one compiled route: its name, what it matches and where it sends
// calls. Routes are immutable once built.
type Route struct {
	// Name is the route's name from config.
	Name string
	// Index is the route's position in match order, from 0.
	Index int
	// Backend is the name of the backend the route sends calls to.
	Backend string
	// Config is the route as configured.
	Config *configv1.Route

	method     string // exact full method, or a prefix when methodGlob
	methodGlob bool
	service    string // exact service, or a package prefix ending in "." when serviceGlob
	serviceAll bool
	serviceGlb bool
	authority  string // lower case; a leading "." means a wildcard suffix
	metadata   []mdMatcher
	desc       string
}

// Table is an immutable, ordered route table built from config. The first
// route whose conditions all hold takes a call. A Table is safe for
// concurrent use; reloads build a new one and swap it in (see Router).
//
// Lookups do not scan every route: routes whose conditions pin a service
// (an exact service, or an exact or globbed method) are indexed by that
// service, so an exact-service or exact-method route costs the same with 10
// routes or 10,000.
type Table struct {
	routes []*Route
	// byService holds, for each service that some route pins, the routes that
	// can match a call to it, in order: the pinned ones merged with the
	// generic ones.
	byService map[string][]*Route
	// generic holds the routes that pin no service, in order.
	generic []*Route
}

// NewTable compiles routes. The config loader has already checked them; an
// error here means a route that the loader let through but cannot be
// compiled, named by its index.
func NewTable(routes []*configv1.Route) (*Table, error) {
	t := &Table{byService: map[string][]*Route{}}
	pinned := map[string][]*Route{}
	for i, rc := range routes {
		r, err := compileRoute(i, rc)
		if err != nil {
			return nil, fmt.Errorf("routes[%d]: %w", i, err)
		}
		t.routes = append(t.routes, r)
		if svc, ok := r.pinnedService(); ok {
			pinned[svc] = append(pinned[svc], r)
		} else {
			t.generic = append(t.generic, r)
		}
	}
	for svc, rs := range pinned {
		merged := append(slices.Clone(rs), t.generic...)
		slices.SortFunc(merged, func(a, b *Route) int { return a.Index - b.Index })
		t.byService[svc] = merged
	}
	return t, nil
}

// Routes returns the routes in match order. The slice must not be modified.
func (t *Table) Routes() []*Route { return t.routes }

// Match returns the first route that takes a call to fullMethod
// ("/pkg.Service/Method") with incoming metadata md. For grpc-go servers md
// carries ":authority".
func (t *Table) Match(fullMethod string, md metadata.MD) (*Route, bool) {
	svc, _ := splitMethod(fullMethod)
	candidates, ok := t.byService[svc]
	if !ok {
		candidates = t.generic
	}
	for _, r := range candidates {
		if r.matches(fullMethod, svc, md) {
			return r, true
		}
	}
	return nil, false
}

// String describes the route's conditions in a readable form, as the admin
// API shows them.
func (r *Route) String() string { return r.desc }

// pinnedService reports the one service that every call the route matches
// must be made to, when the route's conditions fix it.
func (r *Route) pinnedService() (string, bool) {
	if r.method != "" {
		if svc, _ := splitMethod(r.method); svc != "" && (!r.methodGlob || strings.Contains(r.method[1:], "/")) {
			return svc, true
		}
	}
	if r.service != "" && !r.serviceGlb && !r.serviceAll {
		return r.service, true
	}
	return "", false
}

func (r *Route) matches(fullMethod, svc string, md metadata.MD) bool {
	if r.method != "" {
		if r.methodGlob {
			if !strings.HasPrefix(fullMethod, r.method) {
				return false
			}
		} else if fullMethod != r.method {
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
	if r.authority != "" && !matchAuthority(r.authority, md) {
		return false
	}
	for i := range r.metadata {
		if !r.metadata[i].match(md) {
			return false
		}
	}
	return true
}

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
	host := vals[0]
	// Strip a port; keep IPv6 brackets out of the comparison.
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		if _, err := strconv.Atoi(host[i+1:]); err == nil {
			host = host[:i]
		}
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if pattern[0] == '.' { // wildcard: any subdomain, not the bare domain
		return len(host) > len(pattern) && hasSuffixFold(host, pattern)
	}
	return strings.EqualFold(host, pattern)
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

type mdKind uint8

const (
	mdExact mdKind = iota
	mdPrefix
	mdSuffix
	mdRegex
	mdPresent
	mdAbsent
)

type mdMatcher struct {
	name   string
	kind   mdKind
	value  string
	re     *regexp.Regexp
	invert bool
}

func (m *mdMatcher) match(md metadata.MD) bool {
	return m.test(md[m.name]) != m.invert
}

func (m *mdMatcher) test(vals []string) bool {
	switch m.kind {
	case mdPresent:
		return len(vals) > 0
	case mdAbsent:
		return len(vals) == 0
	}
	for _, v := range vals {
		switch m.kind {
		case mdExact:
			if v == m.value {
				return true
			}
		case mdPrefix:
			if strings.HasPrefix(v, m.value) {
				return true
			}
		case mdSuffix:
			if strings.HasSuffix(v, m.value) {
				return true
			}
		case mdRegex:
			if m.re.MatchString(v) {
				return true
			}
		}
	}
	return false
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
			r.serviceAll = true
			r.service = ""
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
	for j, mm := range m.GetMetadata() {
		mt := mdMatcher{name: strings.ToLower(mm.GetName()), invert: mm.GetInvert()}
		var d string
		switch k := mm.GetKind().(type) {
		case *configv1.MetadataMatch_Exact:
			mt.kind, mt.value, d = mdExact, k.Exact, fmt.Sprintf("==%q", k.Exact)
		case *configv1.MetadataMatch_Prefix:
			mt.kind, mt.value, d = mdPrefix, k.Prefix, fmt.Sprintf(" prefix %q", k.Prefix)
		case *configv1.MetadataMatch_Suffix:
			mt.kind, mt.value, d = mdSuffix, k.Suffix, fmt.Sprintf(" suffix %q", k.Suffix)
		case *configv1.MetadataMatch_Regex:
			re, err := regexp.Compile("^(?:" + k.Regex + ")$")
			if err != nil {
				return nil, fmt.Errorf("match.metadata[%d].regex: %w", j, err)
			}
			mt.kind, mt.re, d = mdRegex, re, fmt.Sprintf(" =~ /%s/", k.Regex)
		case *configv1.MetadataMatch_Present:
			mt.kind, d = mdPresent, " present"
		case *configv1.MetadataMatch_Absent:
			mt.kind, d = mdAbsent, " absent"
		default:
			return nil, fmt.Errorf("match.metadata[%d]: no condition", j)
		}
		prefix := ""
		if mt.invert {
			prefix = "!"
		}
		desc = append(desc, fmt.Sprintf("%smetadata[%s]%s", prefix, mt.name, d))
		r.metadata = append(r.metadata, mt)
	}
	if len(desc) == 0 {
		r.desc = "*"
	} else {
		r.desc = strings.Join(desc, " ")
	}
	return r, nil
}
