package edge

import (
	"log/slog"
	"time"

	"github.com/gatehouse-dev/gatehouse/interceptors/auth"
	"github.com/gatehouse-dev/gatehouse/quota"
	"github.com/gatehouse-dev/gatehouse/upstream"
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
	telemetry      telemetryOptions  // telemetry.go
	upstream       []upstream.Option // resilience.go
	drainDelay     time.Duration     // shed.go
	quota          []quota.Option    // quota.go
	browser        browserOptions    // browser.go: CORS, gRPC-Web, streams, WebSocket
	auth           []auth.Option     // auth.go

	// Live configuration (reload.go, watch.go).
	configFile    string         // the config file; "" for none
	watchDebounce time.Duration  // quiet time before a changed file is read; < 0: no watch
	reloadHook    func(ok bool)  // called after each reload attempt
	levelVar      *slog.LevelVar // follows logging.level on reload; nil: not live
}

func defaultOptions() options {
	return options{
		logger:         discardLogger(),
		healthInterval: 500 * time.Millisecond,
		watchDebounce:  250 * time.Millisecond,
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

// WithConfigFile names the file the config was loaded from. The gateway
// then reloads it on ReloadFile and the admin API's ReloadConfig, and
// watches it (see WithConfigWatchDebounce). Default: none.
func WithConfigFile(path string) Option {
	return optionFunc(func(o *options) { o.configFile = path })
}

// WithConfigWatchDebounce sets how long the config file must stay unchanged
// after a change is seen before it is read, so that a burst of writes
// reloads once. A negative value turns watching off. Default 250ms.
func WithConfigWatchDebounce(d time.Duration) Option {
	return optionFunc(func(o *options) { o.watchDebounce = d })
}

// WithReloadHook sets a function called after each reload attempt with its
// outcome (for metrics). It is called without locks held, once per attempt,
// possibly from several goroutines in turn; it must not block.
func WithReloadHook(f func(ok bool)) Option {
	return optionFunc(func(o *options) { o.reloadHook = f })
}

// WithLogLevel makes logging.level live: the gateway sets v from the config
// at New and on every reload. v should be the level of the logger given with
// WithLogger. Default: nil, and logging.level needs a restart.
func WithLogLevel(v *slog.LevelVar) Option {
	return optionFunc(func(o *options) { o.levelVar = v })
}
