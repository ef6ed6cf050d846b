package audit_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	trail "github.com/gatehouse-dev/gatehouse/audit"
	"github.com/gatehouse-dev/gatehouse/interceptors/audit"
	"github.com/gatehouse-dev/gatehouse/internal/benchcall"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

// discardSink drops every record, counting them.
type discardSink struct{ n atomic.Int64 }

func (s *discardSink) Write(*trail.Record) error { s.n.Add(1); return nil }
func (s *discardSink) Submit(*trail.Record) bool { s.n.Add(1); return true }
func (s *discardSink) Healthy() bool             { return true }

// benchSink is a sink measured: open returns a new one, and a function
// that waits until it has written every record it accepted (closing it if
// need be) and returns how many it wrote.
type benchSink struct {
	name string
	open func(b *testing.B) (audit.Sink, func() int64)
}

// trailSink opens an audit trail in a temporary file; interval 0 fsyncs
// after each batch (the config's default, PER_RECORD).
func trailSink(interval time.Duration) func(b *testing.B) (audit.Sink, func() int64) {
	return func(b *testing.B) (audit.Sink, func() int64) {
		var written atomic.Int64
		s, err := trail.Open(filepath.Join(b.TempDir(), "audit.log"), trail.Options{
			Interval:  interval,
			OnWritten: func() { written.Add(1) },
		})
		if err != nil {
			b.Fatal(err)
		}
		closeSink := func() {
			if err := s.Close(context.Background()); err != nil {
				b.Error(err)
			}
		}
		b.Cleanup(closeSink)
		return s, func() int64 { closeSink(); return written.Load() }
	}
}

// sinks are what the interceptor writes to: a sink that discards records,
// and an audit trail file that fsyncs per record or once a second. The
// interceptor fails closed, the config's default: every call waits until
// its record is written.
var sinks = []benchSink{
	{name: "discard", open: func(*testing.B) (audit.Sink, func() int64) {
		s := &discardSink{}
		return s, s.n.Load
	}},
	{name: "trail", open: trailSink(0)},
	{name: "trail-fsync-1s", open: trailSink(time.Second)},
}

func benchCtx() context.Context {
	return benchcall.Incoming(context.Background(), metadata.Pairs("x-request-id", "0123456789abcdef0123456789abcdef"))
}

// route stands for the router and the authentication in front of the
// backend: it records the route, backend and principal the record names
// (nothing without the interceptor: a nil callinfo.Info ignores them).
func route(ctx context.Context) {
	ci := callinfo.From(ctx)
	ci.SetRoute("r", "b")
	ci.SetPrincipal(callinfo.Principal{Subject: "alice", Credential: "apikey:partners", Claims: map[string]any{"key_id": "k1"}})
}

// eachSink runs a sub-benchmark for each of the sinks: run measures calls
// through an interceptor that writes to the sink it is given and returns how
// many it made, and every one of them must have had its record written.
func eachSink(b *testing.B, run func(b *testing.B, sink audit.Sink) int64) {
	for _, s := range sinks {
		b.Run(s.name, func(b *testing.B) {
			sink, written := s.open(b)
			n := run(b, sink)
			if got := written(); got != n {
				b.Fatalf("%d records written for %d calls", got, n)
			}
		})
	}
}

// BenchmarkStream measures one audited call of one request and one
// response frame: the stream wrapper, the record built when the call ends
// and its write to the sink, against a bare handler.
func BenchmarkStream(b *testing.B) {
	info := benchcall.StreamInfo("/pkg.Service/Method")
	handler := func(srv any, ss grpc.ServerStream) error {
		route(ss.Context())
		return benchcall.Echo(srv, ss)
	}
	ss := &benchcall.Stream{Ctx: benchCtx()}
	b.Run("bare", func(b *testing.B) {
		benchcall.RunStream(b, benchcall.BareStream, ss, info, handler)
	})
	eachSink(b, func(b *testing.B, sink audit.Sink) int64 {
		return benchcall.RunStream(b, audit.StreamServerInterceptor(sink, audit.WithFailClosed(true)), ss, info, handler)
	})
}

// BenchmarkUnary measures one audited unary call: the record built when
// the call ends and its write to the sink, against a bare handler.
func BenchmarkUnary(b *testing.B) {
	info := benchcall.UnaryInfo("/pkg.Service/Unary")
	handler := func(ctx context.Context, req any) (any, error) {
		route(ctx)
		return req, nil
	}
	ctx := benchCtx()
	req := &benchcall.Frame{N: 64}
	b.Run("bare", func(b *testing.B) {
		benchcall.RunUnary(b, benchcall.BareUnary, ctx, req, info, handler)
	})
	eachSink(b, func(b *testing.B, sink audit.Sink) int64 {
		return benchcall.RunUnary(b, audit.UnaryServerInterceptor(sink, audit.WithFailClosed(true)), ctx, req, info, handler)
	})
}
