package edge

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gatehouse-dev/gatehouse/routing"
	"google.golang.org/grpc"
)

// shedOptions cap a listener's calls in flight at max (0: no cap). A call
// over the cap is refused at once with RESOURCE_EXHAUSTED (503 for REST,
// whose calls reach the same grpc.Server), never queued.
func shedOptions(max int) []grpc.ServerOption {
	if max <= 0 {
		return nil
	}
	var n atomic.Int64
	admit := func() (func(), error) {
		if n.Add(1) > int64(max) {
			n.Add(-1)
			return nil, routing.OverloadedError(fmt.Sprintf("gatehouse: %d calls in flight on this listener, its max_concurrent_calls", max))
		}
		return func() { n.Add(-1) }, nil
	}
	return []grpc.ServerOption{
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			release, err := admit()
			if err != nil {
				return err
			}
			defer release()
			return handler(srv, ss)
		}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			release, err := admit()
			if err != nil {
				return nil, err
			}
			defer release()
			return handler(ctx, req)
		}),
	}
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
