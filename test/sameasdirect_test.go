package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// echoServer answers every call kind and sends back, as response headers and
// trailers, every request metadata key that starts with "x-echo-h-" or
// "x-echo-t-", with all their values, in order. A request whose
// ResponseStatus is set ends with that status plus two details.
type echoServer struct {
	testgrpc.UnimplementedTestServiceServer
}

func echoed(ctx context.Context) (header, trailer metadata.MD) {
	md, _ := metadata.FromIncomingContext(ctx)
	header, trailer = metadata.MD{}, metadata.MD{}
	for k, vs := range md {
		switch {
		case strings.HasPrefix(k, "x-echo-h-"):
			header[k] = append([]string(nil), vs...)
		case strings.HasPrefix(k, "x-echo-t-"):
			trailer[k] = append([]string(nil), vs...)
		}
	}
	return header, trailer
}

func echoStatus(s *testpb.EchoStatus) error {
	if s == nil {
		return nil
	}
	st, err := status.New(codes.Code(s.GetCode()), s.GetMessage()).WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "payload", Description: "bad ☃"}}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)},
	)
	if err != nil {
		return err
	}
	return st.Err()
}

func (echoServer) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	h, tr := echoed(ctx)
	if err := grpc.SetHeader(ctx, h); err != nil {
		return nil, err
	}
	if err := grpc.SetTrailer(ctx, tr); err != nil {
		return nil, err
	}
	if err := echoStatus(req.GetResponseStatus()); err != nil {
		return nil, err
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, req.GetResponseSize())}}, nil
}

func (echoServer) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	h, tr := echoed(stream.Context())
	if err := stream.SendHeader(h); err != nil {
		return err
	}
	stream.SetTrailer(tr)
	for _, p := range req.GetResponseParameters() {
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	return echoStatus(req.GetResponseStatus())
}

func (echoServer) StreamingInputCall(stream testgrpc.TestService_StreamingInputCallServer) error {
	h, tr := echoed(stream.Context())
	stream.SetTrailer(tr)
	if err := stream.SendHeader(h); err != nil {
		return err
	}
	total := 0
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(m.GetPayload().GetBody())
	}
}

// FullDuplexCall answers each request with the messages its
// ResponseParameters ask for and ends, once the client half-closes, with the
// status asked for by the first request (if any). A call that sends nothing
// gets a response with zero messages.
func (echoServer) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	h, tr := echoed(stream.Context())
	if err := stream.SendHeader(h); err != nil {
		return err
	}
	stream.SetTrailer(tr)
	var want *testpb.EchoStatus
	for first := true; ; first = false {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return echoStatus(want)
		}
		if err != nil {
			return err
		}
		if first {
			want = m.GetResponseStatus()
		}
		for _, p := range m.GetResponseParameters() {
			if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
				return err
			}
		}
	}
}

