package routing

import (
	"context"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

const benchPayload = 1024

// benchClients returns a TestService client that talks to the interop server
// directly and one that goes through the director, both over TCP loopback.
func benchClients(b *testing.B) (direct, proxied testgrpc.TestServiceClient) {
	backendAddr := startBackend(b, nil)
	return testgrpc.NewTestServiceClient(dial(b, backendAddr)), proxiedClient(b, backendAddr)
}

func runUnary(b *testing.B, c testgrpc.TestServiceClient) {
	ctx := context.Background()
	req := &testpb.SimpleRequest{ResponseSize: benchPayload, Payload: payload(benchPayload)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.UnaryCall(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDirectorUnary measures a unary call through the director; compare
// with BenchmarkDirectUnary for the gateway's cost (a second hop, server
// and client side, plus the director).
func BenchmarkDirectorUnary(b *testing.B) {
	_, proxied := benchClients(b)
	runUnary(b, proxied)
}

// BenchmarkDirectUnary is the baseline: the same call without the gateway.
func BenchmarkDirectUnary(b *testing.B) {
	direct, _ := benchClients(b)
	runUnary(b, direct)
}

func runPingPong(b *testing.B, c testgrpc.TestServiceClient) {
	stream, err := c.FullDuplexCall(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	req := &testpb.StreamingOutputCallRequest{
		ResponseParameters: []*testpb.ResponseParameters{{Size: benchPayload}},
		Payload:            payload(benchPayload),
	}
	resp := new(testpb.StreamingOutputCallResponse)
	b.ReportAllocs()
	for b.Loop() {
		if err := stream.Send(req); err != nil {
			b.Fatal(err)
		}
		if err := stream.RecvMsg(resp); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		b.Fatal(err)
	}
}

// BenchmarkDirectorStream measures one request and one response message on
// an open bidi stream through the director.
func BenchmarkDirectorStream(b *testing.B) {
	_, proxied := benchClients(b)
	runPingPong(b, proxied)
}

// BenchmarkDirectStream is the baseline for BenchmarkDirectorStream.
func BenchmarkDirectStream(b *testing.B) {
	direct, _ := benchClients(b)
	runPingPong(b, direct)
}

// BenchmarkDirectorPumps runs one call with b.N messages each way through the
// director's two pumps, over in-memory streams that allocate nothing, so
// that allocs/op counts only the director's per-message allocations (the
// per-call ones are spread over b.N messages). It must report 0 allocs/op.
func BenchmarkDirectorPumps(b *testing.B) {
	msg := mem.BufferSlice{mem.SliceBuffer(make([]byte, benchPayload))}
	codec := NewCodec()
	backend := &echoStream{codec: codec, ch: make(chan mem.BufferSlice, 1), header: metadata.MD{}}
	d := NewDirector(staticResolver(echoConn{backend}))
	ss := &feedStream{codec: codec, msg: msg, n: b.N}
	ss.ctx = grpc.NewContextWithServerTransportStream(
		peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}),
		fakeTransportStream{})
	ss.ctx = metadata.NewIncomingContext(ss.ctx, metadata.Pairs("x-a", "1"))
	b.ReportAllocs()
	b.ResetTimer()
	if err := d.Handler(nil, ss); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if ss.sent != b.N {
		b.Fatalf("sent %d messages, want %d", ss.sent, b.N)
	}
}

// feedStream is a grpc.ServerStream whose client sends msg n times and then
// half-closes, and that discards what it is sent.
type feedStream struct {
	grpc.ServerStream
	ctx   context.Context
	codec *Codec
	msg   mem.BufferSlice
	n     int
	recvd int
	sent  int
}

func (s *feedStream) Context() context.Context     { return s.ctx }
func (s *feedStream) SendHeader(metadata.MD) error { return nil }
func (s *feedStream) SetHeader(metadata.MD) error  { return nil }
func (s *feedStream) SetTrailer(metadata.MD)       {}
func (s *feedStream) RecvMsg(m any) error {
	if s.recvd == s.n {
		return io.EOF
	}
	s.recvd++
	return s.codec.Unmarshal(s.msg, m)
}
func (s *feedStream) SendMsg(m any) error {
	out, err := s.codec.Marshal(m)
	out.Free()
	s.sent++
	return err
}

type fakeTransportStream struct{}

func (fakeTransportStream) Method() string               { return "/bench.Service/Method" }
func (fakeTransportStream) SetHeader(metadata.MD) error  { return nil }
func (fakeTransportStream) SendHeader(metadata.MD) error { return nil }
func (fakeTransportStream) SetTrailer(metadata.MD) error { return nil }

// echoConn opens its one echoStream for every call.
type echoConn struct{ s *echoStream }

func (c echoConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	panic("not used")
}
func (c echoConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.s, nil
}

// echoStream is a grpc.ClientStream whose backend echoes every message.
type echoStream struct {
	grpc.ClientStream
	codec  *Codec
	ch     chan mem.BufferSlice
	header metadata.MD
}

func (s *echoStream) Header() (metadata.MD, error) { return s.header, nil }
func (s *echoStream) Trailer() metadata.MD         { return nil }
func (s *echoStream) CloseSend() error             { close(s.ch); return nil }
func (s *echoStream) SendMsg(m any) error {
	out, err := s.codec.Marshal(m)
	if err != nil {
		return err
	}
	s.ch <- out
	return nil
}
func (s *echoStream) RecvMsg(m any) error {
	data, ok := <-s.ch
	if !ok {
		return io.EOF
	}
	return s.codec.Unmarshal(data, m)
}

// BenchmarkRequestMetadata measures what the director does to a call's
// metadata: copy it out of the incoming context, sanitise it and attach it
// to the outgoing context.
func BenchmarkRequestMetadata(b *testing.B) {
	d := NewDirector(nil, WithStripKeys("x-gatehouse-subject"))
	in := metadata.Pairs(
		":authority", "gateway.example", "content-type", "application/grpc",
		"user-agent", "grpc-go/1.85.0", "te", "trailers", "grpc-accept-encoding", "gzip",
		"authorization", "Bearer x", "x-request-id", "abc", "x-forwarded-for", "203.0.113.7",
		"x-gatehouse-subject", "forged",
	)
	ctx := peer.NewContext(metadata.NewIncomingContext(context.Background(), in),
		&peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1234}})
	b.ReportAllocs()
	for b.Loop() {
		md, _ := metadata.FromIncomingContext(ctx)
		_ = metadata.NewOutgoingContext(ctx, d.sanitizeRequest(ctx, md))
	}
}

// BenchmarkIncomingMetadataCopy is the baseline of BenchmarkRequestMetadata:
// grpc-go's own copy of the incoming metadata.
func BenchmarkIncomingMetadataCopy(b *testing.B) {
	in := metadata.Pairs(
		":authority", "gateway.example", "content-type", "application/grpc",
		"user-agent", "grpc-go/1.85.0", "te", "trailers", "grpc-accept-encoding", "gzip",
		"authorization", "Bearer x", "x-request-id", "abc", "x-forwarded-for", "203.0.113.7",
		"x-gatehouse-subject", "forged",
	)
	ctx := metadata.NewIncomingContext(context.Background(), in)
	b.ReportAllocs()
	for b.Loop() {
		md, _ := metadata.FromIncomingContext(ctx)
		_ = md
	}
}
