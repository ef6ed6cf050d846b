package quota_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	iquota "github.com/gatehouse-dev/gatehouse/interceptors/quota"
	"github.com/gatehouse-dev/gatehouse/internal/benchcall"
	"github.com/gatehouse-dev/gatehouse/quota"
)

func benchCtx() context.Context {
	return benchcall.Incoming(context.Background(), metadata.Pairs("x-tenant", "acme"))
}

// benchLimiter is an in-memory limiter with one policy keyed by tenant,
// whose rate (a billion calls a second, as many at once) no benchmark can
// exhaust: every call is allowed and counted.
func benchLimiter(b *testing.B) *quota.Limiter {
	b.Helper()
	l, err := quota.New([]quota.Policy{{
		Name: "per-tenant",
		Key:  `metadata["x-tenant"]`,
		Rate: &quota.Rate{Requests: 1_000_000_000, Per: time.Second, Burst: 1_000_000_000},
	}}, nil, 1)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// routeAPI takes every call on the route "api"; routeNone takes none, so
// that no policy applies.
var (
	routeAPI  = iquota.WithRoute(func(context.Context, string, metadata.MD) string { return "api" })
	routeNone = iquota.WithRoute(func(context.Context, string, metadata.MD) string { return "" })
)

// checkDecided fails b unless hdr carries the per-tenant policy's
// RateLimit header: the call was routed, decided and allowed.
func checkDecided(b *testing.B, hdr metadata.MD) {
	b.Helper()
	if got := hdr.Get(iquota.HeaderRateLimit); len(got) != 1 || got[0] == "" {
		b.Fatalf("ratelimit header %q: the policy did not decide", got)
	}
}

// BenchmarkStream measures one call of one request and one response frame
// that the interceptor lets through: the policy's CEL key, the in-memory
// GCRA bucket and the RateLimit headers ("allowed"), or only the route
// lookup when no route takes the call ("unrouted"), against a bare handler.
func BenchmarkStream(b *testing.B) {
	info := benchcall.StreamInfo("/pkg.Service/Method")
	b.Run("bare", func(b *testing.B) {
		benchcall.RunStream(b, benchcall.BareStream, &benchcall.Stream{Ctx: benchCtx()}, info, benchcall.Echo)
	})
	b.Run("allowed", func(b *testing.B) {
		ss := &benchcall.Stream{Ctx: benchCtx()}
		ic := iquota.StreamServerInterceptor(benchLimiter(b), routeAPI)
		if err := ic(nil, ss, info, benchcall.Echo); err != nil {
			b.Fatal(err)
		}
		checkDecided(b, ss.Header)
		benchcall.RunStream(b, ic, ss, info, benchcall.Echo)
	})
	b.Run("unrouted", func(b *testing.B) {
		ic := iquota.StreamServerInterceptor(benchLimiter(b), routeNone)
		benchcall.RunStream(b, ic, &benchcall.Stream{Ctx: benchCtx()}, info, benchcall.Echo)
	})
}

// BenchmarkUnary measures one unary call that the interceptor lets
// through, with the headers set through grpc.SetHeader ("allowed"), or
// that no route takes ("unrouted"), against a bare handler.
func BenchmarkUnary(b *testing.B) {
	const method = "/grpc.health.v1.Health/Check"
	info := benchcall.UnaryInfo(method)
	req := &benchcall.Frame{N: 64}
	b.Run("bare", func(b *testing.B) {
		ctx, _ := benchcall.WithTransport(benchCtx(), method)
		benchcall.RunUnary(b, benchcall.BareUnary, ctx, req, info, benchcall.EchoUnary)
	})
	b.Run("allowed", func(b *testing.B) {
		ctx, st := benchcall.WithTransport(benchCtx(), method)
		ic := iquota.UnaryServerInterceptor(benchLimiter(b), routeAPI)
		if _, err := ic(ctx, req, info, benchcall.EchoUnary); err != nil {
			b.Fatal(err)
		}
		checkDecided(b, st.Header)
		benchcall.RunUnary(b, ic, ctx, req, info, benchcall.EchoUnary)
	})
	b.Run("unrouted", func(b *testing.B) {
		ctx, _ := benchcall.WithTransport(benchCtx(), method)
		benchcall.RunUnary(b, iquota.UnaryServerInterceptor(benchLimiter(b), routeNone), ctx, req, info, benchcall.EchoUnary)
	})
}
