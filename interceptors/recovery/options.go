package recovery

import (
	"io"
	"log/slog"
)

// An Option configures the recovery interceptors.
type Option interface {
	apply(*options)
}

type options struct {
	logger *slog.Logger
}

func evaluate(opts []Option) *options {
	o := &options{
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, opt := range opts {
		opt.apply(o)
	}
	return o
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithLogger logs recovered panics to l at slog.LevelError. The default
// discards them. A nil l keeps the default.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}
