package telemetry

import (
	"context"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

// The calls interceptors count every call of a client listener: in flight
// while it runs, then by route, method and code with its duration. They
// are the outermost layer of the chain and attach the callinfo.Info that
// the layers below and the router share (unless the tracing stats handler
// attached it already).
//
// Counting here rather than in the server's stats handler spares every
// message of every call grpc-go's payload events (a clock read, an
// allocation and a call each way), which a stats handler cannot decline;
// the stats handler is installed only when tracing is on.

// StreamServerInterceptor counts each streaming (and proxied) call in m,
// which may be nil.
func StreamServerInterceptor(m *Metrics) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, ci := callinfo.With(ss.Context())
		if ctx != ss.Context() {
			w := middleware.WrapServerStream(ss)
			w.WrappedContext = ctx
			ss = w
		}
		m.callStarted()
		start := time.Now()
		err := handler(srv, ss)
		route, _ := ci.Route()
		m.callEnded(route, info.FullMethod, callinfo.Code(err), time.Since(start))
		return err
	}
}

// UnaryServerInterceptor counts each unary call in m, which may be nil.
func UnaryServerInterceptor(m *Metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, ci := callinfo.With(ctx)
		m.callStarted()
		start := time.Now()
		resp, err := handler(ctx, req)
		route, _ := ci.Route()
		m.callEnded(route, info.FullMethod, callinfo.Code(err), time.Since(start))
		return resp, err
	}
}
