package accesslog

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// An Option configures the accesslog interceptors.
type Option interface {
	apply(*options)
}

type options struct {
	now       func() time.Time
	level     func(codes.Code) slog.Level
	requestID func(context.Context) string
}

func evaluate(opts []Option) *options {
	o := &options{
		now:       time.Now,
		level:     func(codes.Code) slog.Level { return slog.LevelInfo },
		requestID: requestIDFromMetadata,
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
