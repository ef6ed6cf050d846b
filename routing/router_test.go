package routing

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

var update = flag.Bool("update", false, "rewrite golden files")

// namedConn stands in for a backend connection in router tests: the router
// only hands connections out, so a value that names its backend is enough
// to see which backend it picked.
type namedConn struct {
	grpc.ClientConnInterface
	name string
}

// namedPool returns a namedConn for each backend it knows.
type namedPool map[string]bool

func (p namedPool) Conn(b string) (grpc.ClientConnInterface, bool) {
	if !p[b] {
		return nil, false
	}
	return namedConn{name: b}, true
}

func pool(names ...string) namedPool {
	p := namedPool{}
	for _, n := range names {
		p[n] = true
	}
	return p
}

// inProcessAddr is the address type of grpc's bufconn: the gateway's
// in-process REST connection.
type inProcessAddr struct{}

func (inProcessAddr) Network() string { return "bufconn" }
func (inProcessAddr) String() string  { return "bufconn" }

// restCtx is the context of a REST call arriving over the in-process
// connection, with its HTTP attributes in metadata as the REST mux sets
// them.
func restCtx(httpMethod, path, query, clientIP string) (context.Context, metadata.MD) {
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: inProcessAddr{}})
	md := metadata.Pairs(MDHTTPMethod, httpMethod, MDHTTPPath, path, MDHTTPQuery, query, "x-forwarded-for", clientIP)
	return ctx, md
}

func tcpCtx(ip string) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 5555}})
}

func TestRouterPredicates(t *testing.T) {
	table, err := NewTable(routesFromJSON(t, `[
	  {"name":"rest-get","match":{"service":"shop.v1.Orders","http_method":"GET","path":{"prefix":"/v1/orders"}},"backend":"rest"},
	  {"name":"beta-query","match":{"service":"shop.v1.Orders","query":[{"name":"beta","present":true}]},"backend":"beta"},
	  {"name":"header","match":{"service":"shop.v1.Orders","headers":[{"name":"X-Beta","exact":"1"}]},"backend":"beta"},
	  {"name":"office","match":{"service":"shop.v1.Orders","source_cidrs":["10.0.0.0/8","fd00::/8"]},"backend":"office"},
	  {"name":"gold","match":{"service":"shop.v1.Orders","claims":[{"name":"tier","exact":"gold"}]},"backend":"gold"},
	  {"name":"admins","match":{"service":"shop.v1.Orders","claims":[{"name":"groups","exact":"admin"}]},"backend":"admin"},
	  {"name":"cel","match":{"service":"shop.v1.Orders","cel":"method.endsWith(\"/Delete\") && metadata[\"x-user\"].startsWith(\"u\")"},"backend":"cel"},
	  {"name":"path-regex","match":{"path":{"regex":"/v2/.*"}},"backend":"v2"},
	  {"name":"default","match":{"service":"shop.v1.Orders"},"backend":"orders"}
	]`))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter(table, pool("rest", "beta", "office", "gold", "admin", "cel", "v2", "orders"))
	withClaims := func(claims map[string]any) context.Context {
		return callinfo.WithPrincipal(tcpCtx("192.0.2.1"), callinfo.Principal{Subject: "s", Claims: claims})
	}
	getCtx, getMD := restCtx("GET", "/v1/orders/7", "", "192.0.2.9")
	postCtx, postMD := restCtx("POST", "/v1/orders", "beta=1", "192.0.2.9")
	officeRESTCtx, officeRESTMD := restCtx("POST", "/v1/x", "", "10.1.2.3")
	v2Ctx, v2MD := restCtx("GET", "/v2/things", "", "192.0.2.9")
	tests := []struct {
		name   string
		ctx    context.Context
		method string
		md     metadata.MD
		want   string
	}{
		{"rest GET with path prefix", getCtx, "/shop.v1.Orders/Get", getMD, "rest"},
		{"rest POST with query", postCtx, "/shop.v1.Orders/Create", postMD, "beta"},
		{"grpc cannot forge REST attributes", tcpCtx("192.0.2.1"), "/shop.v1.Orders/Get", metadata.Pairs(MDHTTPMethod, "GET", MDHTTPPath, "/v1/orders/1"), "orders"},
		{"header matches metadata", tcpCtx("192.0.2.1"), "/shop.v1.Orders/Get", metadata.Pairs("x-beta", "1"), "beta"},
		{"source in ipv4 range", tcpCtx("10.9.8.7"), "/shop.v1.Orders/Get", nil, "office"},
		{"source in ipv6 range", tcpCtx("fd12::1"), "/shop.v1.Orders/Get", nil, "office"},
		{"rest source from x-forwarded-for", officeRESTCtx, "/shop.v1.Orders/Get", officeRESTMD, "office"},
		{"grpc x-forwarded-for is not trusted", tcpCtx("192.0.2.1"), "/shop.v1.Orders/Get", metadata.Pairs("x-forwarded-for", "10.0.0.1"), "orders"},
		{"claim", withClaims(map[string]any{"tier": "gold"}), "/shop.v1.Orders/Get", nil, "gold"},
		{"list claim", withClaims(map[string]any{"groups": []any{"dev", "admin"}}), "/shop.v1.Orders/Get", nil, "admin"},
		{"no claims", tcpCtx("192.0.2.1"), "/shop.v1.Orders/Get", nil, "orders"},
		{"cel true", tcpCtx("192.0.2.1"), "/shop.v1.Orders/Delete", metadata.Pairs("x-user", "u42"), "cel"},
		{"cel false", tcpCtx("192.0.2.1"), "/shop.v1.Orders/Delete", metadata.Pairs("x-user", "admin"), "orders"},
		{"cel missing key is false", tcpCtx("192.0.2.1"), "/shop.v1.Orders/Delete", nil, "orders"},
		{"path regex on another service", v2Ctx, "/other.v1.S/Get", v2MD, "v2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			md := tc.md
			if md == nil {
				md = metadata.MD{}
			}
			got, err := r.Resolve(tc.ctx, tc.method, md)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got.Backend != tc.want {
				t.Errorf("backend %q (route %q), want %q", got.Backend, got.Route, tc.want)
			}
		})
	}
}

