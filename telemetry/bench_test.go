package telemetry_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"

	"github.com/gatehouse-dev/gatehouse/internal/benchcall"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
	"github.com/gatehouse-dev/gatehouse/telemetry"
)

// routeCall stands for the router: it records the route and backend in the
// call's callinfo.Info (nothing without the interceptor: a nil Info ignores
// them).
func routeCall(ctx context.Context) { callinfo.From(ctx).SetRoute("orders", "shop") }

// requests sums gatehouse_requests_total in m.
func requests(b *testing.B, m *telemetry.Metrics) int64 {
	b.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		b.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "gatehouse_requests_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			n += s.GetCounter().GetValue()
		}
	}
	return int64(n)
}

// metricsCases are the Metrics the interceptors count in: the gateway's,
// made as NewMetrics makes them, and nil (metrics off), which still
// attaches the callinfo.Info.
var metricsCases = []struct {
	name    string
	metrics func() *telemetry.Metrics
}{
	{name: "metrics", metrics: func() *telemetry.Metrics { return telemetry.NewMetrics("bench") }},
	{name: "nil", metrics: func() *telemetry.Metrics { return nil }},
}

// eachMetrics runs a sub-benchmark for each of the metricsCases: run
// measures calls through an interceptor that counts in the Metrics it is
// given and returns how many it made, after one call that checks the
// callinfo.Info; every call must have been counted.
func eachMetrics(b *testing.B, run func(b *testing.B, m *telemetry.Metrics) int64) {
	for _, c := range metricsCases {
		b.Run(c.name, func(b *testing.B) {
			m := c.metrics()
			n := run(b, m)
			if m != nil {
				if got := requests(b, m); got != n+1 {
					b.Fatalf("gatehouse_requests_total = %d, want %d", got, n+1)
				}
			}
		})
	}
}

// checkInfo returns a check that fails b unless the context it is given
// carries a callinfo.Info.
func checkInfo(b *testing.B) func(context.Context) {
	return func(ctx context.Context) {
		if callinfo.From(ctx) == nil {
			b.Fatal("no callinfo.Info in the handler's context")
		}
	}
}

// BenchmarkStream measures one call of one request and one response frame:
// the callinfo.Info attached, the in-flight gauge and the counter and
// histogram by route, method and code, against a bare handler.
func BenchmarkStream(b *testing.B) {
	info := benchcall.StreamInfo("/pkg.Service/Method")
	handler := func(srv any, ss grpc.ServerStream) error {
		routeCall(ss.Context())
		return benchcall.Echo(srv, ss)
	}
	ss := &benchcall.Stream{Ctx: context.Background()}
	b.Run("bare", func(b *testing.B) {
		benchcall.RunStream(b, benchcall.BareStream, ss, info, handler)
	})
	eachMetrics(b, func(b *testing.B, m *telemetry.Metrics) int64 {
		ic := telemetry.StreamServerInterceptor(m)
		benchcall.CheckStream(b, ic, ss, info, checkInfo(b))
		return benchcall.RunStream(b, ic, ss, info, handler)
	})
}

// BenchmarkUnary measures one unary call through the interceptor, against
// a bare handler.
func BenchmarkUnary(b *testing.B) {
	info := benchcall.UnaryInfo("/pkg.Service/Unary")
	handler := func(ctx context.Context, req any) (any, error) {
		routeCall(ctx)
		return req, nil
	}
	ctx := context.Background()
	req := &benchcall.Frame{N: 64}
	b.Run("bare", func(b *testing.B) {
		benchcall.RunUnary(b, benchcall.BareUnary, ctx, req, info, handler)
	})
	eachMetrics(b, func(b *testing.B, m *telemetry.Metrics) int64 {
		ic := telemetry.UnaryServerInterceptor(m)
		benchcall.CheckUnary(b, ic, ctx, req, info, checkInfo(b))
		return benchcall.RunUnary(b, ic, ctx, req, info, handler)
	})
}
