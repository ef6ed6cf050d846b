// Package benchcall holds what the interceptor benchmarks share: a server
// stream and a transport stream that go nowhere, a raw frame, the echo
// handler, bare pass-through interceptors to compare with, and the loops that
// call an interceptor once per iteration. It is imported by tests only.
package benchcall

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Frame is a raw message of a known size.
type Frame struct{ N int }

// Len returns the size of the frame in bytes.
func (f *Frame) Len() int { return f.N }

// Stream is a server stream whose messages go nowhere. It keeps the last
// header set or sent, to check what an interceptor sent; its trailers are
// dropped. Other methods are those of the embedded ServerStream (nil unless
// set).
type Stream struct {
	grpc.ServerStream
	Ctx    context.Context
	Header metadata.MD
}

// Context returns s.Ctx.
func (s *Stream) Context() context.Context { return s.Ctx }

// RecvMsg receives nothing and leaves m as it is.
func (s *Stream) RecvMsg(any) error { return nil }

// SendMsg drops m.
func (s *Stream) SendMsg(any) error { return nil }

// SetHeader keeps md as s.Header.
func (s *Stream) SetHeader(md metadata.MD) error { s.Header = md; return nil }

// SendHeader keeps md as s.Header.
func (s *Stream) SendHeader(md metadata.MD) error { s.Header = md; return nil }

// SetTrailer drops md.
func (s *Stream) SetTrailer(metadata.MD) {}

// Transport is the server transport stream that grpc.SetHeader needs in a
// unary call's context. It keeps the last header set or sent.
type Transport struct {
	FullMethod string
	Header     metadata.MD
}

// Method returns t.FullMethod.
func (t *Transport) Method() string { return t.FullMethod }

// SetHeader keeps md as t.Header.
func (t *Transport) SetHeader(md metadata.MD) error { t.Header = md; return nil }

// SendHeader keeps md as t.Header.
func (t *Transport) SendHeader(md metadata.MD) error { t.Header = md; return nil }

// SetTrailer drops md.
func (t *Transport) SetTrailer(metadata.MD) error { return nil }

// WithTransport returns ctx with a new Transport for method, as grpc gives a
// unary call's handler, and that Transport.
func WithTransport(ctx context.Context, method string) (context.Context, *Transport) {
	t := &Transport{FullMethod: method}
	return grpc.NewContextWithServerTransportStream(ctx, t), t
}

// Incoming returns parent as an incoming call's context: from the TCP peer
// 10.1.2.3:50123, with the metadata md and the user-agent and :authority
// that a grpc-go client sends.
func Incoming(parent context.Context, md metadata.MD) context.Context {
	ctx := peer.NewContext(parent, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 50123}})
	md = metadata.Join(md, metadata.Pairs("user-agent", "grpc-go/1.85.0", ":authority", "gateway"))
	return metadata.NewIncomingContext(ctx, md)
}

// StreamInfo returns the info of a bidirectional streaming method.
func StreamInfo(method string) *grpc.StreamServerInfo {
	return &grpc.StreamServerInfo{FullMethod: method, IsClientStream: true, IsServerStream: true}
}

// UnaryInfo returns the info of a unary method.
func UnaryInfo(method string) *grpc.UnaryServerInfo {
	return &grpc.UnaryServerInfo{FullMethod: method}
}

// Echo is a stream handler that receives one 512-byte Frame and sends it
// back.
func Echo(_ any, ss grpc.ServerStream) error {
	f := &Frame{N: 512}
	if err := ss.RecvMsg(f); err != nil {
		return err
	}
	return ss.SendMsg(f)
}

// EchoUnary is a unary handler that answers the request itself.
func EchoUnary(_ context.Context, req any) (any, error) { return req, nil }

// BareStream is a stream interceptor that only calls the handler: the
// figure to compare an interceptor with.
func BareStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, ss)
}

// BareUnary is a unary interceptor that only calls the handler: the figure
// to compare an interceptor with.
func BareUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	return h(ctx, req)
}

// RunStream calls ic with ss, info and h once per b.Loop iteration,
// reporting allocations, and returns how many calls it made. An error
// fails b.
func RunStream(b *testing.B, ic grpc.StreamServerInterceptor, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) int64 {
	b.Helper()
	b.ReportAllocs()
	var n int64
	for b.Loop() {
		if err := ic(nil, ss, info, h); err != nil {
			b.Fatal(err)
		}
		n++
	}
	return n
}

// RunUnary calls ic with ctx, req, info and h once per b.Loop iteration,
// reporting allocations, and returns how many calls it made. An error
// fails b.
func RunUnary(b *testing.B, ic grpc.UnaryServerInterceptor, ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) int64 {
	b.Helper()
	b.ReportAllocs()
	var n int64
	for b.Loop() {
		if _, err := ic(ctx, req, info, h); err != nil {
			b.Fatal(err)
		}
		n++
	}
	return n
}

// RunRecv calls ss.RecvMsg(m) once per b.Loop iteration, reporting
// allocations. An error fails b.
func RunRecv(b *testing.B, ss grpc.ServerStream, m any) {
	b.Helper()
	b.ReportAllocs()
	for b.Loop() {
		if err := ss.RecvMsg(m); err != nil {
			b.Fatal(err)
		}
	}
}

// CheckStream calls ic once with ss and info, and a handler that runs check
// on the context it is given: check fails b unless the call took the path
// the benchmark measures. An error from ic fails b.
func CheckStream(b *testing.B, ic grpc.StreamServerInterceptor, ss grpc.ServerStream, info *grpc.StreamServerInfo, check func(context.Context)) {
	b.Helper()
	err := ic(nil, ss, info, func(_ any, s grpc.ServerStream) error {
		check(s.Context())
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// CheckUnary calls ic once with ctx, req and info, and a handler that runs
// check on the context it is given: check fails b unless the call took the
// path the benchmark measures. An error from ic fails b.
func CheckUnary(b *testing.B, ic grpc.UnaryServerInterceptor, ctx context.Context, req any, info *grpc.UnaryServerInfo, check func(context.Context)) {
	b.Helper()
	_, err := ic(ctx, req, info, func(ctx context.Context, _ any) (any, error) {
		check(ctx)
		return nil, nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
