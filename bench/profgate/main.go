// Command profgate is cmd/gatehouse's "serve" with a CPU profile: the same
// config loading, loggers and edge assembly, plus -cpuprofile, written when
// the process gets SIGTERM or SIGINT. The benchmark runs it in place of the
// gateway only when asked to profile (go run ./bench -gatehouse-cpuprofile
// FILE); measured runs use the real binary.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	"github.com/gatehouse-dev/gatehouse/interceptors/accesslog"
	"github.com/gatehouse-dev/gatehouse/telemetry"
)

func main() {
	path := flag.String("c", "gatehouse.yaml", "config file")
	prof := flag.String("cpuprofile", "", "write a CPU profile to `file`")
	flag.Parse()
	if err := run(*path, *prof); err != nil {
		fmt.Fprintln(os.Stderr, "profgate:", err)
		os.Exit(1)
	}
}

func run(path, prof string) error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200) // as cmd/gatehouse serve
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	// As cmd/gatehouse with the access log on (the shipped default, and
	// what the benchmark's config keeps): process log on stderr, access log
	// on stdout.
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	out := telemetry.NewLogBuffer(os.Stdout, telemetry.AccessLogFlush)
	defer out.Close()
	access := slog.New(accesslog.NewJSONHandler(out))
	g, err := edge.New(cfg, edge.WithLogger(log), edge.WithAccessLogger(access), edge.WithREST(demo.REST()...))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if prof != "" {
		f, err := os.Create(prof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
		// Beside the CPU profile, the allocations (FILE.allocs, sampled
		// as the runtime does by default): where the garbage comes from.
		defer func() {
			if a, err := os.Create(prof + ".allocs"); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(a, 0)
				_ = a.Close()
			}
		}()
	}
	if err := g.Start(ctx); err != nil {
		return err
	}
	werr := g.Wait(ctx)
	sctx, cancel := context.WithTimeout(context.Background(), g.ShutdownGrace())
	defer cancel()
	_ = g.Shutdown(sctx)
	if werr != nil && ctx.Err() == nil {
		return werr
	}
	return nil
}
