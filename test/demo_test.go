package test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	adminv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/admin/v1"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

// startDemo runs `gatehouse demo`'s assembly on free ports.
func startDemo(t *testing.T, opts ...edge.Option) *demo.Demo {
	t.Helper()
	d, err := demo.Start(context.Background(), demo.Addresses{Edge: "127.0.0.1:0", Admin: "127.0.0.1:0"},
		append([]edge.Option{edge.WithHealthInterval(20 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("demo shutdown: %v", err)
		}
	})
	return d
}

// waitReady polls the admin listener's health until SERVING.
func waitReady(t *testing.T, d *demo.Demo) {
	t.Helper()
	hc := healthpb.NewHealthClient(dial(t, d.Gateway.Addr("admin").String()))
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not SERVING after 10s: %v %v", resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDemoGRPC(t *testing.T) {
	var access syncBuffer
	d := startDemo(t, edge.WithAccessLogger(jsonLogger(&access)))
	waitReady(t, d)
	gc := greeterv1.NewGreeterServiceClient(dial(t, d.Gateway.Addr("edge").String()))
	ctx := context.Background()

	// Round-robin over the two instances of the "greeter" backend.
	seen := map[string]int{}
	for range 10 {
		resp, err := gc.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetMessage() != "Hello, Ada!" {
			t.Fatalf("message = %q", resp.GetMessage())
		}
		seen[resp.GetServedBy()]++
	}
	if len(seen) != 2 {
		t.Errorf("calls served by %v, want both greeter instances", seen)
	}

	// Metadata routing: x-track: canary goes to the third instance.
	canaryCtx := metadata.AppendToOutgoingContext(ctx, "x-track", "canary")
	resp, err := gc.SayHello(canaryCtx, &greeterv1.SayHelloRequest{Name: "Ada"})
	if err != nil {
		t.Fatal(err)
	}
	if seen[resp.GetServedBy()] != 0 {
		t.Errorf("canary call served by %s, one of the stable instances", resp.GetServedBy())
	}

	// Server streaming.
	stream, err := gc.StreamHellos(ctx, &greeterv1.StreamHellosRequest{Name: "Ada", Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m.GetMessage())
	}
	if len(got) != 3 || got[2] != "Hello #3, Ada!" {
		t.Errorf("stream = %q", got)
	}

	// Validation at the edge, on a proxied (never decoded by a handler) call.
	_, err = gc.StreamHellos(ctx, &greeterv1.StreamHellosRequest{Name: "Ada", Count: 5000})
	if err == nil {
		var s interface {
			Recv() (*greeterv1.StreamHellosResponse, error)
		}
		s, _ = gc.StreamHellos(ctx, &greeterv1.StreamHellosRequest{Name: "Ada", Count: 5000})
		_, err = s.Recv()
	}
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "count") {
		t.Errorf("count 5000: %v, want INVALID_ARGUMENT naming count", st.Proto())
	}

	// The request id the gateway minted reached the backend.
	var hdr metadata.MD
	reqCtx := metadata.AppendToOutgoingContext(ctx, "x-request-id", "demo-req-1")
	if _, err := gc.SayHello(reqCtx, &greeterv1.SayHelloRequest{Name: "Ada"}, grpcHeader(&hdr)); err != nil {
		t.Fatal(err)
	}
	if hdr.Get("x-request-id-seen")[0] != "demo-req-1" || hdr.Get("x-request-id")[0] != "demo-req-1" {
		t.Errorf("headers %v: want the request id seen by the backend and returned", hdr)
	}

	// One access log line per call, with route and backend.
	var routed bool
	for _, l := range access.lines(t) {
		if l["route"] == "greeter-canary" && l["backend"] == "greeter-canary" && l["grpc.code"] == "OK" {
			routed = true
		}
	}
	if !routed {
		t.Errorf("no access log line for the canary call:\n%s", access.String())
	}
}

func TestDemoREST(t *testing.T) {
	d := startDemo(t)
	waitReady(t, d)
	base := "http://" + d.Gateway.Addr("edge").String()

	code, body, _ := httpDo(t, "POST", base+"/v1/greeter:sayHello", `{"name":"Ada"}`)
	if code != 200 || !strings.Contains(body, `"message":"Hello, Ada!"`) {
		t.Errorf("sayHello: %d %s", code, body)
	}

	code, body, _ = httpDo(t, "GET", base+"/v1/books", "")
	if code != 200 || !strings.Contains(body, "The Go Programming Language") {
		t.Errorf("list books: %d %s", code, body)
	}

	code, body, _ = httpDo(t, "POST", base+"/v1/books", `{"title":"Dune","author":"Frank Herbert","year":1965}`)
	var created struct{ Book struct{ ID, Title string } }
	if code != 200 || json.Unmarshal([]byte(body), &created) != nil || created.Book.Title != "Dune" || created.Book.ID == "" {
		t.Fatalf("create book: %d %s", code, body)
	}
	code, body, _ = httpDo(t, "GET", base+"/v1/books/"+created.Book.ID, "")
	if code != 200 || !strings.Contains(body, "Frank Herbert") {
		t.Errorf("get book: %d %s", code, body)
	}
	code, body, _ = httpDo(t, "DELETE", base+"/v1/books/"+created.Book.ID, "")
	if code != 200 {
		t.Errorf("delete book: %d %s", code, body)
	}
	code, body, _ = httpDo(t, "GET", base+"/v1/books/"+created.Book.ID, "")
	if code != 404 || !strings.Contains(body, `"code":5`) {
		t.Errorf("get deleted book: %d %s, want 404 with a google.rpc.Status body", code, body)
	}

	tests := []struct {
		name, method, path, body string
		want                     int
		contains                 []string
	}{
		{"validation", "POST", "/v1/books", `{"title":"","author":"Nobody","year":1200}`, 400,
			[]string{`"code":3`, "title", "year", "google.rpc.BadRequest"}},
		{"unknown field", "POST", "/v1/books", `{"titel":"x"}`, 400, []string{`"code":3`}},
		{"no path", "GET", "/v1/nothing-here", "", 404, []string{"/v1/nothing-here"}},
		{"wrong verb", "PUT", "/v1/books", "{}", 405, nil},
		{"body too large", "POST", "/v1/greeter:sayHello", `{"name":"` + strings.Repeat("a", 5<<20) + `"}`, 413, []string{`"code":8`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Expect: 100-continue lets the gateway refuse a body it will not
			// read before the client sends it, as curl does for large bodies.
			code, body, hdr := httpDo(t, tt.method, base+tt.path, tt.body, "Expect", "100-continue")
			if code != tt.want {
				t.Errorf("%s %s: %d %s, want %d", tt.method, tt.path, code, body, tt.want)
			}
			if !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
				t.Errorf("content type %q, want JSON", hdr.Get("Content-Type"))
			}
			for _, c := range tt.contains {
				if !strings.Contains(body, c) {
					t.Errorf("body %s does not contain %q", body, c)
				}
			}
		})
	}
}

