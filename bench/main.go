// Command bench measures Gatehouse against a direct connection and against
// nginx, on one machine, with the same load. See bench/README.md.
//
//	go run ./bench -rounds 2 -duration 5s -out bench/results
//
// It builds and starts, as separate processes, a backend (bench/backend),
// the gateway (cmd/gatehouse, with one native gRPC and one shared listener)
// and nginx (grpc_pass), drives every target with every load in turn, round
// after round, and writes results.md and results.json to -out. Every
// address is on 127.0.0.1.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Target names.
const (
	targetDirect          = "direct"
	targetGatehouseGRPC   = "gatehouse-grpc"
	targetGatehouseShared = "gatehouse-shared"
	targetNginx           = "nginx"
	// targetGatehouseSharedHTTP is a shared listener with grpc_connections:
	// http, where gRPC goes through grpc.Server.ServeHTTP under net/http
	// (as for a front proxy that mixes REST and gRPC on one connection).
	// Not run unless asked for (-targets).
	targetGatehouseSharedHTTP = "gatehouse-shared-http"
	// targetGRPCFloor is bench/grpcproxy, the smallest transparent proxy
	// on grpc-go (no Gatehouse code but its raw codec): a reference for
	// what grpc-go itself costs on two HTTP/2 hops. Not run unless asked
	// for (-targets).
	targetGRPCFloor = "grpc-floor"
)

// allTargets run by default.
var allTargets = []string{targetDirect, targetGatehouseGRPC, targetGatehouseShared, targetNginx}

// knownTargets are allTargets and those run only when asked for.
var knownTargets = append(slices.Clone(allTargets), targetGatehouseSharedHTTP, targetGRPCFloor)

// flags are the command line.
type flags struct {
	rounds     int
	duration   time.Duration
	warmup     time.Duration
	out        string
	targets    []string
	loads      []load
	nginx      string
	keep       bool
	cpuprofile string
	// gatehouseProfile runs bench/profgate (cmd/gatehouse's serve plus a
	// CPU profile) in place of the gateway binary.
	gatehouseProfile string
	// gatehouseEnv are extra KEY=VALUE environment entries for the
	// gateway process (e.g. GOMAXPROCS=1).
	gatehouseEnv []string
	// render rewrites results.md in this directory from its results.json
	// (ratios recomputed) and runs nothing.
	render string
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &flags{}
	fs.IntVar(&f.rounds, "rounds", 2, "rounds: every target runs every load once per round, targets alternating")
	fs.DurationVar(&f.duration, "duration", 5*time.Second, "measured time per target and load")
	fs.DurationVar(&f.warmup, "warmup", time.Second, "unmeasured warm-up per target and load, on the same connections")
	fs.StringVar(&f.out, "out", "bench/results", "directory for results.md and results.json")
	fs.StringVar(&f.render, "render", "", "rewrite `DIR`/results.md from DIR/results.json (ratios recomputed) without running anything")
	targets := fs.String("targets", strings.Join(allTargets, ","), "comma-separated targets")
	var names []string
	for _, l := range allLoads {
		names = append(names, l.Name)
	}
	loads := fs.String("loads", strings.Join(names, ","), "comma-separated loads")
	fs.StringVar(&f.nginx, "nginx", "", "nginx binary (default: nginx on PATH, or /usr/sbin/nginx)")
	fs.BoolVar(&f.keep, "keep", false, "keep the temporary directory (configs, logs, binaries)")
	fs.StringVar(&f.cpuprofile, "cpuprofile", "", "write a CPU profile of the load generator (this process) to `file`")
	fs.StringVar(&f.gatehouseProfile, "gatehouse-cpuprofile", "", "run the gateway as bench/profgate and write its CPU profile to `file` (for pprof, not for measuring)")
	genv := fs.String("gatehouse-env", "", "comma-separated `KEY=VALUE` entries added to the environment of the gateway (and of grpc-floor), e.g. GOMAXPROCS=1")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if f.rounds < 1 {
		return nil, errors.New("-rounds must be at least 1")
	}
	if f.duration <= 0 || f.warmup < 0 {
		return nil, errors.New("-duration must be positive and -warmup not negative")
	}
	for _, kv := range strings.Split(*genv, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if !strings.Contains(kv, "=") {
			return nil, fmt.Errorf("-gatehouse-env: %q is not KEY=VALUE", kv)
		}
		f.gatehouseEnv = append(f.gatehouseEnv, kv)
	}
	for _, t := range strings.Split(*targets, ",") {
		t = strings.TrimSpace(t)
		if !slices.Contains(knownTargets, t) {
			return nil, fmt.Errorf("unknown target %q (known: %s)", t, strings.Join(knownTargets, ", "))
		}
		f.targets = append(f.targets, t)
	}
	for _, n := range strings.Split(*loads, ",") {
		n = strings.TrimSpace(n)
		i := slices.IndexFunc(allLoads, func(l load) bool { return l.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("unknown load %q (known: %s)", n, strings.Join(names, ", "))
		}
		f.loads = append(f.loads, allLoads[i])
	}
	return f, nil
}

func main() {
	f, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if f.render != "" {
		if err := render(f.render); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(f); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// render rewrites dir/results.md (and the ratios in dir/results.json) from
// the samples in dir/results.json.
func render(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "results.json"), err)
	}
	rep.Ratios = ratios(rep.Samples, rep.Rounds)
	js, err := json.MarshalIndent(&rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(rep.markdown()), 0o644)
}

