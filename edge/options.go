package edge

import (
	"log/slog"
	"time"
)

// Option configures a Gateway.
type Option interface {
	apply(*options)
}

type options struct {
	logger         *slog.Logger // process log
	accessLogger   *slog.Logger // one line per call; nil turns it off
	rest           []RESTRegistrar
	healthInterval time.Duration
}

func defaultOptions() options {
	return options{
		logger:         discardLogger(),
		healthInterval: 500 * time.Millisecond,
	}
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithLogger sets the process logger (panics, listener events). Default:
// discard.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}

// WithAccessLogger sets the access logger, which writes one line per call.
// Default: no access log.
func WithAccessLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.accessLogger = l })
}

// WithREST adds grpc-gateway handlers for compiled-in services to every
// shared listener's REST mux.
func WithREST(regs ...RESTRegistrar) Option {
	return optionFunc(func(o *options) { o.rest = append(o.rest, regs...) })
}

// WithHealthInterval sets how often backend reachability is folded into the
// gateway's health status. Default 500ms.
func WithHealthInterval(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.healthInterval = d
		}
	})
}
