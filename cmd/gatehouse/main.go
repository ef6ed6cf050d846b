// Command gatehouse is the Gatehouse gRPC edge gateway.
//
//	gatehouse serve -c gatehouse.yaml      run the gateway
//	gatehouse validate -c gatehouse.yaml   check a config, list every error
//	gatehouse demo                         the gateway in front of example backends
//	gatehouse version                      print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/interceptors/accesslog"
	"github.com/gatehouse-dev/gatehouse/telemetry"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: gatehouse <command> [flags]

commands:
  serve -c FILE      run the gateway with the config in FILE
  validate -c FILE   check FILE and list every error (exit status 1 if any)
  demo               run the gateway in front of example backends, with
                     ready-to-paste grpcurl and curl commands
  audit verify FILE  check an audit file's hash chain; name the first
                     altered, removed or reordered record (exit status 1)
  init --backend NAME=HOST:PORT
                     write a starter config from backends' server reflection
  completion bash|zsh
                     print a shell completion script
  schema             print the config file's JSON Schema (for editors)
  version            print the version, VCS revision and Go version
  help [COMMAND]     explain a command, with examples (or: COMMAND --help)
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if wantsHelp(args[1:]) && commandHelp(stdout, args[0]) { // cli.go
		return 0
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "validate":
		return validate(args[1:], stdout, stderr)
	case "demo":
		return runDemo(args[1:], stdout, stderr)
	case "audit":
		return auditCommand(args[1:], stdout, stderr) // audit.go
	case "init":
		return runInit(args[1:], stdout, stderr) // init.go
	case "completion":
		return completion(args[1:], stdout, stderr) // cli.go
	case "schema":
		return printSchema(args[1:], stdout, stderr) // cli.go
	case "version", "--version", "-version":
		printVersion(stdout) // cli.go
		return 0
	case "help", "-h", "--help":
		return helpCommand(args[1:], stdout, stderr) // cli.go
	default:
		fmt.Fprintf(stderr, "gatehouse: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		return v
	}
	return "(devel)"
}

func configFlag(name string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "gatehouse.yaml", "config file (YAML or JSON)")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	return *path, true
}

func validate(args []string, stdout, stderr io.Writer) int {
	path, ok := configFlag("validate", args, stderr)
	if !ok {
		return 2
	}
	if _, err := config.Load(path); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return 0
}

// loggers returns the process logger (JSON on stderr) and the access logger
// (JSON on stdout, nil when turned off).
func loggers(cfg *configv1.Config, stdout, stderr io.Writer) (*slog.Logger, *slog.Logger) {
	return loggersAt(new(slog.LevelVar), cfg, stdout, stderr)
}

// loggersAt is loggers with the process log's level in level, which the
// gateway keeps following logging.level on reload (edge.WithLogLevel).
func loggersAt(level *slog.LevelVar, cfg *configv1.Config, stdout, stderr io.Writer) (*slog.Logger, *slog.Logger) {
	_ = level.UnmarshalText([]byte(cfg.GetLogging().GetLevel()))
	proc := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	if cfg.GetTelemetry().GetAccessLog().GetDisabled() {
		return proc, nil
	}
	return proc, slog.New(accesslog.NewJSONHandler(stdout)) // slog's JSON lines, formatted faster
}

// gcPercent is the gateway's GOGC unless the environment sets one: a proxy
// allocates per call and keeps little, so trading some heap for fewer
// collections is cheap (the live heap is tens of MiB).
const gcPercent = 200

func serve(args []string, stdout, stderr io.Writer) int {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	path, ok := configFlag("serve", args, stderr)
	if !ok {
		return 2
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	level := new(slog.LevelVar)
	// Access log lines are batched off the call path (one write every
	// telemetry.AccessLogFlush); shutdown drains the calls in flight, then the
	// deferred close writes their lines.
	out := telemetry.NewLogBuffer(stdout, telemetry.AccessLogFlush)
	defer out.Close()
	log, access := loggersAt(level, cfg, out, stderr)
	access, closeAccess, err := accessLogFile(cfg, access) // audit.go: a file with rotation
	if err != nil {
		log.Error("cannot open the access log", "error", err)
		return 1
	}
	defer closeAccess()
	g, err := edge.New(cfg, edge.WithLogger(log), edge.WithAccessLogger(access), edge.WithREST(demo.REST()...),
		edge.WithConfigFile(path), edge.WithLogLevel(level), edge.WithVersion(buildVersion()))
	if err != nil {
		log.Error("cannot build the gateway", "error", err)
		return 1
	}
	defer reloadOnSIGHUP(g, log)()
	start := func(ctx context.Context) error {
		if err := g.Start(ctx); err != nil {
			return err
		}
		announce(summarize(cfg, g.Addr), stderr, log) // summary.go
		return nil
	}
	return runUntilSignal(g, log, start, func(ctx context.Context) error { return g.Shutdown(ctx) })
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "edge listener address (gRPC and REST)")
	admin := fs.String("admin", "127.0.0.1:9901", "admin listener address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	access := slog.New(slog.NewJSONHandler(stdout, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d, err := demo.Start(ctx, demo.Addresses{Edge: *listen, Admin: *admin}, edge.WithLogger(log), edge.WithAccessLogger(access))
	if err != nil {
		log.Error("cannot start the demo", "error", err)
		return 1
	}
	fmt.Fprintf(stderr, "Gatehouse demo is running. Try (access log lines follow on stdout):\n\n")
	for _, c := range d.Commands() {
		fmt.Fprintln(stderr, c)
	}
	fmt.Fprintf(stderr, "\nCtrl-C stops it.\n")
	err = d.Gateway.Wait(ctx)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), d.Gateway.ShutdownGrace())
	defer cancel()
	if serr := d.Shutdown(shutdownCtx); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		log.Error("demo stopped", "error", err)
		return 1
	}
	return 0
}

// runUntilSignal starts the gateway and runs it until SIGTERM or SIGINT,
// then drains in-flight calls for the configured grace period.
func runUntilSignal(g *edge.Gateway, log *slog.Logger, start, shutdown func(context.Context) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := start(ctx); err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	err := g.Wait(ctx)
	// From here a second SIGTERM or Ctrl-C takes the default action, so an
	// operator can cut a long drain short.
	stop()
	grace := g.ShutdownGrace()
	log.Info("draining", "grace", grace.String())
	began := time.Now()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if serr := shutdown(shutdownCtx); serr != nil && !errors.Is(serr, context.DeadlineExceeded) && err == nil {
		err = serr
	}
	log.Info("stopped", "drained_in", time.Since(began).String())
	if err != nil {
		log.Error("gateway failed", "error", err)
		return 1
	}
	return 0
}

// reloadOnSIGHUP reloads the gateway's config file on each SIGHUP until the
// returned stop function is called. The gateway logs the outcome (and every
// error of a config it refuses).
func reloadOnSIGHUP(g *edge.Gateway, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			select {
			case <-done:
				return
			case <-hup:
				log.Info("SIGHUP: reloading the config file")
				_ = g.ReloadFile(context.Background())
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-ended
	}
}
