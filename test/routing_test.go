package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

// TestRefusedCallsCarryTheirRoute refuses one call in the auth layer (no
// API key) and one in the quota layer (over the rate): both happen before
// the director, yet each carries its route in gatehouse_requests_total,
// the access log and the audit record.
func TestRefusedCallsCarryTheirRoute(t *testing.T) {
	backend := startBackend(t)
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	var access syncBuffer
	sum := sha256.Sum256([]byte("k-1"))
	g := startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
admin: {address: "127.0.0.1:0"}
backends: [{name: b, endpoints: [%q]}]
authentication:
  api_keys: [{name: partners, header: x-api-key, keys: [{id: acme, sha256: %q}]}]
routes:
  - name: guarded
    match: {method: "/grpc.testing.TestService/UnaryCall"}
    backend: b
    auth: {require: [partners]}
  - name: limited
    match: {method: "/grpc.testing.TestService/EmptyCall"}
    backend: b
quota:
  policies: [{name: tiny, routes: [limited], rate: {requests: 1, per: "1h"}}]
audit: {file: %q}
`, backend, hex.EncodeToString(sum[:]), auditPath), edge.WithAccessLogger(jsonLogger(&access)))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("UnaryCall without a key: %v, want UNAUTHENTICATED", err)
	}
	if _, err := tc.EmptyCall(ctx, &testpb.Empty{}); err != nil {
		t.Fatalf("first EmptyCall: %v", err)
	}
	if _, err := tc.EmptyCall(ctx, &testpb.Empty{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second EmptyCall: %v, want RESOURCE_EXHAUSTED", err)
	}

	fams := scrape(t, g)
	for _, c := range []struct{ route, method, code string }{
		{"guarded", "/grpc.testing.TestService/UnaryCall", "Unauthenticated"},
		{"limited", "/grpc.testing.TestService/EmptyCall", "ResourceExhausted"},
	} {
		labels := map[string]string{"route": c.route, "method": c.method, "code": c.code}
		if v := value(t, fams, "gatehouse_requests_total", labels); v != 1 {
			t.Errorf("gatehouse_requests_total%v = %v, want 1", labels, v)
		}
	}
	if v := value(t, fams, "gatehouse_requests_total", map[string]string{"route": ""}); v != 0 {
		t.Errorf("gatehouse_requests_total{route=\"\"} = %v, want 0", v)
	}

	if err := g.Shutdown(ctx); err != nil { // every audit record written
		t.Fatal(err)
	}
	wantRoute := map[string]string{"Unauthenticated": "guarded", "ResourceExhausted": "limited", "OK": "limited"}
	lines := access.lines(t)
	if len(lines) != 3 {
		t.Fatalf("%d access log lines, want 3:\n%s", len(lines), access.String())
	}
	for _, l := range lines {
		if code, _ := l["grpc.code"].(string); l["route"] != wantRoute[code] {
			t.Errorf("access log line with code %v has route %q, want %q", l["grpc.code"], l["route"], wantRoute[code])
		}
	}
	recs, raw := readAudit(t, auditPath)
	if len(recs) != 3 {
		t.Fatalf("%d audit records, want 3:\n%s", len(recs), raw)
	}
	for _, r := range recs {
		o, _ := r["outcome"].(map[string]any)
		if code, _ := o["code"].(string); r["route"] != wantRoute[code] {
			t.Errorf("audit record with outcome %v has route %q", o, r["route"])
		}
	}
}

// rawCodec passes messages as bytes, so that a recording backend sees a
// request exactly as it arrived.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *v.(*[]byte) = slices.Clone(data); return nil }
func (rawCodec) Name() string                       { return "proto" }

// recorded is one call a recordingBackend received.
type recorded struct {
	method string
	md     metadata.MD
	body   []byte
}

// recordingBackend answers every unary call with an empty message and
// sends what it received, raw, on the returned channel (buffered for n).
func recordingBackend(t *testing.T, n int) (string, <-chan recorded) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan recorded, n)
	s := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		md, _ := metadata.FromIncomingContext(ss.Context())
		var body []byte
		if err := ss.RecvMsg(&body); err != nil {
			return err
		}
		select {
		case ch <- recorded{method: method, md: md, body: body}:
		default:
		}
		empty := []byte{}
		return ss.SendMsg(&empty)
	}))
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String(), ch
}

// TestSplitEndToEnd sends 10,000 calls through a 90/10 split to two real
// backends: the canary's share is within 2 points of 10%.
func TestSplitEndToEnd(t *testing.T) {
	a, _ := startTagged(t, "a")
	b, _ := startTagged(t, "b")
	g := startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
backends: [{name: a, endpoints: [%q]}, {name: b, endpoints: [%q]}]
routes:
  - name: canary
    match: {service: "grpc.testing.TestService"}
    split: [{backend: a, weight: 90}, {backend: b, weight: 10}]
`, a, b))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n, workers = 10000, 8
	var toB, failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range n / workers {
				resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{})
				switch {
				case err != nil:
					failed.Add(1)
				case string(resp.GetPayload().GetBody()) == "b":
					toB.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d calls failed", f)
	}
	if share := float64(toB.Load()) / n * 100; share < 8 || share > 12 {
		t.Errorf("canary share %.2f%% of %d calls, want 10 ± 2", share, n)
	}
}

