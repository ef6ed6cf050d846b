package requestid_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/gatehouse-dev/gatehouse/interceptors/requestid"
	"github.com/gatehouse-dev/gatehouse/internal/benchcall"
)

const validID = "0123456789abcdef0123456789abcdef"

// benchCtx is an incoming call's context; id, when not empty, is the
// x-request-id the client sent.
func benchCtx(id string) context.Context {
	md := metadata.MD{}
	if id != "" {
		md.Set(requestid.Key, id)
	}
	return benchcall.Incoming(context.Background(), md)
}

// cases are the calls measured: one that brings a valid id, which is kept,
// and one that brings none and gets an id minted by the default generator
// (128 random bits).
var cases = []struct {
	name string
	id   string
}{
	{name: "valid", id: validID},
	{name: "minted"},
}

// checkID fails b unless ctx carries the id the interceptor should have
// picked for a call that sent sent: sent itself when valid, else a minted
// one.
func checkID(b *testing.B, ctx context.Context, sent string) {
	b.Helper()
	got := requestid.FromContext(ctx)
	if sent != "" && got != sent || sent == "" && (len(got) != 32 || !requestid.Valid(got)) {
		b.Fatalf("request id %q for a call that sent %q", got, sent)
	}
}

// BenchmarkStream measures one call of one request and one response frame:
// picking or minting the id, the context and metadata it goes into, the
// response header and the stream wrapper, against a bare handler.
func BenchmarkStream(b *testing.B) {
	info := benchcall.StreamInfo("/pkg.Service/Method")
	b.Run("bare", func(b *testing.B) {
		benchcall.RunStream(b, benchcall.BareStream, &benchcall.Stream{Ctx: benchCtx(validID)}, info, benchcall.Echo)
	})
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			ss := &benchcall.Stream{Ctx: benchCtx(c.id)}
			ic := requestid.StreamServerInterceptor()
			benchcall.CheckStream(b, ic, ss, info, func(ctx context.Context) { checkID(b, ctx, c.id) })
			benchcall.RunStream(b, ic, ss, info, benchcall.Echo)
		})
	}
}

// BenchmarkUnary measures one unary call through the interceptor: picking
// or minting the id, the context and metadata it goes into and the
// response header set through grpc.SetHeader, against a bare handler.
func BenchmarkUnary(b *testing.B) {
	const method = "/grpc.health.v1.Health/Check"
	info := benchcall.UnaryInfo(method)
	req := &benchcall.Frame{N: 64}
	b.Run("bare", func(b *testing.B) {
		ctx, _ := benchcall.WithTransport(benchCtx(validID), method)
		benchcall.RunUnary(b, benchcall.BareUnary, ctx, req, info, benchcall.EchoUnary)
	})
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			ctx, _ := benchcall.WithTransport(benchCtx(c.id), method)
			ic := requestid.UnaryServerInterceptor()
			benchcall.CheckUnary(b, ic, ctx, req, info, func(ctx context.Context) { checkID(b, ctx, c.id) })
			benchcall.RunUnary(b, ic, ctx, req, info, benchcall.EchoUnary)
		})
	}
}