// TestRESTChunkedBodyTooLarge: a body without a declared length is cut at
// the limit and answered with 413.
func TestRESTChunkedBodyTooLarge(t *testing.T) {
	d := startDemo(t)
	body := io.MultiReader(strings.NewReader(`{"name":"`), strings.NewReader(strings.Repeat("a", 5<<20)), strings.NewReader(`"}`))
	req, err := http.NewRequest("POST", "http://"+d.Gateway.Addr("edge").String()+"/v1/greeter:sayHello", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Expect", "100-continue")
	tr := &http.Transport{DisableKeepAlives: true, ExpectContinueTimeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), `"code":8`) {
		t.Errorf("got %d %s, want 413 with RESOURCE_EXHAUSTED", resp.StatusCode, b)
	}
}

// TestRESTNoRoute: a REST path that transcodes to a method no route takes is
// 404 naming the method, not 501.
func TestRESTNoRoute(t *testing.T) {
	g := startGateway(t, proxyConfig("shared", startBackend(t)), edge.WithREST(demo.REST()...))
	code, body, _ := httpDo(t, "GET", "http://"+g.Addr("edge").String()+"/v1/books", "")
	if code != http.StatusNotFound || !strings.Contains(body, "/examples.library.v1.LibraryService/ListBooks") {
		t.Errorf("got %d %s, want 404 naming the method", code, body)
	}
}

func TestDemoAdmin(t *testing.T) {
	d := startDemo(t)
	waitReady(t, d)
	admin := "http://" + d.Gateway.Addr("admin").String()

	code, body, _ := httpDo(t, "GET", admin+"/v1/routes", "")
	var routes adminv1.ListRoutesResponse
	if code != 200 || unmarshalJSON(body, &routes) != nil {
		t.Fatalf("routes: %d %s", code, body)
	}
	if len(routes.GetRoutes()) != 3 || routes.GetRoutes()[0].GetName() != "greeter-canary" ||
		routes.GetRoutes()[0].GetMatch() != `service="examples.greeter.v1.GreeterService" metadata[x-track]=="canary"` {
		t.Errorf("routes = %s", body)
	}

	code, body, _ = httpDo(t, "GET", admin+"/v1/backends", "")
	var backends adminv1.ListBackendsResponse
	if code != 200 || unmarshalJSON(body, &backends) != nil {
		t.Fatalf("backends: %d %s", code, body)
	}
	for _, b := range backends.GetBackends() {
		if !b.GetReachable() || len(b.GetEndpoints()) == 0 {
			t.Errorf("backend %s not reachable: %s", b.GetName(), body)
		}
	}

	code, body, _ = httpDo(t, "GET", admin+"/v1/backends/nope", "")
	if code != 404 {
		t.Errorf("unknown backend: %d %s", code, body)
	}
	code, body, _ = httpDo(t, "GET", admin+"/v1/backends/Bad_Name", "")
	if code != 400 || !strings.Contains(body, "name") {
		t.Errorf("invalid backend name: %d %s, want 400 from validation", code, body)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body, _ := httpDo(t, "GET", admin+p, ""); code != 200 {
			t.Errorf("%s: %d %s", p, code, body)
		}
	}

	// The same API over gRPC.
	ac := adminv1.NewAdminServiceClient(dial(t, d.Gateway.Addr("admin").String()))
	resp, err := ac.GetBackend(context.Background(), &adminv1.GetBackendRequest{Name: "greeter"})
	if err != nil || len(resp.GetBackend().GetEndpoints()) != 2 {
		t.Errorf("GetBackend(greeter) = %v, %v", resp, err)
	}
}

// TestDemoReflection: reflection on the edge lists the routed compiled-in
// services, so grpcurl can call them through the gateway.
func TestDemoReflection(t *testing.T) {
	d := startDemo(t)
	rc := reflectionv1.NewServerReflectionClient(dial(t, d.Gateway.Addr("edge").String()))
	s, err := rc.ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = s.CloseSend()
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	joined := strings.Join(names, " ")
	for _, want := range []string{"examples.greeter.v1.GreeterService", "examples.library.v1.LibraryService", "grpc.health.v1.Health"} {
		if !strings.Contains(joined, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	if strings.Contains(joined, "gatehouse.admin.v1.AdminService") {
		t.Errorf("edge reflection lists the admin service: %v", names)
	}
	for {
		if _, err := s.Recv(); err != nil {
			break
		}
	}
}
