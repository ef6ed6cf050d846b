package test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse-dev/gatehouse/examples/greeter"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
)

// echoBackend serves the interop TestService and answers each call with
// headers naming the backend, the method it was called as, and the values of
// the metadata keys in echo. calls counts the calls it served.
func echoBackend(t *testing.T, name string, calls *atomic.Int64, echo ...string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tag := func(ctx context.Context, method string) {
		calls.Add(1)
		md, _ := metadata.FromIncomingContext(ctx)
		out := metadata.Pairs("x-backend", name, "x-method", method)
		for _, k := range echo {
			out.Set("x-echo-"+k, strings.Join(md.Get(k), ","))
		}
		_ = grpc.SetHeader(ctx, out)
	}
	s := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			tag(ctx, info.FullMethod)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			tag(ss.Context(), info.FullMethod)
			return h(srv, ss)
		}),
	)
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	greeterv1.RegisterGreeterServiceServer(s, greeter.New(name))
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// TestRouteActions drives route actions end to end: metadata changes,
// method rewrite, direct responses over gRPC and REST, and REST attributes.
func TestRouteActions(t *testing.T) {
	var mainCalls, restCalls atomic.Int64
	mainAddr := echoBackend(t, "main", &mainCalls, "x-env", "x-debug", "x-via", "x-gatehouse-http-path")
	restAddr := echoBackend(t, "rest", &restCalls)
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends:
  - { name: main, endpoints: [%q] }
  - { name: rest, endpoints: [%q] }
routes:
  - name: maintenance
    match: { service: "shop.legacy.*" }
    direct_response: { code: UNAVAILABLE, message: "down for maintenance" }
  - name: v1-alias
    match: { service: "shop.v1.Test" }
    backend: main
    rewrite: { service: "grpc.testing.TestService" }
  - name: rest-post-beta
    match: { service: "examples.greeter.v1.GreeterService", http_method: POST, query: [{ name: beta, present: true }] }
    backend: rest
  - name: main
    match: { service: "*" }
    backend: main
    request_metadata:
      remove: ["x-debug"]
      set: [{ name: "x-env", value: "prod" }]
      add: [{ name: "x-via", value: "gatehouse" }]
`, mainAddr, restAddr), edge.WithREST(demo.REST()...))
	cc := dial(t, g.Addr("edge").String())
	tc := testgrpc.NewTestServiceClient(cc)
	ctx := metadata.AppendToOutgoingContext(context.Background(),
		"x-debug", "1", "x-env", "dev", "x-via", "client-lb", "x-gatehouse-http-path", "/forged")

	var hdr metadata.MD
	if _, err := tc.EmptyCall(ctx, &testpb.Empty{}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"x-echo-x-debug": "", "x-echo-x-env": "prod", "x-echo-x-via": "client-lb,gatehouse", "x-echo-x-gatehouse-http-path": ""}
	for k, v := range want {
		if got := strings.Join(hdr.Get(k), ","); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}

	// Method rewrite: the client calls shop.v1.Test, the backend serves
	// grpc.testing.TestService.
	hdr = nil
	var out testpb.SimpleResponse
	if err := cc.Invoke(context.Background(), "/shop.v1.Test/UnaryCall", &testpb.SimpleRequest{ResponseSize: 3}, &out, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get("x-method"); len(got) != 1 || got[0] != "/grpc.testing.TestService/UnaryCall" || len(out.GetPayload().GetBody()) != 3 {
		t.Errorf("rewrite: backend saw %v, response %v", got, &out)
	}

	// Direct response: no backend is called.
	before := mainCalls.Load() + restCalls.Load()
	err := cc.Invoke(context.Background(), "/shop.legacy.v1.Old/Get", &testpb.Empty{}, &testpb.Empty{})
	if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "down for maintenance" {
		t.Errorf("direct response: %v", st.Proto())
	}
	base := "http://" + g.Addr("edge").String()

	// REST attributes: POST with ?beta goes to the rest backend; without it
	// to main.
	code, body, _ := httpDo(t, "POST", base+"/v1/greeter:sayHello?beta=1", `{"name":"Ada"}`)
	if code != 200 || !strings.Contains(body, `"servedBy":"rest"`) {
		t.Errorf("REST with beta: %d %s", code, body)
	}
	code, body, _ = httpDo(t, "POST", base+"/v1/greeter:sayHello", `{"name":"Ada"}`)
	if code != 200 || !strings.Contains(body, `"servedBy":"main"`) {
		t.Errorf("REST without beta: %d %s", code, body)
	}
	// A forged attribute header is dropped at the REST edge.
	code, body, _ = httpDo(t, "POST", base+"/v1/greeter:sayHello", `{"name":"Ada"}`, "X-Gatehouse-Http-Method", "GET")
	if code != 200 || !strings.Contains(body, `"servedBy":"main"`) {
		t.Errorf("REST forged header: %d %s", code, body)
	}
	if got := mainCalls.Load() + restCalls.Load() - before; got != 3 {
		t.Errorf("backends served %d calls since the direct response, want 3 (REST only)", got)
	}
}

// TestMirror: a mirrored call reaches the shadow backend with the same
// request, and the client's answer is the real backend's, unchanged.
func TestMirror(t *testing.T) {
	var realCalls, shadowCalls atomic.Int64
	realAddr := echoBackend(t, "real", &realCalls)
	shadowAddr := echoBackend(t, "shadow", &shadowCalls)
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0", protocol: grpc }]
backends:
  - { name: real, endpoints: [%q] }
  - { name: shadow, endpoints: [%q] }
routes:
  - name: all
    backend: real
    mirror: { backend: shadow, percent: 100 }
`, realAddr, shadowAddr))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	const n = 20
	for i := range n {
		var hdr metadata.MD
		req := &testpb.SimpleRequest{ResponseSize: int32(10 + i), Payload: &testpb.Payload{Body: make([]byte, 1000)}}
		resp, err := tc.UnaryCall(context.Background(), req, grpc.Header(&hdr))
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Get("x-backend")[0] != "real" || len(resp.GetPayload().GetBody()) != 10+i {
			t.Fatalf("answer came from %v with %d bytes", hdr.Get("x-backend"), len(resp.GetPayload().GetBody()))
		}
	}
	// Full-duplex: every message copied.
	stream, err := tc.FullDuplexCall(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	_ = stream.CloseSend()
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for shadowCalls.Load() < n+1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := shadowCalls.Load(); got != n+1 {
		t.Errorf("shadow saw %d calls, want %d", got, n+1)
	}
	if got := realCalls.Load(); got != n+1 {
		t.Errorf("real backend saw %d calls, want %d", got, n+1)
	}
}

// TestMirrorNeverSlowsTheRealCall: a shadow that never answers does not
// delay or fail the real calls.
func TestMirrorNeverSlowsTheRealCall(t *testing.T) {
	var realCalls atomic.Int64
	realAddr := echoBackend(t, "real", &realCalls)
	// A listener that accepts connections and never speaks HTTP/2.
	black, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer black.Close()
	go func() {
		for {
			c, err := black.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0", protocol: grpc }]
backends:
  - { name: real, endpoints: [%q] }
  - { name: shadow, endpoints: [%q] }
routes:
  - { name: all, backend: real, mirror: { backend: shadow, percent: 100 } }
`, realAddr, black.Addr().String()))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	for range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 5})
		cancel()
		if err != nil || len(resp.GetPayload().GetBody()) != 5 {
			t.Fatalf("real call with a dead shadow: %v", err)
		}
	}
	_ = proto.Size
}
