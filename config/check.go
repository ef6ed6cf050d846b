package config

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
)

// broken says which cross-reference checks to skip because the structure
// was already wrong: a route cannot be said to name an unknown backend when
// some backend name did not decode.
type broken struct {
	backendNames bool
}

// brokenNames looks at the structural problems found so far.
func brokenNames(probs *problems) broken {
	var b broken
	for _, pr := range probs.list {
		if len(pr.path) > 0 && pr.path[0].name == "backends" {
			if len(pr.path) <= 2 || pr.path[2].name == "name" {
				b.backendNames = true
			}
		}
	}
	return b
}

// check runs the checks that a single field's rules cannot express.
func check(cfg *configv1.Config, probs *problems, skip broken) {
	c := checker{probs: probs}
	addrs := addrSet{}

	listenerNames := map[string]int{}
	for i, l := range cfg.GetListeners() {
		p := path{}.field("listeners").index(i)
		c.unique(p.field("name"), "listener", l.GetName(), listenerNames, i, "listeners")
		c.listenAddress(p.field("address"), l.GetAddress(), addrs, fmt.Sprintf("listeners[%d]", i))
	}
	if a := cfg.GetAdmin(); a != nil {
		c.listenAddress(path{}.field("admin").field("address"), a.GetAddress(), addrs, "admin")
	}

	backendNames := map[string]int{}
	for i, b := range cfg.GetBackends() {
		p := path{}.field("backends").index(i)
		c.unique(p.field("name"), "backend", b.GetName(), backendNames, i, "backends")
		seen := map[string]int{}
		for j, ep := range b.GetEndpoints() {
			epPath := p.field("endpoints").index(j)
			norm, ok := c.endpoint(epPath, ep)
			if !ok {
				continue
			}
			if k, dup := seen[norm]; dup {
				c.errorf(epPath, "duplicate endpoint %q, also endpoints[%d]", ep, k)
				continue
			}
			seen[norm] = j
		}
	}

	routeNames := map[string]int{}
	for i, r := range cfg.GetRoutes() {
		p := path{}.field("routes").index(i)
		c.unique(p.field("name"), "route", r.GetName(), routeNames, i, "routes")
		known := func(fp path, b string) {
			if _, ok := backendNames[b]; b != "" && !ok && !skip.backendNames {
				c.errorf(fp, "unknown backend %q", b)
			}
		}
		c.routeAction(p, r, known)
		if m := r.GetMatch(); m != nil {
			c.match(p.field("match"), m)
		}
	}
	c.checkTelemetry(cfg)
	c.checkResilience(cfg)
	c.checkSchema(cfg) // check_schema.go
	c.checkQuota(cfg)
	c.checkAuth(cfg) // check_auth.go
}

// routeAction checks that a route has exactly one action (backend, split
// or direct_response) and that the backends it names exist.
func (c checker) routeAction(p path, r *configv1.Route, known func(path, string)) {
	var given []string
	if r.GetBackend() != "" {
		given = append(given, "backend")
	}
	if len(r.GetSplit()) > 0 {
		given = append(given, "split")
	}
	if r.GetDirectResponse() != nil {
		given = append(given, "direct_response")
	}
	switch len(given) {
	case 0:
		c.errorf(p.field("backend"), "required (or give split or direct_response)")
	case 1:
	default:
		c.errorf(p.field(given[1]), "only one of backend, split or direct_response may be given, and %q is given already", given[0])
	}
	known(p.field("backend"), r.GetBackend())
	var total uint32
	for j, wb := range r.GetSplit() {
		known(p.field("split").index(j).field("backend"), wb.GetBackend())
		total += wb.GetWeight()
	}
	if len(r.GetSplit()) > 0 && total == 0 {
		c.errorf(p.field("split"), "the weights add up to 0: give at least one side a weight")
	}
	if r.GetStickyKey() != "" && len(r.GetSplit()) == 0 {
		c.errorf(p.field("sticky_key"), "only meaningful with split")
	}
	if m := r.GetMirror(); m != nil {
		known(p.field("mirror").field("backend"), m.GetBackend())
	}
}

// checker records problems found by check.
type checker struct {
	probs *problems
}

// errorf records a problem at p.
func (c checker) errorf(p path, format string, args ...any) {
	c.probs.add(sourceCheck, p, format, args...)
}

// unique records that name is at index i of list, and reports a name seen
// before. Empty names are left to the field's own rules.
func (c checker) unique(p path, what, name string, seen map[string]int, i int, list string) {
	if name == "" {
		return
	}
	if j, dup := seen[name]; dup {
		c.errorf(p, "duplicate %s name %q, also %s[%d]", what, name, list, j)
		return
	}
	seen[name] = i
}

// addrSet holds the listen addresses seen so far, by port.
type addrSet map[int][]addrUse

// addrUse is one listen address and where it was given.
type addrUse struct {
	host  string // lower case; "" for every interface
	where string // "listeners[0]", "admin"
}

// wildcard reports whether host listens on every interface.
func wildcard(host string) bool {
	switch host {
	case "", "0.0.0.0", "::":
		return true
	}
	return false
}

