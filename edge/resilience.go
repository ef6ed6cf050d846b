package edge

import (
	"context"
	"sync"

	"github.com/gatehouse-dev/gatehouse/internal/grpccode"

	"github.com/gatehouse-dev/gatehouse/config"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/routing"
	"github.com/gatehouse-dev/gatehouse/upstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// WithUpstreamOptions adds options to the backend pool, for example
// upstream.WithConnectTimeout, or a clock and a DNS lookup in tests.
func WithUpstreamOptions(opts ...upstream.Option) Option {
	return optionFunc(func(o *options) { o.upstream = append(o.upstream, opts...) })
}

// backendSpec turns a configured backend into the pool's spec, defaults
// filled in.
func backendSpec(b *configv1.Backend) upstream.Spec {
	s := upstream.Spec{
		Name:       b.GetName(),
		Endpoints:  b.GetEndpoints(),
		DNSRefresh: config.DNSRefresh(b),
		Weights:    b.GetEndpointWeights(),
		// 0 when absent: grpc-go's 20s.
		ConnectTimeout: b.GetConnectTimeout().AsDuration(),
	}
	if b.GetDiscovery() == "DNS" {
		s.Discovery = upstream.DNS
	}
	switch config.LoadBalancing(b) {
	case "LEAST_REQUEST":
		s.Balancing = upstream.LeastRequest
	case "PICK_FIRST":
		s.Balancing = upstream.PickFirst
	default:
		s.Balancing = upstream.RoundRobin
	}
	if hc, ok := config.HealthCheck(b); ok {
		s.HealthCheck = &upstream.HealthCheck{
			Interval: hc.Interval, Timeout: hc.Timeout,
			UnhealthyThreshold: hc.UnhealthyThreshold, HealthyThreshold: hc.HealthyThreshold,
			Service: hc.Service,
		}
	}
	cb := config.CircuitBreaker(b)
	s.Breaker = &upstream.Breaker{
		MaxConcurrent: cb.MaxConcurrent, MaxPending: cb.MaxPending,
		ConsecutiveFailures: cb.ConsecutiveFailures, FailureRatio: cb.FailureRatio, MinRequests: cb.MinRequests,
		Window: cb.Window, OpenFor: cb.OpenFor, HalfOpenProbes: cb.HalfOpenProbes,
	}
	if od, ok := config.OutlierDetection(b); ok {
		s.Outlier = &upstream.Outlier{
			ConsecutiveFailures: od.ConsecutiveFailures, EjectionTime: od.EjectionTime,
			MaxEjectionPercent: od.MaxEjectionPercent,
		}
	}
	return s
}

// callPolicy turns a route's retry settings into the pool's call option.
// Routes without retry get a budget share but no retry policy.
func callPolicy(r *configv1.Route) *upstream.CallPolicy {
	rs, ok := config.RouteRetry(r)
	if !ok {
		return nil
	}
	p := &upstream.CallPolicy{BudgetPercent: rs.BudgetPercent, BufferBytes: rs.BufferBytes}
	if rs.Attempts >= 2 && rs.HedgeDelay == 0 {
		rp := &upstream.RetryPolicy{Attempts: rs.Attempts, Base: rs.BackoffBase, Max: rs.BackoffMax}
		for _, name := range rs.On {
			if c, ok := grpccode.Parse(name); ok {
				rp.Codes = append(rp.Codes, c)
			}
		}
		p.Retry = rp
	}
	return p
}

// withCallPolicies wraps r so that each target's connection carries the
// route's retry policy to the backend pool.
func (g *Gateway) withCallPolicies(r routing.Resolver) routing.Resolver {
	var cache sync.Map // *configv1.Route -> grpc.CallOption (nil when none)
	return routing.ResolverFunc(func(ctx context.Context, fullMethod string, md metadata.MD) (routing.Target, error) {
		t, err := r.Resolve(ctx, fullMethod, md)
		if err != nil || t.Conn == nil || t.Config == nil {
			return t, err
		}
		v, ok := cache.Load(t.Config)
		if !ok {
			var opt grpc.CallOption
			if p := callPolicy(t.Config); p != nil {
				opt = p
			}
			v, _ = cache.LoadOrStore(t.Config, opt)
		}
		if opt, _ := v.(grpc.CallOption); opt != nil {
			t.Conn = policyConn{ClientConnInterface: t.Conn, opt: opt}
		}
		return t, nil
	})
}

// policyConn adds a route's call option to every call on a connection.
type policyConn struct {
	grpc.ClientConnInterface
	opt grpc.CallOption
}

func (c policyConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.ClientConnInterface.NewStream(ctx, desc, method, append(opts, c.opt)...)
}

func (c policyConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return c.ClientConnInterface.Invoke(ctx, method, args, reply, append(opts, c.opt)...)
}
