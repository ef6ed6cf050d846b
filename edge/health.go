package edge

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// drainingHealth serves grpc.health.v1 from a health.Server, and ends open
// Watch streams when the gateway starts draining. grpc-go's
// health.Server.Shutdown sends NOT_SERVING to watchers but leaves their
// streams open, and a graceful stop waits for every open stream: one
// client doing client-side health checking would hold the drain for the
// whole grace period.
type drainingHealth struct {
	*health.Server
	once     sync.Once
	draining chan struct{}
}

func newDrainingHealth() *drainingHealth {
	return &drainingHealth{Server: health.NewServer(), draining: make(chan struct{})}
}

// drain sets every status NOT_SERVING and ends Watch streams once they
// have been told.
func (h *drainingHealth) drain() {
	h.once.Do(func() {
		h.Server.Shutdown()
		close(h.draining)
	})
}

// Watch relays the health.Server's updates until the gateway drains; then
// it ends the stream with UNAVAILABLE, after the final NOT_SERVING.
func (h *drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.draining:
		case <-ctx.Done():
		}
		cancel()
	}()
	err := h.Server.Watch(req, &watchStream{Health_WatchServer: stream, ctx: ctx})
	select {
	case <-h.draining:
		if stream.Context().Err() == nil {
			_ = stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING})
			return status.Error(codes.Unavailable, "gatehouse: draining")
		}
	default:
	}
	return err
}

// watchStream is a Watch stream with a context that ends when the gateway
// drains.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w *watchStream) Context() context.Context { return w.ctx }