// listenAddress checks a listen address: host:port with a numeric port
// (0 picks a free port), not used twice. Two addresses clash when they have
// the same port and the same host, or either listens on every interface.
func (c checker) listenAddress(p path, addr string, addrs addrSet, where string) {
	if addr == "" {
		return // the field's rules say it is required
	}
	host, port, ok := c.hostPort(p, addr, true)
	if !ok || port == 0 {
		return
	}
	host = strings.ToLower(host)
	for _, u := range addrs[port] {
		if u.host == host || wildcard(u.host) || wildcard(host) {
			c.errorf(p, "address %q clashes with %s.address: both listen on port %d", addr, u.where, port)
			return
		}
	}
	addrs[port] = append(addrs[port], addrUse{host: host, where: where})
}

// endpoint checks a backend endpoint, host:port with a host and a port from
// 1 to 65535, and returns it in a form in which duplicates compare equal.
func (c checker) endpoint(p path, ep string) (string, bool) {
	if ep == "" {
		return "", false // the field's rules say it is required
	}
	host, port, ok := c.hostPort(p, ep, false)
	if !ok {
		return "", false
	}
	if host == "" {
		c.errorf(p, "want host:port, got %q (the host is missing)", ep)
		return "", false
	}
	if port == 0 {
		c.errorf(p, "want host:port with a port from 1 to 65535, got %q", ep)
		return "", false
	}
	return net.JoinHostPort(strings.ToLower(host), strconv.Itoa(port)), true
}

// hostPort splits host:port and checks both halves. An empty host is
// allowed here; callers that need one check for it.
func (c checker) hostPort(p path, addr string, listen bool) (host string, port int, ok bool) {
	h, ps, err := net.SplitHostPort(addr)
	if err != nil {
		reason := "not host:port"
		if ae, ok := err.(*net.AddrError); ok {
			reason = ae.Err
		}
		c.errorf(p, "want host:port, got %q (%s)", addr, reason)
		return "", 0, false
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		if _, numErr := strconv.ParseUint(ps, 10, 64); numErr == nil {
			c.errorf(p, "port %s of %q is out of range (0 to 65535)", ps, addr)
		} else {
			c.errorf(p, "want host:port with a numeric port, got %q", addr)
		}
		return "", 0, false
	}
	if !validHost(h) {
		c.errorf(p, "want host:port, got %q (%q is not a host name or IP address)", addr, h)
		return "", 0, false
	}
	return h, int(n), true
}

// validHost reports whether h is empty, an IP address or a DNS name.
func validHost(h string) bool {
	if h == "" {
		return true
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return validDNSName(h)
}

// validDNSName reports whether h is a DNS name: dot-separated labels of
// letters, digits, '-' and '_', none empty, none starting or ending in '-'.
// A trailing dot is allowed.
func validDNSName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, ch := range label {
			switch {
			case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9', ch == '-', ch == '_':
			default:
				return false
			}
		}
	}
	return true
}

// match checks a route's match: globs, the authority pattern and the
// metadata conditions.
func (c checker) match(p path, m *configv1.Match) {
	if meth := m.GetMethod(); strings.Contains(strings.TrimSuffix(meth, "*"), "*") {
		c.errorf(p.field("method"), "a method glob may only end in \"*\", got %q", meth)
	}
	if svc := m.GetService(); svc != "*" && strings.Contains(strings.TrimSuffix(svc, ".*"), "*") {
		c.errorf(p.field("service"), "a service glob may only end in \".*\" (or be \"*\"), got %q", svc)
	}
	if a := m.GetAuthority(); a != "" {
		c.authority(p.field("authority"), a)
	}
	for i, mm := range m.GetMetadata() {
		mp := p.field("metadata").index(i)
		switch k := mm.GetKind().(type) {
		case *configv1.MetadataMatch_Regex:
			_, err := regexp.Compile(k.Regex)
			if err == nil {
				_, err = regexp.Compile("^(?:" + k.Regex + ")$") // as the router compiles it
			}
			if err != nil {
				c.errorf(mp.field("regex"), "invalid regular expression: %v", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
			}
		case *configv1.MetadataMatch_Present:
			if !k.Present {
				c.errorf(mp.field("present"), "must be true when given (to require that the key is absent, write absent: true)")
			}
		case *configv1.MetadataMatch_Absent:
			if !k.Absent {
				c.errorf(mp.field("absent"), "must be true when given (to require that the key is present, write present: true)")
			}
		}
	}
}

// authority checks an authority pattern: a host, or "*." and a host. The
// authority is matched without its port.
func (c checker) authority(p path, a string) {
	host := strings.TrimPrefix(a, "*.")
	if _, port, err := net.SplitHostPort(host); err == nil {
		c.errorf(p, "the authority is matched without its port: want %q, got %q", strings.TrimSuffix(a, ":"+port), a)
		return
	}
	if strings.Contains(host, "*") {
		c.errorf(p, "want a host or \"*.\" and a host, got %q (a wildcard may only be a leading \"*.\")", a)
		return
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") && host == a {
		if ip, err := netip.ParseAddr(host[1 : len(host)-1]); err == nil && ip.Is6() {
			return
		}
	}
	if host != a {
		if !validDNSName(host) {
			c.errorf(p, "want a host or \"*.\" and a host, got %q", a)
		}
		return
	}
	if !validHost(host) {
		c.errorf(p, "want a host or \"*.\" and a host, got %q", a)
	}
}
