package routing

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
)

// routesFromJSON builds config routes from their JSON form, as the config
// loader would.
func routesFromJSON(t testing.TB, js string) []*configv1.Route {
	t.Helper()
	var c configv1.Config
	if err := protojson.Unmarshal([]byte(`{"routes":`+js+`}`), &c); err != nil {
		t.Fatalf("bad routes JSON: %v", err)
	}
	return c.GetRoutes()
}

func TestTableMatch(t *testing.T) {
	routes := routesFromJSON(t, `[
	  {"name":"canary","match":{"service":"shop.orders.v1.Orders","metadata":[{"name":"x-track","exact":"canary"}]},"backend":"orders-canary"},
	  {"name":"get","match":{"method":"/shop.orders.v1.Orders/Get*"},"backend":"orders-read"},
	  {"name":"orders","match":{"service":"shop.orders.v1.Orders"},"backend":"orders"},
	  {"name":"pkg","match":{"service":"shop.billing.*"},"backend":"billing"},
	  {"name":"exact-method","match":{"method":"/shop.users.v1.Users/Delete"},"backend":"users-admin"},
	  {"name":"prefix","match":{"service":"shop.users.v1.Users","metadata":[{"name":"x-user","prefix":"adm-"}]},"backend":"users-admin"},
	  {"name":"suffix","match":{"service":"shop.users.v1.Users","metadata":[{"name":"x-user","suffix":"-bot"}]},"backend":"users-bots"},
	  {"name":"regex","match":{"service":"shop.users.v1.Users","metadata":[{"name":"x-user","regex":"u[0-9]+"}]},"backend":"users-num"},
	  {"name":"absent","match":{"service":"shop.users.v1.Users","metadata":[{"name":"x-user","absent":true}]},"backend":"users-anon"},
	  {"name":"present-not-beta","match":{"service":"shop.users.v1.Users","metadata":[{"name":"x-user","present":true},{"name":"x-beta","exact":"1","invert":true}]},"backend":"users"},
	  {"name":"host","match":{"authority":"*.example.com"},"backend":"tenant"},
	  {"name":"bare-host","match":{"authority":"example.com"},"backend":"apex"},
	  {"name":"all","match":{"service":"*"},"backend":"default"}
	]`)
	table, err := NewTable(routes)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method string
		md     metadata.MD
		want   string // route name; "" for no match
	}{
		{"/shop.orders.v1.Orders/GetOrder", metadata.Pairs("x-track", "canary"), "canary"},
		{"/shop.orders.v1.Orders/GetOrder", metadata.Pairs("x-track", "stable"), "get"},
		{"/shop.orders.v1.Orders/GetOrder", nil, "get"},
		{"/shop.orders.v1.Orders/PlaceOrder", nil, "orders"},
		{"/shop.orders.v1.Orders/PlaceOrder", metadata.Pairs("x-track", "canary", "x-track", "other"), "canary"},
		{"/shop.orders.v1.OrdersAdmin/Get", nil, "all"},
		{"/shop.billing.v1.Invoices/List", nil, "pkg"},
		{"/shop.billing.v2.Payments/Pay", nil, "pkg"},
		{"/shop.billingx.v1.Invoices/List", nil, "all"},
		{"/shop.users.v1.Users/Delete", metadata.Pairs("x-user", "u1"), "exact-method"},
		{"/shop.users.v1.Users/DeleteAll", metadata.Pairs("x-user", "adm-joe"), "prefix"},
		{"/shop.users.v1.Users/Get", metadata.Pairs("x-user", "crawl-bot"), "suffix"},
		{"/shop.users.v1.Users/Get", metadata.Pairs("x-user", "u42"), "regex"},
		{"/shop.users.v1.Users/Get", metadata.Pairs("x-user", "xu42"), "present-not-beta"}, // regex is anchored
		{"/shop.users.v1.Users/Get", metadata.Pairs("x-user", "u42x"), "present-not-beta"},
		{"/shop.users.v1.Users/Get", nil, "absent"},
		{"/shop.users.v1.Users/Get", metadata.Pairs("x-user", "joe", "x-beta", "1"), "all"},
		{"/shop.users.v1.Users/Get", metadata.Pairs("x-user", "joe", "x-beta", "2"), "present-not-beta"},
		{"/other.Svc/M", metadata.Pairs(":authority", "a.example.com:8080"), "host"},
		{"/other.Svc/M", metadata.Pairs(":authority", "A.B.EXAMPLE.COM"), "host"},
		{"/other.Svc/M", metadata.Pairs(":authority", "example.com"), "bare-host"},
		// A client cannot push a wildcard out of reach with a deep host.
		{"/other.Svc/M", metadata.Pairs(":authority", strings.Repeat("a.", 200)+"example.com"), "host"},
		{"/shop.billing." + strings.Repeat("x.", 200) + "Svc/M", nil, "pkg"},
		{"/other.Svc/M", metadata.Pairs(":authority", "notexample.com"), "all"},
		{"/other.Svc/M", nil, "all"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s %v", tc.method, tc.md), func(t *testing.T) {
			r, ok := table.Match(tc.method, tc.md)
			got := ""
			if ok {
				got = r.Name
			}
			if got != tc.want {
				t.Errorf("Match(%s, %v) = %q, want %q", tc.method, tc.md, got, tc.want)
			}
		})
	}
}

