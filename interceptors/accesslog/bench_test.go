package accesslog_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/gatehouse-dev/gatehouse/interceptors/accesslog"
)

// frame is a raw message of a known size.
type frame struct{ n int }

func (f *frame) Len() int { return f.n }

// fakeStream is a server stream whose messages go nowhere.
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *fakeStream) Context() context.Context { return s.ctx }
func (s *fakeStream) RecvMsg(any) error        { return nil }
func (s *fakeStream) SendMsg(any) error        { return nil }

func benchCtx() context.Context {
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 50123}})
	return metadata.NewIncomingContext(ctx, metadata.Pairs(
		"x-request-id", "0123456789abcdef0123456789abcdef",
		"user-agent", "grpc-go/1.85.0",
		":authority", "gateway",
	))
}

// BenchmarkStream measures one proxied call of one request and one response
// frame: the interceptor's wrapper, counting and log line, against a bare
// handler.
func BenchmarkStream(b *testing.B) {
	info := &grpc.StreamServerInfo{FullMethod: "/pkg.Service/Method", IsClientStream: true, IsServerStream: true}
	handler := func(_ any, ss grpc.ServerStream) error {
		f := &frame{n: 512}
		if err := ss.RecvMsg(f); err != nil {
			return err
		}
		return ss.SendMsg(f)
	}
	ss := &fakeStream{ctx: benchCtx()}
	run := func(b *testing.B, ic grpc.StreamServerInterceptor) {
		b.ReportAllocs()
		for b.Loop() {
			if err := ic(nil, ss, info, handler); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("bare", func(b *testing.B) {
		run(b, func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, ss)
		})
	})
	b.Run("json", func(b *testing.B) {
		run(b, accesslog.StreamServerInterceptor(slog.New(slog.NewJSONHandler(io.Discard, nil))))
	})
	b.Run("disabled", func(b *testing.B) {
		run(b, accesslog.StreamServerInterceptor(slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	})
}

// BenchmarkUnary measures one unary call through the interceptor.
func BenchmarkUnary(b *testing.B) {
	info := &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}
	handler := func(_ context.Context, req any) (any, error) { return req, nil }
	ctx := benchCtx()
	req := &frame{n: 64}
	ic := accesslog.UnaryServerInterceptor(slog.New(slog.NewJSONHandler(io.Discard, nil)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ic(ctx, req, info, handler); err != nil {
			b.Fatal(err)
		}
	}
}