// observeExactly makes one call of every kind, with multi-valued, binary and
// empty metadata values, and records everything the client sees.
func observeExactly(t *testing.T, cc *grpc.ClientConn) map[string]call {
	t.Helper()
	tc := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx,
		"x-echo-h-multi", "one", "x-echo-h-multi", "two", "x-echo-h-multi", "three",
		"x-echo-h-empty", "",
		"x-echo-h-bin", "\x00\xff\x01binary",
		"x-echo-h-spaces", "a value with  spaces",
		"x-echo-t-multi", "t1", "x-echo-t-multi", "t2",
		"x-echo-t-bin", "\x02\x03",
		"x-echo-t-empty", "",
	)
	failing := &testpb.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "no \t\nway ☃ %"}
	out := map[string]call{}

	unary := func(name string, req *testpb.SimpleRequest) {
		var c call
		resp, err := tc.UnaryCall(ctx, req, grpc.Header(&c.header), grpc.Trailer(&c.trailer))
		c.status = status.Convert(err)
		if resp != nil {
			c.messages = append(c.messages, resp)
		}
		out[name] = c
	}
	unary("unary", &testpb.SimpleRequest{ResponseSize: 64})
	unary("unary with details", &testpb.SimpleRequest{ResponseStatus: failing})

	serverStream := func(name string, req *testpb.StreamingOutputCallRequest) {
		var c call
		s, err := tc.StreamingOutputCall(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := s.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					c.status = status.Convert(err)
				} else {
					c.status = status.New(codes.OK, "")
				}
				break
			}
			c.messages = append(c.messages, m)
		}
		c.header, _ = s.Header()
		c.trailer = s.Trailer()
		out[name] = c
	}
	sizes := []*testpb.ResponseParameters{{Size: 1}, {Size: 0}, {Size: 70000}}
	serverStream("server stream", &testpb.StreamingOutputCallRequest{ResponseParameters: sizes})
	serverStream("server stream ending in an error", &testpb.StreamingOutputCallRequest{ResponseParameters: sizes, ResponseStatus: failing})
	serverStream("server stream, no message, error", &testpb.StreamingOutputCallRequest{ResponseStatus: failing})

	var c call
	cs, err := tc.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{3, 0, 100000} {
		if err := cs.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := cs.CloseAndRecv()
	c.status = status.Convert(err)
	if resp != nil {
		c.messages = append(c.messages, resp)
	}
	c.header, _ = cs.Header()
	c.trailer = cs.Trailer()
	out["client stream"] = c

	bidi := func(name string, sends ...*testpb.StreamingOutputCallRequest) {
		var c call
		s, err := tc.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range sends {
			if err := s.Send(m); err != nil {
				t.Fatal(err)
			}
			for range m.GetResponseParameters() {
				r, err := s.Recv()
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				c.messages = append(c.messages, r)
			}
		}
		_ = s.CloseSend()
		_, err = s.Recv()
		if errors.Is(err, io.EOF) {
			c.status = status.New(codes.OK, "")
		} else {
			c.status = status.Convert(err)
		}
		c.header, _ = s.Header()
		c.trailer = s.Trailer()
		out[name] = c
	}
	bidi("bidi, zero messages")
	bidi("bidi, zero messages, error", &testpb.StreamingOutputCallRequest{ResponseStatus: failing})
	bidi("bidi ping-pong",
		&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 10}}},
		&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 0}}},
		&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 300000}}})
	return out
}

// withoutGatewayKeys drops what the gateway adds on purpose, and nothing
// else: the request ID it returns.
func withoutGatewayKeys(md metadata.MD) map[string][]string {
	out := map[string][]string{}
	for k, vs := range md {
		if k == "x-request-id" {
			continue
		}
		out[k] = vs
	}
	return out
}

func mdString(md map[string][]string) string {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q; ", k, md[k])
	}
	return b.String()
}

func mdEqual(a, b map[string][]string) bool {
	return maps.EqualFunc(a, b, slices.Equal[[]string])
}

// TestSameAsDirect: for every call kind, including responses with no
// message, errors with details after messages, and metadata with several,
// binary and empty values, a standard client sees through the gateway the
// same header map, trailer map, messages and status as calling the backend
// directly; the only difference is the x-request-id header the gateway adds.
func TestSameAsDirect(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, echoServer{})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	backend := lis.Addr().String()

	direct := observeExactly(t, dial(t, backend))
	if got := len(direct["unary"].header["x-echo-h-multi"]); got != 3 {
		t.Fatalf("the echo backend returned %d values of x-echo-h-multi directly, want 3", got)
	}
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			g := startGateway(t, proxyConfig(proto, backend))
			via := observeExactly(t, dial(t, g.Addr("edge").String()))
			for name, want := range direct {
				got, ok := via[name]
				if !ok {
					t.Errorf("%s: not observed through the gateway", name)
					continue
				}
				if !proto2Equal(got.messages, want.messages) {
					t.Errorf("%s: %d messages through the gateway, %d direct, or their contents differ", name, len(got.messages), len(want.messages))
				}
				if !cmpStatus(got.status, want.status) {
					t.Errorf("%s: status %v, direct %v", name, got.status.Proto(), want.status.Proto())
				}
				if len(got.status.Details()) != len(want.status.Details()) {
					t.Errorf("%s: %d status details, direct %d", name, len(got.status.Details()), len(want.status.Details()))
				}
				if g, w := withoutGatewayKeys(got.header), withoutGatewayKeys(want.header); !mdEqual(g, w) {
					t.Errorf("%s: header\n got %s\nwant %s", name, mdString(g), mdString(w))
				}
				if !mdEqual(got.trailer, want.trailer) {
					t.Errorf("%s: trailer\n got %s\nwant %s", name, mdString(got.trailer), mdString(want.trailer))
				}
				if len(got.header["x-request-id"]) != 1 {
					t.Errorf("%s: x-request-id header %q, want one value", name, got.header["x-request-id"])
				}
			}
		})
	}
}
