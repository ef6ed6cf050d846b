package validate

import (
	"google.golang.org/protobuf/reflect/protoreflect"
)

// An Option configures the validate interceptors.
type Option interface {
	apply(*options)
}

type options struct {
	requestType func(fullMethod string) (protoreflect.MessageType, bool)
}

func evaluate(opts []Option) *options {
	o := &options{
		requestType: func(string) (protoreflect.MessageType, bool) { return nil, false },
	}
	for _, opt := range opts {
		opt.apply(o)
	}
	return o
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithRequestTypes tells the interceptors the request type of the methods
// whose schema the gateway knows, so that raw frames (messages that are not
// a proto.Message but implement Decoder) can be decoded and validated.
// lookup takes a full method name ("/pkg.Service/Method"); it is called at
// most once per call, must not block and must be safe for concurrent use.
// It should return the same MessageType for a method from call to call (see
// the package documentation on caching). Without this option, or for a
// method lookup does not know, raw frames pass unchecked. A nil lookup keeps
// the default.
func WithRequestTypes(lookup func(fullMethod string) (protoreflect.MessageType, bool)) Option {
	return optionFunc(func(o *options) {
		if lookup != nil {
			o.requestType = lookup
		}
	})
}
