package test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// proxyConfig routes the interop TestService to backend, on a listener of
// the given protocol ("" is shared).
func proxyConfig(protocol, backend string) string {
	return fmt.Sprintf(`
listeners:
  - name: edge
    address: "127.0.0.1:0"
    protocol: %q
backends:
  - name: testsvc
    endpoints: [%q]
routes:
  - name: testsvc
    match: { service: "grpc.testing.TestService" }
    backend: testsvc
`, protocol, backend)
}

var protocols = []string{"shared", "grpc"}

// TestInteropThroughGateway runs grpc-go's own interop client cases, written
// for no gateway in particular, through Gatehouse: each case must pass as it
// does against the backend directly. A case that fails aborts the test
// binary (the interop package calls log.Fatal), which fails loudly.
func TestInteropThroughGateway(t *testing.T) {
	cases := []struct {
		name string
		do   func(context.Context, testgrpc.TestServiceClient, ...grpc.CallOption)
	}{
		{"empty_unary", interop.DoEmptyUnaryCall},
		{"large_unary", interop.DoLargeUnaryCall},
		{"client_streaming", interop.DoClientStreaming},
		{"server_streaming", interop.DoServerStreaming},
		{"ping_pong", interop.DoPingPong},
		{"empty_stream", interop.DoEmptyStream},
		{"custom_metadata", interop.DoCustomMetadata},
		{"status_code_and_message", interop.DoStatusCodeAndMessage},
		{"special_status_message", interop.DoSpecialStatusMessage},
		{"cancel_after_begin", interop.DoCancelAfterBegin},
		{"cancel_after_first_response", interop.DoCancelAfterFirstResponse},
		{"timeout_on_sleeping_server", interop.DoTimeoutOnSleepingServer},
	}
	backend := startBackend(t)
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			g := startGateway(t, proxyConfig(proto, backend))
			tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					c.do(ctx, tc)
				})
			}
		})
	}
}

// call is what a client observes of one call.
type call struct {
	header   metadata.MD
	trailer  metadata.MD
	status   *status.Status
	messages []proto.Message
}

func proto2Equal(a, b []proto.Message) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func cmpStatus(a, b *status.Status) bool {
	return proto.Equal(a.Proto(), b.Proto())
}

// TestMessageSizeLimit: the default 4 MiB limit lets 3 MiB through and
// refuses 5 MiB with RESOURCE_EXHAUSTED, both ways.
func TestMessageSizeLimit(t *testing.T) {
	backend := startBackend(t)
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			g := startGateway(t, proxyConfig(proto, backend))
			tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tests := []struct {
				name          string
				req, respSize int
				want          codes.Code
			}{
				{"3MiB request", 3 << 20, 0, codes.OK},
				{"3MiB response", 0, 3 << 20, codes.OK},
				{"5MiB request", 5 << 20, 0, codes.ResourceExhausted},
				{"5MiB response", 0, 5 << 20, codes.ResourceExhausted},
			}
			for _, tt := range tests {
				resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{
					Payload:      &testpb.Payload{Body: make([]byte, tt.req)},
					ResponseSize: int32(tt.respSize),
				})
				if got := status.Code(err); got != tt.want {
					t.Errorf("%s: code %v (%v), want %v", tt.name, got, err, tt.want)
				}
				if err == nil && len(resp.GetPayload().GetBody()) != tt.respSize {
					t.Errorf("%s: response of %d bytes, want %d", tt.name, len(resp.GetPayload().GetBody()), tt.respSize)
				}
			}
		})
	}
}

// detailsServer answers every call with a status carrying details.
type detailsServer struct {
	testgrpc.UnimplementedTestServiceServer
	cancelled chan struct{}
}

func (s *detailsServer) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	st, _ := status.New(codes.InvalidArgument, "bad field").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "payload.body", Description: "too short"}},
	})
	return nil, st.Err()
}