func TestRouterActions(t *testing.T) {
	table, err := NewTable(routesFromJSON(t, `[
	  {"name":"maintenance","match":{"service":"shop.v1.Legacy"},"direct_response":{"code":"UNAVAILABLE","message":"down for maintenance"}},
	  {"name":"rewrite-service","match":{"service":"shop.v1.Orders"},"backend":"orders","rewrite":{"service":"orders.v2.Orders"},
	   "request_metadata":{"remove":["x-debug"],"set":[{"name":"x-env","value":"prod"}],"add":[{"name":"x-via","value":"gatehouse"}]}},
	  {"name":"rewrite-method","match":{"method":"/shop.v1.Users/Get"},"backend":"users","rewrite":{"method":"/users.v3.Users/Fetch"}},
	  {"name":"mirrored","match":{"service":"shop.v1.Carts"},"backend":"carts","mirror":{"backend":"shadow","percent":100}},
	  {"name":"unmirrored","match":{"service":"shop.v1.Wish"},"backend":"carts","mirror":{"backend":"shadow","percent":0}}
	]`))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter(table, pool("orders", "users", "carts", "shadow"))
	// One callinfo.Info per call, as the chain attaches it.
	call := func() context.Context { ctx, _ := callinfo.With(context.Background()); return ctx }
	ctx, info := callinfo.With(context.Background())

	_, err = r.Resolve(ctx, "/shop.v1.Legacy/Get", metadata.MD{})
	if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "down for maintenance" {
		t.Errorf("direct response: %v", st.Proto())
	}
	if route, _ := info.Route(); route != "maintenance" {
		t.Errorf("direct response not recorded in callinfo: %q", route)
	}

	tg, err := r.Resolve(call(), "/shop.v1.Orders/Get", metadata.MD{})
	if err != nil || tg.Method != "/orders.v2.Orders/Get" {
		t.Errorf("service rewrite: %q, %v", tg.Method, err)
	}
	md := metadata.Pairs("x-debug", "1", "x-env", "dev", "x-via", "edge-lb")
	tg.Metadata.Apply(md)
	if _, ok := md["x-debug"]; ok || fmt.Sprint(md["x-env"]) != "[prod]" || fmt.Sprint(md["x-via"]) != "[edge-lb gatehouse]" {
		t.Errorf("metadata actions gave %v", md)
	}

	tg, _ = r.Resolve(call(), "/shop.v1.Users/Get", metadata.MD{})
	if tg.Method != "/users.v3.Users/Fetch" {
		t.Errorf("method rewrite: %q", tg.Method)
	}
	tg, _ = r.Resolve(call(), "/shop.v1.Carts/Add", metadata.MD{})
	if tg.Mirror == nil || tg.Mirror.Backend != "shadow" {
		t.Errorf("mirror 100%%: %+v", tg.Mirror)
	}
	tg, _ = r.Resolve(call(), "/shop.v1.Wish/Add", metadata.MD{})
	if tg.Mirror != nil {
		t.Errorf("mirror 0%%: %+v", tg.Mirror)
	}
}