// TestStickySplitEndToEnd: with a sticky split keyed by x-user-id, every
// user's calls take one side, before and after a reload that changes other
// routes; both sides get users.
func TestStickySplitEndToEnd(t *testing.T) {
	a, _ := startTagged(t, "a")
	b, _ := startTagged(t, "b")
	yaml := func(extra string) string {
		return fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
backends: [{name: a, endpoints: [%q]}, {name: b, endpoints: [%q]}]
routes:
%s  - name: sticky
    match: {service: "grpc.testing.TestService"}
    split: [{backend: a, weight: 50}, {backend: b, weight: 50}]
    sticky_key: 'metadata["x-user-id"]'
`, a, b, extra)
	}
	g := startGateway(t, yaml(""))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	side := map[string]string{}
	sides := map[string]int{}
	call := func(user string) string {
		t.Helper()
		resp, err := tc.UnaryCall(metadata.AppendToOutgoingContext(ctx, "x-user-id", user), &testpb.SimpleRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return string(resp.GetPayload().GetBody())
	}
	check := func(when string) {
		t.Helper()
		for u := range 100 {
			user := fmt.Sprintf("user-%d", u)
			for range 3 {
				got := call(user)
				if want, ok := side[user]; ok && got != want {
					t.Fatalf("%s: %s moved from %s to %s", when, user, want, got)
				}
				if _, ok := side[user]; !ok {
					sides[got]++
				}
				side[user] = got
			}
		}
	}
	check("before the reload")
	if sides["a"] < 25 || sides["b"] < 25 {
		t.Errorf("100 users split %v, want both sides used about evenly", sides)
	}
	next, err := configParse(yaml(`  - name: other
    match: {service: "other.v1.Other"}
    backend: a
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(ctx, next); err != nil {
		t.Fatal(err)
	}
	if got := g.Router().Table().Routes()[0].Name; got != "other" {
		t.Fatalf("after the reload the first route is %q", got)
	}
	check("after the reload")
}

// TestMirrorCopyEndToEnd: the mirror copy carries the same request bytes
// and metadata as the real call; with percent 50 about half the calls are
// copied.
func TestMirrorCopyEndToEnd(t *testing.T) {
	const n = 2000
	realAddr, realCh := recordingBackend(t, n+1)
	shadowAddr, shadowCh := recordingBackend(t, n+1)
	g := startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
backends: [{name: real, endpoints: [%q]}, {name: shadow, endpoints: [%q]}]
routes:
  - name: all-copied
    match: {method: "/grpc.testing.TestService/UnaryCall"}
    backend: real
    mirror: {backend: shadow, percent: 100}
  - name: half-copied
    match: {method: "/grpc.testing.TestService/EmptyCall"}
    backend: real
    mirror: {backend: shadow, percent: 50}
`, realAddr, shadowAddr))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	req := &testpb.SimpleRequest{ResponseSize: 7, Payload: &testpb.Payload{Body: []byte("the same bytes")}, FillUsername: true}
	cctx := metadata.AppendToOutgoingContext(ctx, "x-trace-id", "t-1", "x-tenant", "acme")
	if _, err := tc.UnaryCall(cctx, req); err != nil {
		t.Fatal(err)
	}
	want, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var got [2]recorded
	for i, ch := range []<-chan recorded{realCh, shadowCh} {
		select {
		case got[i] = <-ch:
		case <-ctx.Done():
			t.Fatal("no call recorded")
		}
	}
	for i, r := range got {
		if r.method != "/grpc.testing.TestService/UnaryCall" || !bytes.Equal(r.body, want) {
			t.Errorf("backend %d got %s with %x, want the client's bytes %x", i, r.method, r.body, want)
		}
		delete(r.md, ":authority") // each backend's own name
	}
	if fmt.Sprint(got[0].md) != fmt.Sprint(got[1].md) || got[1].md.Get("x-trace-id")[0] != "t-1" || got[1].md.Get("x-tenant")[0] != "acme" {
		t.Errorf("metadata differ:\nreal   %v\nshadow %v", got[0].md, got[1].md)
	}

	for range n {
		if _, err := tc.EmptyCall(ctx, &testpb.Empty{}); err != nil {
			t.Fatal(err)
		}
	}
	// The copies are sent after the real calls: count until none comes for
	// a while.
	copies := 0
	for quiet := time.NewTimer(500 * time.Millisecond); ; {
		select {
		case <-shadowCh:
			copies++
			quiet.Reset(500 * time.Millisecond)
			continue
		case <-quiet.C:
		}
		break
	}
	if share := float64(copies) / n * 100; share < 45 || share > 55 {
		t.Errorf("%d of %d calls copied (%.1f%%), want 50 ± 5", copies, n, share)
	}
}