func (s *detailsServer) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	_ = stream.SendHeader(metadata.Pairs("x-only-header", "yes"))
	<-stream.Context().Done()
	close(s.cancelled)
	return stream.Context().Err()
}

// TestStatusDetailsAndCancel: status details reach the client unchanged, and
// a client's cancel reaches the backend.
func TestStatusDetailsAndCancel(t *testing.T) {
	srv := &detailsServer{cancelled: make(chan struct{})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, srv)
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()

	g := startGateway(t, proxyConfig("shared", lis.Addr().String()))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))

	_, err = tc.UnaryCall(context.Background(), &testpb.SimpleRequest{})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || st.Message() != "bad field" {
		t.Fatalf("status = %v", st.Proto())
	}
	if len(st.Details()) != 1 {
		t.Fatalf("details = %v, want one BadRequest", st.Details())
	}
	br, ok := st.Details()[0].(*errdetails.BadRequest)
	if !ok || br.GetFieldViolations()[0].GetField() != "payload.body" {
		t.Fatalf("details = %v", st.Details())
	}

	ctx, cancel := context.WithCancel(context.Background())
	stream, err := tc.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := stream.Header() // headers of a response that has sent no message yet
	if err != nil || hdr.Get("x-only-header")[0] != "yes" {
		t.Fatalf("header = %v, %v", hdr, err)
	}
	cancel()
	select {
	case <-srv.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the backend never saw the client's cancel")
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("Recv after cancel: %v, want Canceled", err)
	}
}

// TestBackendDown: a backend nobody listens on gives UNAVAILABLE.
func TestBackendDown(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			g := startGateway(t, proxyConfig(proto, dead))
			tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := tc.EmptyCall(ctx, &testpb.Empty{})
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("EmptyCall: %v, want UNAVAILABLE", err)
			}
		})
	}
}

// TestNoRoute: a method no route takes is UNIMPLEMENTED, naming the method.
func TestNoRoute(t *testing.T) {
	g := startGateway(t, proxyConfig("grpc", startBackend(t)))
	cc := dial(t, g.Addr("edge").String())
	err := cc.Invoke(context.Background(), "/shop.Nowhere/Get", &testpb.Empty{}, &testpb.Empty{})
	st := status.Convert(err)
	if st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), "/shop.Nowhere/Get") {
		t.Fatalf("got %v, want UNIMPLEMENTED naming the method", st.Proto())
	}
}

// TestMetadataRouting: a metadata condition picks the canary backend; the
// rest go to the stable one. Each backend tags its responses with its name.
func TestMetadataRouting(t *testing.T) {
	stable := startTaggedBackend(t, "stable")
	canary := startTaggedBackend(t, "canary")
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends:
  - { name: stable, endpoints: [%q] }
  - { name: canary, endpoints: [%q] }
routes:
  - name: canary
    match:
      service: "grpc.testing.TestService"
      metadata: [{ name: "x-track", exact: "canary" }]
    backend: canary
  - { name: stable, match: { service: "grpc.testing.*" }, backend: stable }
`, stable, canary))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	for _, tt := range []struct {
		md   []string
		want string
	}{
		{nil, "stable"},
		{[]string{"x-track", "canary"}, "canary"},
		{[]string{"x-track", "beta"}, "stable"},
	} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), tt.md...)
		var hdr metadata.MD
		if _, err := tc.EmptyCall(ctx, &testpb.Empty{}, grpc.Header(&hdr)); err != nil {
			t.Fatal(err)
		}
		if got := hdr.Get("x-backend"); len(got) != 1 || got[0] != tt.want {
			t.Errorf("metadata %v: served by %v, want %s", tt.md, got, tt.want)
		}
	}
}

// startTaggedBackend serves the interop TestService and tags every response
// with an x-backend header naming the backend.
func startTaggedBackend(t *testing.T, name string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-backend", name))
		return h(ctx, req)
	}))
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}