func TestTableNoMatch(t *testing.T) {
	table, err := NewTable(routesFromJSON(t, `[{"name":"a","match":{"service":"a.A"},"backend":"x"}]`))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := table.Match("/b.B/M", nil); ok {
		t.Fatalf("Match = %q, want no match", r.Name)
	}
	err = NoRouteError("/b.B/M")
	if !IsNoRoute(err) {
		t.Fatalf("IsNoRoute(%v) = false", err)
	}
	if IsNoRoute(fmt.Errorf("other")) {
		t.Fatal("IsNoRoute(plain error) = true")
	}
}

func TestTableEmptyMatchTakesAll(t *testing.T) {
	table, err := NewTable(routesFromJSON(t, `[{"name":"svc","match":{"service":"a.A"},"backend":"x"},{"name":"rest","backend":"y"}]`))
	if err != nil {
		t.Fatal(err)
	}
	for method, want := range map[string]string{"/a.A/M": "svc", "/z.Z/M": "rest"} {
		if r, ok := table.Match(method, nil); !ok || r.Name != want {
			t.Errorf("Match(%s) = %v, want %s", method, r, want)
		}
	}
}

func TestRouteString(t *testing.T) {
	table, err := NewTable(routesFromJSON(t, `[{"name":"a","match":{"service":"shop.orders.v1.Orders","metadata":[{"name":"x-track","exact":"canary"},{"name":"x-b","present":true,"invert":true}]},"backend":"x"}]`))
	if err != nil {
		t.Fatal(err)
	}
	want := `service="shop.orders.v1.Orders" metadata[x-track]=="canary" !metadata[x-b] present`
	if got := table.Routes()[0].String(); got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
}

// BenchmarkTableMatch measures a lookup with many routes: exact-service
// routes are indexed, so their cost does not grow with the table.
func BenchmarkTableMatch(b *testing.B) {
	for _, n := range []int{10, 10000} {
		js := "["
		for i := range n {
			if i > 0 {
				js += ","
			}
			js += fmt.Sprintf(`{"name":"r%d","match":{"service":"svc%d.v1.S","metadata":[{"name":"x-track","exact":"canary"}]},"backend":"b"}`, i, i)
		}
		js += "]"
		table, err := NewTable(routesFromJSON(b, js))
		if err != nil {
			b.Fatal(err)
		}
		md := metadata.Pairs("x-track", "canary", ":authority", "example.com")
		method := fmt.Sprintf("/svc%d.v1.S/Get", n/2)
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := table.Match(method, md); !ok {
					b.Fatal("no match")
				}
			}
		})
	}
}

// BenchmarkUnindexedRoutes is the worst case of matching: 1,000 routes
// that no index narrows (no service, method or authority: header-only and
// source-CIDR conditions, and in one variant a CEL condition on one route
// in ten), and a call that only the catch-all route after them takes, so
// every route is tested.
func BenchmarkUnindexedRoutes(b *testing.B) {
	for _, celEvery := range []int{0, 100, 10} {
		var js strings.Builder
		js.WriteString("[")
		for i := range 1000 {
			if i > 0 {
				js.WriteString(",")
			}
			switch {
			case celEvery > 0 && i%celEvery == celEvery-1:
				fmt.Fprintf(&js, `{"name":"r%d","match":{"cel":"metadata[\"x-tenant\"] == \"cel-%d\""},"backend":"b"}`, i, i)
			case i%2 == 0:
				fmt.Fprintf(&js, `{"name":"r%d","match":{"headers":[{"name":"x-tenant","exact":"tenant-%d"}]},"backend":"b"}`, i, i)
			default:
				fmt.Fprintf(&js, `{"name":"r%d","match":{"source_cidrs":["10.%d.%d.0/24"]},"backend":"b"}`, i, i/256, i%256)
			}
		}
		js.WriteString(`,{"name":"last","backend":"b"}]`)
		table, err := NewTable(routesFromJSON(b, js.String()))
		if err != nil {
			b.Fatal(err)
		}
		r := NewRouter(table, pool("b"))
		md := metadata.Pairs(":authority", "api.example.com", "x-tenant", "acme")
		ctx := tcpCtx("192.0.2.1")
		name := "headers+cidr"
		if celEvery > 0 {
			name = fmt.Sprintf("cel-1-in-%d", celEvery)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if tg, err := r.Resolve(ctx, "/svc7.v1.S/GetOrder", md); err != nil || tg.Route != "last" {
					b.Fatal(tg.Route, err)
				}
			}
		})
	}
}

