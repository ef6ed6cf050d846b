package accesslog_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-dev/gatehouse/interceptors/accesslog"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

// TestTelemetryFields checks trace id, HTTP status, upstream duration and
// principal.
func TestTelemetryFields(t *testing.T) {
	var buf syncBuffer
	ic := accesslog.UnaryServerInterceptor(slog.New(slog.NewJSONHandler(&buf, nil)),
		accesslog.WithTraceID(func(context.Context) string { return "4bf92f3577b34da6a3ce929d0e0e4736" }),
		accesslog.WithHTTPStatus(func(_ context.Context, c codes.Code) int {
			if c == codes.NotFound {
				return 404
			}
			return 0
		}))
	_, _ = ic(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/s/m"}, func(ctx context.Context, _ any) (any, error) {
		ci := callinfo.From(ctx)
		ci.SetPrincipal(callinfo.Principal{Subject: "alice"})
		ci.StartAttempt()
		ci.EndAttempt(2 * time.Millisecond)
		return nil, status.Error(codes.NotFound, "x")
	})
	l := buf.lines(t)[0]
	for k, v := range map[string]any{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "http_status": 404.0, "upstream_duration_ms": 2.0, "principal": "alice"} {
		if l[k] != v {
			t.Errorf("%s = %v, want %v", k, l[k], v)
		}
	}
}

// TestSampleSuccesses logs a fraction of OK calls and every failed call.
func TestSampleSuccesses(t *testing.T) {
	draws := []float64{0.1, 0.9, 0.2, 0.8}
	i := 0
	var buf syncBuffer
	ic := accesslog.UnaryServerInterceptor(slog.New(slog.NewJSONHandler(&buf, nil)),
		accesslog.WithSampleSuccesses(0.5),
		accesslog.WithRand(func() float64 { d := draws[i%len(draws)]; i++; return d }))
	call := func(err error) {
		_, _ = ic(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/s/m"}, func(context.Context, any) (any, error) { return nil, err })
	}
	for range 4 {
		call(nil)
	}
	call(status.Error(codes.Internal, "x"))
	lines := buf.lines(t)
	if len(lines) != 3 { // draws 0.1 and 0.2 of four OK calls, and the failure
		t.Fatalf("logged %d lines, want 3", len(lines))
	}
	if lines[2]["grpc.code"] != "Internal" {
		t.Errorf("last line = %v", lines[2])
	}

	var none syncBuffer
	ic = accesslog.UnaryServerInterceptor(slog.New(slog.NewJSONHandler(&none, nil)), accesslog.WithSampleSuccesses(0))
	_, _ = ic(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/s/m"}, func(context.Context, any) (any, error) { return nil, nil })
	if len(none.lines(t)) != 0 {
		t.Error("a ratio of 0 logged a success")
	}
}
