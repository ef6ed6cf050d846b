package accesslog_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/gatehouse-dev/gatehouse/interceptors/accesslog"
	"github.com/gatehouse-dev/gatehouse/internal/benchcall"
)

func benchCtx() context.Context {
	return benchcall.Incoming(context.Background(), metadata.Pairs("x-request-id", "0123456789abcdef0123456789abcdef"))
}

// BenchmarkStream measures one proxied call of one request and one response
// frame: the interceptor's wrapper, counting and log line, against a bare
// handler.
func BenchmarkStream(b *testing.B) {
	info := benchcall.StreamInfo("/pkg.Service/Method")
	ss := &benchcall.Stream{Ctx: benchCtx()}
	b.Run("bare", func(b *testing.B) {
		benchcall.RunStream(b, benchcall.BareStream, ss, info, benchcall.Echo)
	})
	b.Run("json", func(b *testing.B) {
		ic := accesslog.StreamServerInterceptor(slog.New(slog.NewJSONHandler(io.Discard, nil)))
		benchcall.RunStream(b, ic, ss, info, benchcall.Echo)
	})
	b.Run("fastjson", func(b *testing.B) {
		ic := accesslog.StreamServerInterceptor(slog.New(accesslog.NewJSONHandler(io.Discard)))
		benchcall.RunStream(b, ic, ss, info, benchcall.Echo)
	})
	b.Run("disabled", func(b *testing.B) {
		ic := accesslog.StreamServerInterceptor(slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn})))
		benchcall.RunStream(b, ic, ss, info, benchcall.Echo)
	})
}

// BenchmarkUnary measures one unary call through the interceptor.
func BenchmarkUnary(b *testing.B) {
	ic := accesslog.UnaryServerInterceptor(slog.New(slog.NewJSONHandler(io.Discard, nil)))
	benchcall.RunUnary(b, ic, benchCtx(), &benchcall.Frame{N: 64}, benchcall.UnaryInfo("/grpc.health.v1.Health/Check"), benchcall.EchoUnary)
}
