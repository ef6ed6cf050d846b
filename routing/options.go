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
	// callOptions are appended to every backend stream's call options.
	callOptions []grpc.CallOption
	// forwardedFor appends the client's address to x-forwarded-for.
	forwardedFor bool
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

// WithCallOptions adds call options to every stream the director opens on a
// backend, for example grpc.MaxCallRecvMsgSize. The director always forces
// its own codec; a codec given here is ignored. Repeated uses add up.
func WithCallOptions(opts ...grpc.CallOption) Option {
	return funcOption(func(o *options) {
		o.callOptions = append(o.callOptions, opts...)
	})
}

// WithForwardedFor sets whether the director appends the client's address to
// the x-forwarded-for request metadata (default true). Only network peers
// (TCP, unix) are appended; an in-process peer never is.
func WithForwardedFor(enabled bool) Option {
	return funcOption(func(o *options) { o.forwardedFor = enabled })
}
