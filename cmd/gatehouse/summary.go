package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/gatehouse-dev/gatehouse/config"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
)

// startSummary is what `gatehouse serve` says on start: what listens where,
// which backends and routes there are, what is encrypted and what needs no
// credentials, and the settings that are risky.
type startSummary struct {
	listeners []listenerLine
	backends  []backendLine
	routes    []routeLine
	warnings  []string
}

type listenerLine struct {
	name, address, protocol, tls string
	requireAuth                  bool
}

type backendLine struct {
	name, endpoints, tls string
}

type routeLine struct {
	name, target, auth string
}

// summarize describes cfg. addr gives a listener's bound address by name
// ("admin" for the admin listener), or nil to use the configured one.
func summarize(cfg *configv1.Config, addr func(name string) net.Addr) startSummary {
	var s startSummary
	bound := func(name, configured string) string {
		if addr != nil {
			if a := addr(name); a != nil {
				return a.String()
			}
		}
		return configured
	}
	anyAuth := false
	var noAuth []string
	for _, r := range cfg.GetRoutes() {
		if r.GetAuth() != nil {
			anyAuth = true
		} else {
			noAuth = append(noAuth, r.GetName())
		}
	}

	for _, l := range cfg.GetListeners() {
		s.listeners = append(s.listeners, listenerLine{
			name: l.GetName(), address: bound(l.GetName(), l.GetAddress()),
			protocol: config.ListenerProtocol(l), tls: tlsMode(l.GetTls()), requireAuth: l.GetRequireAuth(),
		})
		if !loopback(l.GetAddress()) && !l.GetRequireAuth() && !anyAuth {
			s.warnings = append(s.warnings, fmt.Sprintf(
				"listener %s (%s) is not on loopback and no route requires authentication: anyone who reaches it can call every route; add an authentication section and route auth blocks, or require_auth: true",
				l.GetName(), l.GetAddress()))
		}
	}
	if a := cfg.GetAdmin(); a != nil {
		s.listeners = append(s.listeners, listenerLine{name: "admin", address: bound("admin", a.GetAddress()), protocol: "admin",
			tls: tlsMode(a.GetTls()), requireAuth: a.GetAuth() != nil})
		if !loopback(a.GetAddress()) && a.GetAuth() == nil {
			s.warnings = append(s.warnings, fmt.Sprintf(
				"the admin listener (%s) is not on loopback and has no admin.auth: anyone who reaches it can read the config, reload it and scrape metrics; set admin.auth, or make sure only an internal network reaches it",
				a.GetAddress()))
		}
	}

	for _, b := range cfg.GetBackends() {
		tls := "plaintext"
		if t := b.GetTls(); t != nil {
			tls = "TLS"
			if t.GetClientCertFile() != "" {
				tls = "mTLS"
			}
		}
		eps := plural(len(b.GetEndpoints()), "endpoint")
		if b.GetDiscovery() == "DNS" {
			eps += " (DNS)"
		}
		s.backends = append(s.backends, backendLine{name: b.GetName(), endpoints: eps, tls: tls})
	}

	requireAll := len(cfg.GetListeners()) > 0
	for _, l := range cfg.GetListeners() {
		requireAll = requireAll && l.GetRequireAuth()
	}
	var noTimeout []string
	for _, r := range cfg.GetRoutes() {
		auth := "none"
		switch {
		case r.GetAuth() != nil:
			auth = strings.Join(r.GetAuth().GetRequire(), " or ")
		case requireAll:
			auth = "refused (listeners require auth)"
		}
		s.routes = append(s.routes, routeLine{name: r.GetName(), target: routeTarget(r), auth: auth})

		if r.GetDirectResponse() == nil {
			if t := config.RouteTimeout(r); t.Max == 0 && t.Default == 0 && t.Idle == 0 {
				noTimeout = append(noTimeout, r.GetName())
			}
		}
		if rt := r.GetRetry(); rt != nil && !idempotentOnly(r) {
			if rt.GetAttempts() > 1 {
				s.warnings = append(s.warnings, fmt.Sprintf(
					"route %s retries calls (up to %d attempts): a retried call that is not idempotent may take effect twice; limit the route to idempotent REST methods (match.http_method GET, HEAD, OPTIONS, PUT or DELETE) or leave retry off for calls that are not idempotent",
					r.GetName(), rt.GetAttempts()))
			}
			if rt.GetHedgeDelay() != nil {
				s.warnings = append(s.warnings, fmt.Sprintf(
					"route %s hedges calls (a second attempt after %s): hedging is for idempotent unary methods only",
					r.GetName(), rt.GetHedgeDelay().AsDuration()))
			}
		}
	}
	if len(noTimeout) > 0 {
		s.warnings = append(s.warnings, fmt.Sprintf(
			"%s no timeout: unary calls without a client deadline get the 60s maximum, streams have no deadline and no idle limit; set timeout.max (or timeout.idle for streams)",
			routeList(noTimeout)))
	}
	if len(noAuth) > 0 && anyAuth && !requireAll {
		s.warnings = append(s.warnings, fmt.Sprintf("%s no auth block: callers need no credentials there", routeList(noAuth)))
	}
	return s
}

