package edge

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gatehouse-dev/gatehouse/routing"
	"google.golang.org/grpc"
)

// shedder caps a listener's calls in flight. A call over the cap is
// refused at once with RESOURCE_EXHAUSTED (503 for REST, whose calls reach
// the same grpc.Server), never queued. Its interceptors sit right inside
// calls and recovery (chain.go), so that a shed call costs no credential
// check, quota lookup, audit record or decode. A nil shedder caps nothing.
type shedder struct {
	max int64
	n   atomic.Int64
}

// newShedder returns the shedder of a listener capped at max calls in
// flight, or nil for no cap (max <= 0).
func newShedder(max int) *shedder {
	if max <= 0 {
		return nil
	}
	return &shedder{max: int64(max)}
}

// admit counts a call in, or refuses it when the listener is full; release
// must be called when an admitted call ends.
func (s *shedder) admit() (release func(), err error) {
	if s.n.Add(1) > s.max {
		s.n.Add(-1)
		return nil, routing.OverloadedError(fmt.Sprintf("gatehouse: %d calls in flight on this listener, its max_concurrent_calls", s.max))
	}
	return func() { s.n.Add(-1) }, nil
}

// stream returns the stream interceptor, none for a nil shedder.
func (s *shedder) stream() []grpc.StreamServerInterceptor {
	if s == nil {
		return nil
	}
	return []grpc.StreamServerInterceptor{func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		release, err := s.admit()
		if err != nil {
			return err
		}
		defer release()
		return handler(srv, ss)
	}}
}

// unary returns the unary interceptor, none for a nil shedder.
func (s *shedder) unary() []grpc.UnaryServerInterceptor {
	if s == nil {
		return nil
	}
	return []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		release, err := s.admit()
		if err != nil {
			return nil, err
		}
		defer release()
		return handler(ctx, req)
	}}
}

// WithDrainDelay sets how long Shutdown keeps accepting calls after
// readiness has turned false, so that load balancers and Kubernetes
// endpoints stop sending new traffic before the listeners close. Default 0;
// a few seconds in production. It counts against the shutdown grace.
func WithDrainDelay(d time.Duration) Option {
	return optionFunc(func(o *options) { o.drainDelay = d })
}

// drainDelay waits out the drain delay (the option, else the config's
// drain_delay), or until ctx ends.
func (g *Gateway) drainDelay(ctx context.Context) {
	d := g.opts.drainDelay
	if d <= 0 {
		d = g.Config().GetDrainDelay().AsDuration()
	}
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
