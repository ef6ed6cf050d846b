package upstream

import (
	"google.golang.org/grpc/stats"
	"net"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/clock"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
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
	// statsHandlers run after the pool's own, as one handler.
	statsHandlers []stats.Handler
	// clock drives health check intervals, ejections and DNS refresh.
	clock Clock
	// lookupHost resolves DNS endpoints.
	lookupHost LookupHostFunc
	// drainGrace bounds how long a removed backend's connections stay
	// open for their calls in flight.
	drainGrace time.Duration
}

type funcOption func(*options)

func (f funcOption) apply(o *options) { f(o) }

// WithTransportCredentials sets the transport credentials of every backend
// connection (default: insecure, plaintext).
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return funcOption(func(o *options) { o.creds = c })
}

// WithDialOptions adds dial options to every backend connection, after the
// pool's own (so they win): for example a stats handler or keepalive
// parameters. A service config must keep the pool's load balancing policy
// (see [BalancerServiceConfig]) or endpoint states are no longer reported,
// and replaces the retry policy of routes. Repeated uses add up.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return funcOption(func(o *options) { o.dialOptions = append(o.dialOptions, opts...) })
}

// WithStatsHandler adds h to the stats handler of backend connections. The
// pool's own (which tracks attempts for retry budgets and breakers) and the
// ones added here run as one handler, in that order: grpc-go allocates
// every per-message and per-call event once per handler, so one handler
// instead of two halves that work. Repeated uses add up.
func WithStatsHandler(h stats.Handler) Option {
	return funcOption(func(o *options) { o.statsHandlers = append(o.statsHandlers, h) })
}

// WithConnectTimeout bounds how long connecting to one endpoint (TCP and
// the HTTP/2 handshake) may take before it counts as failed (grpc-go's
// MinConnectTimeout; its default is 20s), for every backend: it overrides
// each Spec's ConnectTimeout, which is how configuration sets it per
// backend.
func WithConnectTimeout(d time.Duration) Option {
	return WithDialOptions(connectParams(d))
}

// connectParams is grpc-go's default reconnect backoff with connect
// timeout d.
func connectParams(d time.Duration) grpc.DialOption {
	return grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: d})
}

// WithClock sets the clock of health checks, ejections and DNS refresh
// (for tests). Default: the real one.
func WithClock(c Clock) Option {
	return funcOption(func(o *options) { o.clock = c })
}

// WithLookupHost sets the DNS lookup of DNS discovery. Default:
// net.DefaultResolver.LookupHost.
func WithLookupHost(f LookupHostFunc) Option {
	return funcOption(func(o *options) { o.lookupHost = f })
}

func defaultOptions() options {
	return options{
		creds:      insecure.NewCredentials(),
		clock:      clock.Real{},
		lookupHost: net.DefaultResolver.LookupHost,
	}
}
