package routing

import (
	"strings"

	"google.golang.org/grpc"
)

// Option configures a [Director].
type Option interface {
	apply(*options)
}

// options holds the Director's settings; NewDirector fills in the defaults.
type options struct {
	// stripKeys are request metadata keys never forwarded to a backend, on
	// top of the hop-by-hop and reserved ones. Lowercase.
	stripKeys map[string]struct{}
	// stripPrefixes are request metadata key prefixes never forwarded.
	// Lowercase.
	stripPrefixes []string
	// callOptions are appended to every backend stream's call options.
	callOptions []grpc.CallOption
	// forwardedFor sets x-forwarded-for to the call's hops (callinfo.Source).
	forwardedFor bool
	// clock times hedging and idle timeouts.
	clock Clock
}

type funcOption func(*options)

func (f funcOption) apply(o *options) { f(o) }

// WithStripKeys drops the given request metadata keys (case-insensitive)
// before a call is forwarded, in addition to the hop-by-hop and reserved
// keys that are always dropped. Use it for the identity headers the gateway
// sets itself, so that a client can never supply them. Repeated uses add up.
func WithStripKeys(keys ...string) Option {
	return funcOption(func(o *options) {
		if o.stripKeys == nil {
			o.stripKeys = make(map[string]struct{}, len(keys))
		}
		for _, k := range keys {
			o.stripKeys[strings.ToLower(k)] = struct{}{}
		}
	})
}

// WithStripPrefixes drops request metadata keys that start with any of
// the given prefixes (case-insensitive), like WithStripKeys: for example
// the prefix of the claims the gateway forwards. Repeated uses add up.
func WithStripPrefixes(prefixes ...string) Option {
	return funcOption(func(o *options) {
		for _, p := range prefixes {
			if p != "" {
				o.stripPrefixes = append(o.stripPrefixes, strings.ToLower(p))
			}
		}
	})
}

// WithCallOptions adds call options to every stream the director opens on a
// backend, for example grpc.MaxCallRecvMsgSize. The director always forces
// its own codec; a codec given here is ignored. Repeated uses add up.
func WithCallOptions(opts ...grpc.CallOption) Option {
	return funcOption(func(o *options) {
		o.callOptions = append(o.callOptions, opts...)
	})
}

// WithForwardedFor sets whether the director rewrites the x-forwarded-for
// request metadata (default true): to the hops of the call's
// callinfo.Source, from the client the gateway believes to its transport
// peer, so that a client's own x-forwarded-for crosses only from trusted
// proxies. Without a Source attached to the call (callinfo.WithSource), no
// proxy is trusted: a TCP peer's address replaces whatever it sent, a unix
// socket peer is "unix:", and an in-process call keeps the last hop, which
// the gateway's HTTP side appended. Off, x-forwarded-for passes unchanged.
func WithForwardedFor(enabled bool) Option {
	return funcOption(func(o *options) { o.forwardedFor = enabled })
}

// WithClock sets the clock of the director's hedge delays and route idle
// timeouts (default: the real one), so that tests move time by hand.
// Deadlines are context deadlines and follow the real clock whatever the
// option says.
func WithClock(c Clock) Option {
	return funcOption(func(o *options) {
		if c != nil {
			o.clock = c
		}
	})
}
