package audit

import (
	"context"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// An Option configures the audit interceptors.
type Option interface {
	apply(*options)
}

type options struct {
	now          func() time.Time
	failClosed   bool
	capture      map[string][]string
	redact       []string
	requestTypes func(fullMethod string) (protoreflect.MessageType, bool)
	skip         func(fullMethod string) bool
	requestID    func(context.Context) string
	traceID      func(context.Context) string
}

func evaluate(opts []Option) *options {
	o := &options{
		now:          time.Now,
		requestTypes: func(string) (protoreflect.MessageType, bool) { return nil, false },
		skip:         func(string) bool { return false },
		requestID:    func(context.Context) string { return "" },
		traceID:      func(context.Context) string { return "" },
	}
	for _, opt := range opts {
		opt.apply(o)
	}
	return o
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithFailClosed refuses calls while the sink is unhealthy and fails calls
// whose record could not be written, both with UNAVAILABLE. Default: keep
// serving, and the sink counts what it loses.
func WithFailClosed(on bool) Option {
	return optionFunc(func(o *options) { o.failClosed = on })
}

// WithCapture names, per route, the request field paths recorded
// ("customer.email").
func WithCapture(byRoute map[string][]string) Option {
	return optionFunc(func(o *options) { o.capture = byRoute })
}

// WithRedact masks the fields at these paths wherever they appear: a path
// matches a field whose path from the request is the same or ends with
// "." and the path ("password" masks every field named password).
func WithRedact(paths []string) Option {
	return optionFunc(func(o *options) { o.redact = paths })
}

// WithRequestTypes says which request type a method has, for the raw
// frames of proxied calls; methods without one are recorded without
// request fields.
func WithRequestTypes(fn func(fullMethod string) (protoreflect.MessageType, bool)) Option {
	return optionFunc(func(o *options) {
		if fn != nil {
			o.requestTypes = fn
		}
	})
}

// WithSkip leaves the calls of the methods for which fn is true out of the
// audit trail (health checks, reflection).
func WithSkip(fn func(fullMethod string) bool) Option {
	return optionFunc(func(o *options) {
		if fn != nil {
			o.skip = fn
		}
	})
}

// WithRequestID and WithTraceID read the call's request and trace ids.
func WithRequestID(fn func(context.Context) string) Option {
	return optionFunc(func(o *options) {
		if fn != nil {
			o.requestID = fn
		}
	})
}

// WithTraceID reads the call's trace id.
func WithTraceID(fn func(context.Context) string) Option {
	return optionFunc(func(o *options) {
		if fn != nil {
			o.traceID = fn
		}
	})
}

// WithNow sets the clock. Default time.Now.
func WithNow(now func() time.Time) Option {
	return optionFunc(func(o *options) {
		if now != nil {
			o.now = now
		}
	})
}