// TestHeaderIndexAgreesWithAScan: routes that require a header value sit
// in an index by that value; for calls that send no value, one value,
// another value, or several, the indexed lookup takes the same route as a
// scan of every route in order (Explain), including when indexed, generic
// and service routes interleave, and with more header names than are
// indexed.
func TestHeaderIndexAgreesWithAScan(t *testing.T) {
	var js strings.Builder
	js.WriteString(`[
	  {"name":"svc-first","match":{"service":"a.v1.A","headers":[{"name":"x-tenant","exact":"t1"}]},"backend":"b"},
	  {"name":"t1","match":{"headers":[{"name":"x-tenant","exact":"t1"}]},"backend":"b"},
	  {"name":"not-t2","match":{"headers":[{"name":"x-tenant","exact":"t2","invert":true},{"name":"x-flag","present":true}]},"backend":"b"},
	  {"name":"t2-cidr","match":{"source_cidrs":["192.0.2.0/24"],"headers":[{"name":"x-tenant","exact":"t2"}]},"backend":"b"},
	  {"name":"t2","match":{"headers":[{"name":"x-tenant","exact":"t2"}]},"backend":"b"},
	  {"name":"region-eu","match":{"headers":[{"name":"x-region","exact":"eu"}]},"backend":"b"},
	  {"name":"t3-eu","match":{"headers":[{"name":"x-region","exact":"eu"},{"name":"x-tenant","exact":"t3"}]},"backend":"b"}`)
	for i := range maxHeaderIndexes + 2 { // more names than are indexed
		fmt.Fprintf(&js, `,{"name":"h%d","match":{"headers":[{"name":"x-h%d","exact":"v"}]},"backend":"b"}`, i, i)
	}
	js.WriteString(`,{"name":"t1-late","match":{"headers":[{"name":"x-tenant","exact":"t1"}]},"backend":"b"}]`)
	table, err := NewTable(routesFromJSON(t, js.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(table.headers) != maxHeaderIndexes || len(table.generic) == 0 {
		t.Fatalf("%d header indexes, %d generic routes; want %d and some", len(table.headers), len(table.generic), maxHeaderIndexes)
	}
	src := netip.MustParseAddr("192.0.2.9")
	for _, tc := range []struct {
		name, method string
		md           metadata.MD
		want         string
	}{
		{"none", "/z.Z/M", metadata.MD{}, ""},
		{"t1", "/z.Z/M", metadata.Pairs("x-tenant", "t1"), "t1"},
		{"t1 on the service", "/a.v1.A/M", metadata.Pairs("x-tenant", "t1"), "svc-first"},
		{"t2 from the range", "/z.Z/M", metadata.Pairs("x-tenant", "t2"), "t2-cidr"},
		{"other tenant flagged", "/z.Z/M", metadata.Pairs("x-tenant", "t9", "x-flag", "1"), "not-t2"},
		{"several values", "/z.Z/M", metadata.Pairs("x-tenant", "t9", "x-tenant", "t2"), "t2-cidr"},
		{"several values, later", "/z.Z/M", metadata.Pairs("x-tenant", "t9", "x-tenant", "t3", "x-region", "eu"), "region-eu"},
		{"unindexed name", "/z.Z/M", metadata.Pairs(fmt.Sprintf("x-h%d", maxHeaderIndexes), "v"), fmt.Sprintf("h%d", maxHeaderIndexes)},
		{"indexed name", "/z.Z/M", metadata.Pairs("x-h0", "v"), "h0"},
		{"wrong value", "/z.Z/M", metadata.Pairs("x-h0", "w", "x-region", "us"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &Request{Method: tc.method, Metadata: tc.md, SourceIP: src}
			got := ""
			if r, ok := table.MatchRequest(req); ok {
				got = r.Name
			}
			scan := ""
			if r, _ := table.Explain(req); r != nil {
				scan = r.Name
			}
			if got != tc.want || scan != tc.want {
				t.Errorf("indexed lookup %q, scan %q; want %q", got, scan, tc.want)
			}
		})
	}
}
