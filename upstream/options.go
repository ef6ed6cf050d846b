package upstream

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Option configures a [Pool].
type Option interface {
	apply(*options)
}

// options holds a Pool's settings; New fills in the defaults.
type options struct {
	// creds secure the connections to every backend.
	creds credentials.TransportCredentials
	// dialOptions are added to every backend connection's dial options,
	// after the pool's own.
	dialOptions []grpc.DialOption
}

type funcOption func(*options)

func (f funcOption) apply(o *options) { f(o) }

// WithTransportCredentials sets the transport credentials of every backend
// connection (default: insecure, plaintext).
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return funcOption(func(o *options) { o.creds = c })
}

// WithDialOptions adds dial options to every backend connection, after the
// pool's own (so they win): for example a stats handler, keepalive
// parameters or a default service config with a retryPolicy. A service
// config must keep the pool's load balancing policy (see
// [BalancerServiceConfig]) or endpoint states are no longer reported.
// Repeated uses add up.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return funcOption(func(o *options) { o.dialOptions = append(o.dialOptions, opts...) })
}

func defaultOptions() options {
	return options{
		creds: insecure.NewCredentials(),
	}
}