// env is everything the harness started.
type env struct {
	dir       string
	clkTck    int64
	backend   *proc
	gatehouse *proc
	nginx     *proc
	floor     *proc // bench/grpcproxy, when grpc-floor runs
	// addresses
	test, greeter                  string // backend
	ghGRPC, ghShared, ghSharedHTTP string // gatehouse listeners
	nginxAddr                      string
	floorAddr                      string
	nginxVersion                   string
	gatehouseVersion               string
}

func (e *env) stop() {
	e.floor.stop()
	e.nginx.stop()
	e.gatehouse.stop()
	e.backend.stop()
}

func run(f *flags) error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	e, err := setup(f)
	if e != nil {
		defer func() {
			e.stop()
			if f.keep {
				fmt.Fprintf(os.Stderr, "bench: kept %s\n", e.dir)
			} else {
				_ = os.RemoveAll(e.dir)
			}
		}()
	}
	if err != nil {
		return err
	}

	if f.cpuprofile != "" {
		pf, err := os.Create(f.cpuprofile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	var samples []sample
	total := 0
	for _, l := range f.loads {
		total += len(targetsFor(l, f.targets))
	}
	total *= f.rounds
	n := 0
	began := time.Now()
	for round := 1; round <= f.rounds; round++ {
		for _, l := range f.loads {
			for _, t := range targetsFor(l, f.targets) {
				if err := ctx.Err(); err != nil {
					return err
				}
				n++
				s, err := e.measure(round, t, l, f.warmup, f.duration)
				if err != nil {
					return fmt.Errorf("round %d, %s, %s: %w", round, l.Name, t, err)
				}
				fmt.Fprintf(os.Stderr, "[%3d/%d %5.0fs] round %d %-18s %-16s %9.0f calls/s p50 %8.1fµs errors %d target CPU %6.1fµs/call\n",
					n, total, time.Since(began).Seconds(), round, l.Name, t, s.CallsPerSec, s.P50us, s.Errors, s.TargetCPUus)
				samples = append(samples, s)
			}
		}
	}

	rep := buildReport(f, e, samples)
	md := rep.markdown()
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(f.out, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(f.out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Print(md)
	return nil
}

// targetsFor returns the targets a load runs on: REST/JSON exists only on
// the gateway's shared listener, compared with the same call over gRPC
// straight to the backend; nginx and grpc-floor cannot transcode, so they
// are skipped.
func targetsFor(l load, targets []string) []string {
	if l.Kind != kindREST {
		return targets
	}
	var out []string
	for _, t := range targets {
		if t == targetDirect || t == targetGatehouseShared || t == targetGatehouseSharedHTTP {
			out = append(out, t)
		}
	}
	return out
}

// moduleRoot returns the directory of the main module (the repo).
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run bench from inside the gatehouse module")
	}
	return filepath.Dir(gomod), nil
}

func goBuild(root, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	cmd.Stdout = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

func findNginx(flagPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("nginx is not installed: install it (apt-get install -y nginx), pass -nginx PATH, or leave nginx out of -targets")
}

// setup builds the binaries, writes the configs and starts the processes.
// The returned env is non-nil whenever something needs stopping.
func setup(f *flags) (*env, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	useNginx := slices.Contains(f.targets, targetNginx)
	var nginxBin string
	if useNginx {
		if nginxBin, err = findNginx(f.nginx); err != nil {
			return nil, err
		}
	}
	clk, err := clockTicks()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "gatehouse-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir, clkTck: clk}

	fmt.Fprintf(os.Stderr, "bench: building into %s\n", dir)
	if err := goBuild(root, filepath.Join(dir, "backend"), "./bench/backend"); err != nil {
		return e, err
	}
	gatehousePkg := "./cmd/gatehouse"
	if f.gatehouseProfile != "" {
		gatehousePkg = "./bench/profgate"
	}
	if err := goBuild(root, filepath.Join(dir, "gatehouse"), gatehousePkg); err != nil {
		return e, err
	}
	if out, err := exec.Command(filepath.Join(dir, "gatehouse"), "version").Output(); err == nil {
		e.gatehouseVersion = strings.TrimSpace(string(out))
	}

	// Backend: prints its addresses once bound.
	var line string
	if e.backend, line, err = startReporting("backend", exec.Command(filepath.Join(dir, "backend")), filepath.Join(dir, "backend.log")); err != nil {
		return e, err
	}
	var addrs struct{ Test, Greeter string }
	if err := json.Unmarshal([]byte(line), &addrs); err != nil {
		return e, fmt.Errorf("backend said %q: %w", line, err)
	}
	e.test, e.greeter = addrs.Test, addrs.Greeter

	if slices.Contains(f.targets, targetGRPCFloor) {
		if err := e.startFloor(root, f.gatehouseEnv); err != nil {
			return e, err
		}
	}

	// Gatehouse: access log (stdout) on, as shipped, into /dev/null.
	if e.ghGRPC, err = freePort(); err != nil {
		return e, err
	}
	if e.ghShared, err = freePort(); err != nil {
		return e, err
	}
	if e.ghSharedHTTP, err = freePort(); err != nil {
		return e, err
	}
	yml, err := renderGatehouse(gatehouseConfig{GRPC: e.ghGRPC, Shared: e.ghShared, SharedHTTP: e.ghSharedHTTP, Test: e.test, Greeter: e.greeter})
	if err != nil {
		return e, err
	}
	ghConf := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(ghConf, yml, 0o644); err != nil {
		return e, err
	}
	gcmd := exec.Command(filepath.Join(dir, "gatehouse"), "serve", "-c", ghConf)
	if f.gatehouseProfile != "" {
		prof, err := filepath.Abs(f.gatehouseProfile)
		if err != nil {
			return e, err
		}
		gcmd = exec.Command(filepath.Join(dir, "gatehouse"), "-c", ghConf, "-cpuprofile", prof)
		e.gatehouseVersion = "bench/profgate (profiling, not a measurement)"
	}
	gcmd.Env = append(os.Environ(), f.gatehouseEnv...)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return e, err
	}
	gcmd.Stdout = devnull
	glog, err := os.Create(filepath.Join(dir, "gatehouse.log"))
	if err != nil {
		return e, err
	}
	gcmd.Stderr = glog
	if e.gatehouse, err = startProc("gatehouse", gcmd, false); err != nil {
		return e, err
	}
	for _, a := range []string{e.ghGRPC, e.ghShared, e.ghSharedHTTP} {
		if err := waitDial(e.gatehouse, a, 10*time.Second); err != nil {
			return e, fmt.Errorf("%w; end of its log:\n%s", err, tail(filepath.Join(dir, "gatehouse.log"), 2048))
		}
	}

	if useNginx {
		vout, err := exec.Command(nginxBin, "-v").CombinedOutput()
		if err != nil {
			return e, fmt.Errorf("%s -v: %w: %s", nginxBin, err, vout)
		}
		e.nginxVersion = strings.TrimSpace(string(vout))
		h2on, err := nginxHasHTTP2On(e.nginxVersion)
		if err != nil {
			return e, err
		}
		ndir := filepath.Join(dir, "nginx")
		if err := os.MkdirAll(filepath.Join(ndir, "tmp"), 0o755); err != nil {
			return e, err
		}
		if e.nginxAddr, err = freePort(); err != nil {
			return e, err
		}
		conf, err := renderNginx(nginxConfig{Dir: ndir, Listen: e.nginxAddr, Upstream: e.test, HTTP2On: h2on})
		if err != nil {
			return e, err
		}
		nconf := filepath.Join(ndir, "nginx.conf")
		if err := os.WriteFile(nconf, conf, 0o644); err != nil {
			return e, err
		}
		ncmd := exec.Command(nginxBin, "-p", ndir, "-c", nconf, "-e", filepath.Join(ndir, "error.log"), "-g", "daemon off;")
		nlog, err := os.Create(filepath.Join(ndir, "stderr.log"))
		if err != nil {
			return e, err
		}
		ncmd.Stdout, ncmd.Stderr = nlog, nlog
		if e.nginx, err = startProc("nginx", ncmd, true); err != nil {
			return e, err
		}
		if err := waitDial(e.nginx, e.nginxAddr, 10*time.Second); err != nil {
			return e, fmt.Errorf("%w; end of its logs:\n%s\n%s", err, tail(filepath.Join(ndir, "stderr.log"), 1024), tail(filepath.Join(ndir, "error.log"), 1024))
		}
	}
	return e, nil
}

// measure runs one load on one target: warm-up, then a measured phase
// bracketed by CPU and peak-RSS readings of the proxy and the backend.
func (e *env) measure(round int, target string, l load, warmup, dur time.Duration) (sample, error) {
	var proxy *proc
	addr := e.test
	rest := false
	switch target {
	case targetDirect:
		if l.Kind == kindREST {
			addr = e.greeter
		}
	case targetGatehouseGRPC:
		proxy, addr = e.gatehouse, e.ghGRPC
	case targetGatehouseShared:
		proxy, addr = e.gatehouse, e.ghShared
		rest = l.Kind == kindREST
	case targetGatehouseSharedHTTP:
		proxy, addr = e.gatehouse, e.ghSharedHTTP
		rest = l.Kind == kindREST
	case targetNginx:
		proxy, addr = e.nginx, e.nginxAddr
	case targetGRPCFloor:
		proxy, addr = e.floor, e.floorAddr
	}
	for _, p := range []*proc{e.backend, proxy} {
		if p != nil {
			if err := p.alive(); err != nil {
				return sample{}, err
			}
		}
	}
	d, err := newDriver(l, addr, rest)
	if err != nil {
		return sample{}, err
	}
	defer d.close()
	if warmup > 0 {
		if w := d.run(warmup, false); w.calls == 0 {
			return sample{}, fmt.Errorf("no call succeeded during warm-up: %s", w.firstErr)
		}
	}

	procs := []*proc{e.backend}
	if proxy != nil {
		procs = append(procs, proxy)
	}
	selfBefore, err1 := readCPUTicks(os.Getpid())
	busyBefore, err2 := machineBusyTicks()
	if err := errors.Join(err1, err2); err != nil {
		return sample{}, err
	}
	before := make([]int64, len(procs))
	for i, p := range procs {
		p.resetPeakRSS()
		if before[i], err = p.cpuTicks(); err != nil {
			return sample{}, err
		}
	}
	ph := d.run(dur, true)
	selfAfter, err1 := readCPUTicks(os.Getpid())
	busyAfter, err2 := machineBusyTicks()
	if err := errors.Join(err1, err2); err != nil {
		return sample{}, err
	}
	after := make([]int64, len(procs))
	rss := make([]int64, len(procs))
	for i, p := range procs {
		if after[i], err = p.cpuTicks(); err != nil {
			return sample{}, err
		}
		if rss[i], err = p.peakRSSKiB(); err != nil {
			return sample{}, err
		}
	}

	s := sample{
		Round: round, Target: target, Load: l.Name,
		Calls: ph.calls, Errors: ph.errs, FirstError: ph.firstErr,
		Seconds:     ph.elapsed.Seconds(),
		CallsPerSec: float64(ph.calls) / ph.elapsed.Seconds(),
		P50us:       percentile(ph.lat, 0.50),
		P90us:       percentile(ph.lat, 0.90),
		P99us:       percentile(ph.lat, 0.99),
	}
	perCall := func(ticks int64) float64 {
		if ph.calls == 0 {
			return 0
		}
		return float64(ticks) / float64(e.clkTck) * 1e6 / float64(ph.calls)
	}
	s.BackendCPUTicks = after[0] - before[0]
	s.BackendCPUus = perCall(s.BackendCPUTicks)
	s.BackendPeakRSSKiB = rss[0]
	if proxy != nil {
		s.ProxyCPUTicks = after[1] - before[1]
		s.ProxyCPUus = perCall(s.ProxyCPUTicks)
		s.ProxyPeakRSSKiB = rss[1]
		s.TargetCPUus, s.TargetPeakRSSKiB = s.ProxyCPUus, s.ProxyPeakRSSKiB
	} else {
		s.TargetCPUus, s.TargetPeakRSSKiB = s.BackendCPUus, s.BackendPeakRSSKiB
	}
	s.TotalCPUus = s.ProxyCPUus + s.BackendCPUus
	s.LoadgenCPUus = perCall(selfAfter - selfBefore)
	// What the rest of the machine burnt meanwhile, in CPUs: noise.
	other := (busyAfter - busyBefore) - (selfAfter - selfBefore) - s.ProxyCPUTicks - s.BackendCPUTicks
	s.OtherCPUs = max(0, float64(other)/float64(e.clkTck)/ph.elapsed.Seconds())
	return s, nil
}

// tail returns the last n bytes of a file, for error messages: the temp dir
// is gone by the time the user reads them.
func tail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}

// startFloor builds and starts bench/grpcproxy in front of the backend's
// TestService, with env (-gatehouse-env: the gateway's runtime settings)
// added to its environment.
func (e *env) startFloor(root string, env []string) error {
	bin := filepath.Join(e.dir, "grpcproxy")
	if err := goBuild(root, bin, "./bench/grpcproxy"); err != nil {
		return err
	}
	cmd := exec.Command(bin, "-backend", e.test)
	cmd.Env = append(os.Environ(), env...)
	var err error
	var line string
	if e.floor, line, err = startReporting("grpcproxy", cmd, filepath.Join(e.dir, "grpcproxy.log")); err != nil {
		return err
	}
	e.floorAddr = strings.TrimSpace(line)
	return waitDial(e.floor, e.floorAddr, 10*time.Second)
}

// startReporting starts cmd, a process that prints one line on standard
// output once it is ready (its addresses), with its standard error in
// logPath, and returns that line; the rest of its output is discarded.
func startReporting(name string, cmd *exec.Cmd, logPath string) (*proc, string, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	log, err := os.Create(logPath)
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = log
	p, err := startProc(name, cmd, false)
	if err != nil {
		return nil, "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return p, "", fmt.Errorf("%s did not report its address: %w", name, err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return p, line, nil
}
