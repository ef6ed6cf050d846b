package accesslog

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// An Option configures the accesslog interceptors.
type Option interface {
	apply(*options)
}

type options struct {
	now        func() time.Time
	level      func(codes.Code) slog.Level
	requestID  func(context.Context) string
	traceID    func(context.Context) string
	httpStatus func(context.Context, codes.Code) int
	// sampleSuccesses is the fraction of OK calls logged; rand draws in
	// [0, 1).
	sampleSuccesses float64
	rand            func() float64
}

// sampled reports whether an OK call is logged.
func (o *options) sampled() bool {
	switch {
	case o.sampleSuccesses >= 1:
		return true
	case o.sampleSuccesses <= 0:
		return false
	}
	return o.rand() < o.sampleSuccesses
}

func evaluate(opts []Option) *options {
	o := &options{
		now:       time.Now,
		level:     func(codes.Code) slog.Level { return slog.LevelInfo },
		requestID: requestIDFromMetadata,

		sampleSuccesses: 1,
		rand:            rand.Float64,
	}
	for _, opt := range opts {
		opt.apply(o)
	}
	return o
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithNow sets the clock used to time calls. The default is time.Now. A nil
// now keeps the default.
func WithNow(now func() time.Time) Option {
	return optionFunc(func(o *options) {
		if now != nil {
			o.now = now
		}
	})
}

// WithLevel sets the level a call is logged at from its code. The default
// logs every call at slog.LevelInfo. A call whose level the logger does not
// enable costs no formatting. A nil level keeps the default.
func WithLevel(level func(codes.Code) slog.Level) Option {
	return optionFunc(func(o *options) {
		if level != nil {
			o.level = level
		}
	})
}

// WithRequestID sets how the request id is read from the call's context,
// such as requestid.FromContext. The default reads the first "x-request-id"
// value of the incoming metadata. A nil fn keeps the default.
func WithRequestID(fn func(context.Context) string) Option {
	return optionFunc(func(o *options) {
		if fn != nil {
			o.requestID = fn
		}
	})
}

func requestIDFromMetadata(ctx context.Context) string {
	return first(metadata.ValueFromIncomingContext(ctx, "x-request-id"))
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// WithTraceID sets how the call's trace id is read from its context, such
// as the OpenTelemetry span context's trace id; the line carries it as
// "trace_id" when fn returns one. Default: no trace id.
func WithTraceID(fn func(context.Context) string) Option {
	return optionFunc(func(o *options) { o.traceID = fn })
}

// WithHTTPStatus sets how the HTTP status of a call that arrived as REST is
// found; the line carries it as "http_status" when fn returns a non-zero
// status (fn returns 0 for native gRPC calls). Default: none.
func WithHTTPStatus(fn func(ctx context.Context, code codes.Code) int) Option {
	return optionFunc(func(o *options) { o.httpStatus = fn })
}

// WithSampleSuccesses logs only this fraction (0 to 1) of the calls that end
// OK, chosen at random; calls that fail are always logged. Default 1.
func WithSampleSuccesses(ratio float64) Option {
	return optionFunc(func(o *options) { o.sampleSuccesses = ratio })
}

// WithRand sets the source of the sampling draws, numbers in [0, 1).
// Default math/rand/v2.Float64. A nil fn keeps the default.
func WithRand(fn func() float64) Option {
	return optionFunc(func(o *options) {
		if fn != nil {
			o.rand = fn
		}
	})
}
