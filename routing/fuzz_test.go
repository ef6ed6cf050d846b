package routing

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// fuzzRoutes exercise every index bucket (exact service, method glob,
// package glob, exact and wildcard authority, generic) and every value
// matcher, so that the indexed lookup can be checked against a scan.
const fuzzRoutes = `[
  {"name":"canary","match":{"service":"shop.orders.v1.Orders","metadata":[{"name":"x-track","exact":"canary"}]},"backend":"b"},
  {"name":"get","match":{"method":"/shop.orders.v1.Orders/Get*"},"backend":"b"},
  {"name":"orders","match":{"service":"shop.orders.v1.Orders"},"backend":"b"},
  {"name":"pkg","match":{"service":"shop.billing.*"},"backend":"b"},
  {"name":"deep","match":{"service":"a.b.c.d.*"},"backend":"b"},
  {"name":"exact-method","match":{"method":"/shop.users.v1.Users/Delete"},"backend":"b"},
  {"name":"prefix","match":{"service":"shop.users.v1.Users","metadata":[{"name":"x-user","prefix":"adm-"}]},"backend":"b"},
  {"name":"suffix","match":{"service":"shop.users.v1.Users","metadata":[{"name":"x-user","suffix":"-bot"}]},"backend":"b"},
  {"name":"regex","match":{"service":"shop.users.v1.Users","metadata":[{"name":"x-user","regex":"u[0-9]+"}]},"backend":"b"},
  {"name":"absent","match":{"service":"shop.users.v1.Users","metadata":[{"name":"x-user","absent":true}]},"backend":"b"},
  {"name":"not-beta","match":{"service":"shop.users.v1.Users","metadata":[{"name":"x-user","present":true},{"name":"x-beta","exact":"1","invert":true}]},"backend":"b"},
  {"name":"rest","match":{"http_method":"GET","path":{"regex":"/v1/books/[^/]+"},"query":[{"name":"view","exact":"full"}]},"backend":"b"},
  {"name":"rest-prefix","match":{"path":{"prefix":"/v1/admin/"}},"backend":"b"},
  {"name":"cidr","match":{"service":"shop.internal.v1.Ops","source_cidrs":["10.0.0.0/8","2001:db8::/32"]},"backend":"b"},
  {"name":"cel","match":{"cel":"metadata[\"x-tenant\"] == \"acme\" && method.startsWith(\"/acme.\")"},"backend":"b"},
  {"name":"host","match":{"authority":"*.example.com"},"backend":"b"},
  {"name":"bare-host","match":{"authority":"example.com"},"backend":"b"},
  {"name":"deep-host","match":{"authority":"*.a.b.c.d.e"},"backend":"b"}
]`

// FuzzMatch checks that the indexed lookup (MatchRequest) always picks the
// route that a plain scan of every route in order (Explain) picks, and never
// panics, whatever the method, authority, metadata, path, query and source
// address.
func FuzzMatch(f *testing.F) {
	table, err := NewTable(routesFromJSON(f, fuzzRoutes))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("/shop.orders.v1.Orders/GetOrder", "api.example.com:443", "x-track", "canary", "", "", "", "")
	f.Add("/shop.users.v1.Users/Delete", "EXAMPLE.com", "x-user", "u123", "", "", "", "10.1.2.3")
	f.Add("/shop.billing.v2.Invoices/List", "[::1]:8080", "x-beta", "1", "", "", "", "2001:db8::1")
	f.Add("/examples.library.v1.LibraryService/GetBook", "x.a.b.c.d.e", "x-tenant", "acme", "GET", "/v1/books/1", "view=full", "")
	f.Add("/acme.v1.X/Y", "", "x-tenant", "acme", "POST", "/v1/admin/x", "a=1&a=2", "::ffff:10.0.0.1")
	f.Add("noslash", ".", "", "", "", "", "%zz", "")
	f.Add("/a.b.c.d.e.f.G/M", "..example.com", "X-User", "adm-x", "", "//", ";", "")
	f.Fuzz(func(t *testing.T, method, authority, key, value, httpMethod, path, query, src string) {
		md := metadata.MD{}
		if authority != "" {
			md[":authority"] = []string{authority}
		}
		if key != "" {
			md[strings.ToLower(key)] = []string{value}
		}
		req := &Request{Method: method, Metadata: md, HTTPMethod: httpMethod, Path: path}
		req.Query, _ = url.ParseQuery(query)
		req.SourceIP, _ = netip.ParseAddr(src)
		got, ok := table.MatchRequest(req)
		want, _ := table.Explain(req)
		if ok != (want != nil) || (ok && got != want) {
			t.Fatalf("MatchRequest = %v (%v), a scan picks %v", name(got), ok, name(want))
		}
	})
}

func name(r *Route) string {
	if r == nil {
		return "<none>"
	}
	return r.Name
}

// FuzzSanitize checks the metadata rules of the director on any key and
// value: no reserved key (pseudo headers, hop-by-hop, grpc-*, the gateway's
// own x-gatehouse-*) reaches a backend or a client, every other key passes
// unchanged, and x-forwarded-for ends with the peer's address.
func FuzzSanitize(f *testing.F) {
	d := NewDirector(nil, WithStripKeys("x-secret"))
	for _, k := range []string{":authority", "connection", "te", "grpc-timeout", "grpc-status", "x-gatehouse-subject",
		"X-Gatehouse-Http-Path", "x-forwarded-for", "x-secret", "x-keep", "x-keep-bin", "host", "user-agent"} {
		f.Add(k, "v", "x-other", "w", "192.0.2.1")
	}
	f.Add("x-forwarded-for", "", "x-forwarded-for", "203.0.113.9", "2001:db8::1")
	f.Add("x-forwarded-for", "a, b", "", "", "")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, ip string) {
		md := metadata.MD{}
		for _, kv := range [][2]string{{k1, v1}, {k2, v2}} {
			if kv[0] != "" {
				k := strings.ToLower(kv[0])
				md[k] = append(md[k], kv[1])
			}
		}
		in := md.Copy()
		ctx := context.Background()
		a, ipErr := netip.ParseAddr(ip)
		if ipErr == nil {
			ctx = peer.NewContext(ctx, &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 1234))})
		}
		out := d.sanitizeRequest(ctx, md)
		for k, v := range out {
			if isReservedKey(k) || k == "x-secret" {
				t.Fatalf("reserved key %q forwarded", k)
			}
			if k == forwardedForKey {
				continue
			}
			if strings.Join(v, "\x00") != strings.Join(in[k], "\x00") {
				t.Fatalf("key %q: forwarded %q, client sent %q", k, v, in[k])
			}
		}
		for k := range in {
			if _, ok := out[k]; !ok && !isReservedKey(k) && k != "x-secret" {
				t.Fatalf("key %q dropped", k)
			}
		}
		if ipErr == nil {
			xff := out[forwardedForKey]
			want := net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 1234)).IP.String()
			if len(xff) != 1 || !strings.HasSuffix(xff[0], want) {
				t.Fatalf("x-forwarded-for = %q, want it to end with %q", xff, want)
			}
		}
		resp := sanitizeResponse(in.Copy())
		for k := range resp {
			if isReservedKey(k) {
				t.Fatalf("reserved key %q returned to the client", k)
			}
		}
	})
}
