package recovery_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-dev/gatehouse/interceptors/recovery"
	"github.com/gatehouse-dev/gatehouse/internal/benchcall"
)

// benchLogger is a JSON logger that writes nowhere, as a production logger
// would format the panic line.
func benchLogger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(io.Discard, nil))
}

// BenchmarkStream measures one call of one request and one response frame
// whose handler returns normally: the deferred recover the interceptor
// installs, against a bare handler. The "panic" sub-benchmark measures one
// call whose handler panics: recovery, stack capture and log line.
func BenchmarkStream(b *testing.B) {
	info := benchcall.StreamInfo("/pkg.Service/Method")
	ss := &benchcall.Stream{Ctx: context.Background()}
	b.Run("bare", func(b *testing.B) {
		benchcall.RunStream(b, benchcall.BareStream, ss, info, benchcall.Echo)
	})
	b.Run("recovery", func(b *testing.B) {
		benchcall.RunStream(b, recovery.StreamServerInterceptor(recovery.WithLogger(benchLogger())), ss, info, benchcall.Echo)
	})
	b.Run("panic", func(b *testing.B) {
		ic := recovery.StreamServerInterceptor(recovery.WithLogger(benchLogger()))
		panicky := func(any, grpc.ServerStream) error { panic("boom") }
		b.ReportAllocs()
		for b.Loop() {
			if err := ic(nil, ss, info, panicky); status.Code(err) != codes.Internal {
				b.Fatalf("err = %v, want Internal", err)
			}
		}
	})
}

// BenchmarkUnary measures one unary call through the interceptor whose
// handler returns normally, against a bare handler. The "panic"
// sub-benchmark measures one call whose handler panics.
func BenchmarkUnary(b *testing.B) {
	info := benchcall.UnaryInfo("/grpc.health.v1.Health/Check")
	ctx := context.Background()
	req := &benchcall.Frame{N: 64}
	b.Run("bare", func(b *testing.B) {
		benchcall.RunUnary(b, benchcall.BareUnary, ctx, req, info, benchcall.EchoUnary)
	})
	b.Run("recovery", func(b *testing.B) {
		benchcall.RunUnary(b, recovery.UnaryServerInterceptor(recovery.WithLogger(benchLogger())), ctx, req, info, benchcall.EchoUnary)
	})
	b.Run("panic", func(b *testing.B) {
		ic := recovery.UnaryServerInterceptor(recovery.WithLogger(benchLogger()))
		panicky := func(context.Context, any) (any, error) { panic("boom") }
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ic(ctx, req, info, panicky); status.Code(err) != codes.Internal {
				b.Fatalf("err = %v, want Internal", err)
			}
		}
	})
}
