package quota

import (
	"context"
	"net"
	"net/netip"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// An Option configures the quota interceptors.
type Option interface {
	apply(*options)
}

// RouteFunc names the route that will take a call; "" when none will. It
// must not block and must be safe for concurrent use.
type RouteFunc func(ctx context.Context, fullMethod string, md metadata.MD) string

// SourceFunc returns a call's client IP address; invalid when unknown. It
// must not block and must be safe for concurrent use.
type SourceFunc func(ctx context.Context, md metadata.MD) netip.Addr

type options struct {
	route  RouteFunc
	source SourceFunc
}

func evaluate(opts []Option) *options {
	o := &options{
		route:  func(context.Context, string, metadata.MD) string { return "" },
		source: peerIP,
	}
	for _, opt := range opts {
		opt.apply(o)
	}
	return o
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithRoute sets how a call's route is found. Without it no call has a
// route, and no policy applies. A nil f keeps the default.
func WithRoute(f RouteFunc) Option {
	return optionFunc(func(o *options) {
		if f != nil {
			o.route = f
		}
	})
}

// WithSource sets how a call's client IP is found (the default is the
// transport peer's address; the gateway passes one that trusts the REST
// path's x-forwarded-for). A nil f keeps the default.
func WithSource(f SourceFunc) Option {
	return optionFunc(func(o *options) {
		if f != nil {
			o.source = f
		}
	})
}

// peerIP is the transport peer's IP address.
func peerIP(ctx context.Context, _ metadata.MD) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}
	}
	if ta, ok := p.Addr.(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