// routeList words route names as the subject of a sentence.
func routeList(names []string) string {
	if len(names) == 1 {
		return "route " + names[0] + " sets"
	}
	const show = 5
	list := strings.Join(names[:min(len(names), show)], ", ")
	if len(names) > show {
		list += fmt.Sprintf(" and %d more", len(names)-show)
	}
	return "routes " + list + " set"
}

// routeTarget says where a route's calls go.
func routeTarget(r *configv1.Route) string {
	switch {
	case r.GetDirectResponse() != nil:
		return "direct response " + r.GetDirectResponse().GetCode()
	case len(r.GetSplit()) > 0:
		var parts []string
		for _, w := range r.GetSplit() {
			parts = append(parts, fmt.Sprintf("%s %d", w.GetBackend(), w.GetWeight()))
		}
		return "split " + strings.Join(parts, " / ")
	default:
		return r.GetBackend()
	}
}

// tlsMode words a listener's TLS: plaintext, TLS, or mTLS when client
// certificates are asked for.
func tlsMode(t *configv1.ListenerTls) string {
	switch {
	case t == nil:
		return "plaintext"
	case t.GetClientAuth() == "REQUIRE_AND_VERIFY" || t.GetClientAuth() == "VERIFY_IF_GIVEN":
		return "mTLS"
	}
	return "TLS"
}

// idempotentOnly reports whether a route only takes REST methods that are
// idempotent by HTTP's definition. gRPC methods carry no such promise in
// the config.
func idempotentOnly(r *configv1.Route) bool {
	switch r.GetMatch().GetHttpMethod() {
	case "GET", "HEAD", "OPTIONS", "PUT", "DELETE":
		return true
	}
	return false
}

// loopback reports whether a listen address binds loopback only.
func loopback(address string) bool {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// writeText writes the summary for a person at a terminal.
func (s startSummary) writeText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "Gatehouse is serving.")
	fmt.Fprintln(tw, "listeners:")
	for _, l := range s.listeners {
		extra := ""
		if l.requireAuth {
			extra = "\trequire auth"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s%s\n", l.name, l.address, l.protocol, l.tls, extra)
	}
	fmt.Fprintln(tw, "backends:")
	if len(s.backends) == 0 {
		fmt.Fprintln(tw, "  (none)")
	}
	for _, b := range s.backends {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", b.name, b.endpoints, b.tls)
	}
	fmt.Fprintln(tw, "routes:")
	if len(s.routes) == 0 {
		fmt.Fprintln(tw, "  (none: every call gets UNIMPLEMENTED)")
	}
	for _, r := range s.routes {
		fmt.Fprintf(tw, "  %s\t-> %s\tauth: %s\n", r.name, r.target, r.auth)
	}
	_ = tw.Flush()
	if len(s.warnings) > 0 {
		fmt.Fprintln(w, "warnings:")
		for _, x := range s.warnings {
			fmt.Fprintf(w, "  ! %s\n", x)
		}
	}
}

// log writes the summary as process log records: one "serving" record, and
// one warning per risky setting.
func (s startSummary) log(log *slog.Logger) {
	var listeners, backends, routes []string
	for _, l := range s.listeners {
		x := fmt.Sprintf("%s %s %s %s", l.name, l.address, l.protocol, l.tls)
		if l.requireAuth {
			x += " require-auth"
		}
		listeners = append(listeners, x)
	}
	for _, b := range s.backends {
		backends = append(backends, fmt.Sprintf("%s %s %s", b.name, b.endpoints, b.tls))
	}
	var noAuth []string
	for _, r := range s.routes {
		routes = append(routes, fmt.Sprintf("%s -> %s", r.name, r.target))
		if r.auth == "none" {
			noAuth = append(noAuth, r.name)
		}
	}
	log.Info("serving", "listeners", listeners, "backends", backends, "routes", routes, "routes_without_auth", noAuth)
	for _, x := range s.warnings {
		log.Warn("risky setting", "warning", x)
	}
}

// announce writes the summary to stderr: as text when stderr is a
// terminal, else as JSON log records, like the rest of the process log.
func announce(s startSummary, stderr io.Writer, log *slog.Logger) {
	if f, ok := stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			s.writeText(stderr)
			return
		}
	}
	s.log(log)
}