// TestWeightedSplit: a 90/10 split lands within ±2 points of its weights
// over 10,000 calls, with a fixed seed.
func TestWeightedSplit(t *testing.T) {
	table, err := NewTable(routesFromJSON(t, `[{"name":"orders","split":[{"backend":"orders","weight":90},{"backend":"canary","weight":10}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter(table, pool("orders", "canary"), WithRandom(rand.NewPCG(1, 2)))
	counts := map[string]int{}
	for range 10000 {
		tg, err := r.Resolve(context.Background(), "/a.A/M", metadata.MD{})
		if err != nil {
			t.Fatal(err)
		}
		counts[tg.Backend]++
	}
	if c := counts["canary"]; c < 800 || c > 1200 {
		t.Errorf("canary got %d of 10000 calls, want 1000±200 (counts %v)", c, counts)
	}
}

// TestStickySplit: with a sticky key, a key never changes sides, and keys
// spread by the weights.
func TestStickySplit(t *testing.T) {
	table, err := NewTable(routesFromJSON(t, `[{"name":"orders","split":[{"backend":"a","weight":50},{"backend":"b","weight":50}],"sticky_key":"metadata[\"x-user-id\"]"}]`))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter(table, pool("a", "b"), WithRandom(rand.NewPCG(3, 4)))
	side := map[string]string{}
	counts := map[string]int{}
	for round := range 5 {
		for u := range 1000 {
			user := fmt.Sprintf("user-%d", u)
			tg, err := r.Resolve(context.Background(), "/a.A/M", metadata.Pairs("x-user-id", user))
			if err != nil {
				t.Fatal(err)
			}
			if round == 0 {
				side[user] = tg.Backend
				counts[tg.Backend]++
			} else if side[user] != tg.Backend {
				t.Fatalf("%s moved from %s to %s", user, side[user], tg.Backend)
			}
		}
	}
	if counts["a"] < 400 || counts["a"] > 600 {
		t.Errorf("users per side %v, want about 500 each", counts)
	}
}

// TestExplain compares explanations with golden files in testdata/explain.
func TestExplain(t *testing.T) {
	table, err := NewTable(routesFromJSON(t, `[
	  {"name":"canary","match":{"service":"shop.orders.v1.Orders","metadata":[{"name":"x-track","exact":"canary"}]},"backend":"orders-canary"},
	  {"name":"office","match":{"source_cidrs":["10.0.0.0/8"]},"backend":"office"},
	  {"name":"rest-only","match":{"http_method":"DELETE"},"backend":"rest"},
	  {"name":"gold","match":{"cel":"claims.tier == \"gold\""},"backend":"gold"},
	  {"name":"sticky","match":{"service":"shop.orders.v1.Orders"},"split":[{"backend":"orders","weight":90},{"backend":"orders-canary","weight":10}],"sticky_key":"metadata[\"x-user-id\"]"},
	  {"name":"maintenance","match":{"service":"shop.legacy.*"},"direct_response":{"code":"UNAVAILABLE","message":"gone"}}
	]`))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter(table, pool())
	cases := map[string]*Request{
		"sticky":      {Method: "/shop.orders.v1.Orders/Get", Metadata: metadata.Pairs("x-track", "stable", "x-user-id", "u1")},
		"canary":      {Method: "/shop.orders.v1.Orders/Get", Metadata: metadata.Pairs("x-track", "canary")},
		"maintenance": {Method: "/shop.legacy.v1.Old/Get", Metadata: metadata.MD{}},
		"none":        {Method: "/other.v1.S/M", Metadata: metadata.MD{}},
	}
	for name, req := range cases {
		t.Run(name, func(t *testing.T) {
			e := r.Explain(req)
			var b strings.Builder
			if e.Route == nil {
				fmt.Fprintf(&b, "route: (none)\n")
			} else if e.Direct != nil {
				fmt.Fprintf(&b, "route: %s\ndirect response: %s %q\n", e.Route.Name, e.Direct.Code(), e.Direct.Message())
			} else {
				fmt.Fprintf(&b, "route: %s\nbackend: %s\n", e.Route.Name, e.Backend)
			}
			for _, p := range e.PassedOver {
				fmt.Fprintf(&b, "passed over %s: %s\n", p.Route, p.Reason)
			}
			golden := filepath.Join("testdata", "explain", name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if b.String() != string(want) {
				t.Errorf("explain:\n%s\nwant:\n%s", b.String(), want)
			}
		})
	}
}

// BenchmarkMixedRoutes: 1,000 routes of mixed predicates, the match at the
// end of its candidate list.
func BenchmarkMixedRoutes(b *testing.B) {
	var js strings.Builder
	js.WriteString("[")
	for i := range 1000 {
		if i > 0 {
			js.WriteString(",")
		}
		switch i % 4 {
		case 0:
			fmt.Fprintf(&js, `{"name":"r%d","match":{"service":"svc%d.v1.S","metadata":[{"name":"x-track","exact":"canary"}]},"backend":"b"}`, i, i%50)
		case 1:
			fmt.Fprintf(&js, `{"name":"r%d","match":{"method":"/svc%d.v1.S/Get*","headers":[{"name":"x-tenant","regex":"t[0-9]+"}]},"backend":"b"}`, i, i%50)
		case 2:
			fmt.Fprintf(&js, `{"name":"r%d","match":{"service":"pkg%d.*","metadata":[{"name":"x-user","prefix":"adm-"}]},"backend":"b"}`, i, i)
		case 3:
			fmt.Fprintf(&js, `{"name":"r%d","match":{"authority":"*.tenant%d.example.com"},"backend":"b"}`, i, i)
		}
	}
	js.WriteString(`,{"name":"last","backend":"b"}]`)
	table, err := NewTable(routesFromJSON(b, js.String()))
	if err != nil {
		b.Fatal(err)
	}
	r := NewRouter(table, pool("b"))
	md := metadata.Pairs(":authority", "api.example.com", "x-track", "stable", "x-tenant", "acme", "x-user", "joe")
	ctx := tcpCtx("192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Resolve(ctx, "/svc7.v1.S/GetOrder", md); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRouterPinsTheTableToTheCall: the first Match of a call pins the table
// in force to its callinfo.Info; a Swap after that changes nothing for the
// call (Match and Resolve give the route of the pinned table), while a new
// call gets the new table. The route is recorded as soon as it is matched.
// With a route on claims the match is made again each time (the principal
// may come in between), on the pinned table still.
func TestRouterPinsTheTableToTheCall(t *testing.T) {
	table := func(name string, byClaims bool) *Table {
		claims := ""
		if byClaims {
			claims = fmt.Sprintf(`{"name":"%s-gold","match":{"claims":[{"name":"tier","exact":"gold"}]},"backend":"gold"},`, name)
		}
		tb, err := NewTable(routesFromJSON(t, fmt.Sprintf(`[%s{"name":"%s","match":{"service":"shop.v1.Orders"},"backend":"%[2]s"}]`, claims, name)))
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	for _, byClaims := range []bool{false, true} {
		t.Run(fmt.Sprintf("byClaims=%v", byClaims), func(t *testing.T) {
			old, next := table("old", byClaims), table("new", byClaims)
			r := NewRouter(old, pool("old", "new", "gold"))
			ctx, info := callinfo.With(context.Background())
			tb, rt, ok := r.Match(ctx, "/shop.v1.Orders/Get", metadata.MD{})
			if !ok || tb != old || rt.Name != "old" {
				t.Fatalf("Match = %p, %v, %v; want the old table's route", tb, rt, ok)
			}
			if route, backend := info.Route(); route != "old" || backend != "" {
				t.Errorf("recorded %q, %q; want the route, no backend yet", route, backend)
			}
			r.Swap(next)
			if tb, rt, _ := r.Match(ctx, "/shop.v1.Orders/Get", metadata.MD{}); tb != old || rt.Name != "old" {
				t.Errorf("after Swap, the same call matched %v on %p; want old on the pinned table", rt, tb)
			}
			if tg, err := r.Resolve(ctx, "/shop.v1.Orders/Get", metadata.MD{}); err != nil || tg.Route != "old" || tg.Backend != "old" {
				t.Errorf("after Swap, the same call resolved %+v, %v; want route old", tg, err)
			}
			fresh, _ := callinfo.With(context.Background())
			if tg, err := r.Resolve(fresh, "/shop.v1.Orders/Get", metadata.MD{}); err != nil || tg.Route != "new" {
				t.Errorf("a new call resolved %+v, %v; want route new", tg, err)
			}
		})
	}
}

func TestRouteTarget(t *testing.T) {
	table, err := NewTable(routesFromJSON(t, `[
	  {"name":"one","match":{"service":"a.A"},"backend":"orders"},
	  {"name":"split","match":{"service":"a.B"},"split":[{"backend":"orders","weight":90},{"backend":"canary","weight":10}]},
	  {"name":"sticky","match":{"service":"a.C"},"split":[{"backend":"a","weight":1},{"backend":"b","weight":1}],"sticky_key":"metadata[\"x-user\"]"},
	  {"name":"direct","match":{"service":"a.D"},"direct_response":{"code":"UNAVAILABLE","message":"down"}},
	  {"name":"mirrored","match":{"service":"a.E"},"backend":"orders","mirror":{"backend":"shadow","percent":2.5}}
	]`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"orders", "split orders 90 / canary 10", "split a 1 / b 1 sticky", "direct response UNAVAILABLE", "orders + mirror shadow 2.5%"}
	for i, r := range table.Routes() {
		if got := r.Target(); got != want[i] {
			t.Errorf("%s: Target() = %q, want %q", r.Name, got, want[i])
		}
	}
}
