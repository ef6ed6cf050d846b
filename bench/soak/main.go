// Command soak holds a fixed rate of mixed calls against the demo assembly
// (the gateway in front of the example greeter and library backends, all
// in this process, on 127.0.0.1) for a chosen duration, and reports every
// interval the process's RSS, goroutines, open file descriptors and the
// p99 latency of the interval's calls. At the end it checks that they
// stayed flat and exits 1 if not (or if any call failed).
//
//	go run ./bench/soak -duration 10m            # the documented soak
//	go run ./bench/soak -duration 60s -every 10s # what .ci/run runs
//
// The mix, per tick: a gRPC unary call (SayHello), a server stream of three
// messages (StreamHellos), a REST POST (/v1/greeter:sayHello) and a REST GET
// (/v1/books). -rate is
// the total calls per second.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// sample is one report line.
type sample struct {
	at         time.Duration
	rssKiB     int64
	goroutines int
	fds        int
	calls      int
	errors     int
	p99        time.Duration
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	duration := fs.Duration("duration", 10*time.Minute, "how long to hold the load")
	every := fs.Duration("every", 10*time.Second, "report interval")
	rate := fs.Int("rate", 200, "calls per second, all kinds together")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate < 4 || *duration < 2**every {
		return errors.New("want -rate >= 4 and -duration at least two -every intervals")
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := demo.Start(ctx, demo.Addresses{Edge: "127.0.0.1:0", Admin: "127.0.0.1:0"}, edge.WithLogger(quiet), edge.WithAccessLogger(quiet))
	if err != nil {
		return err
	}
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), 30*time.Second)
		defer c()
		_ = d.Shutdown(sctx)
	}()
	addr := d.Gateway.Addr("edge").String()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	gc := greeterv1.NewGreeterServiceClient(cc)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer hc.CloseIdleConnections()
	base := "http://" + addr

	kinds := []func(context.Context) error{
		func(ctx context.Context) error {
			_, err := gc.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "soak"})
			return err
		},
		func(ctx context.Context) error {
			st, err := gc.StreamHellos(ctx, &greeterv1.StreamHellosRequest{Name: "soak", Count: 3})
			if err != nil {
				return err
			}
			for {
				if _, err := st.Recv(); err == io.EOF {
					return nil
				} else if err != nil {
					return err
				}
			}
		},
		func(ctx context.Context) error {
			// A POST that keeps no state: creating books would grow the
			// example library (in this process) and hide the gateway's own
			// memory behind the backend's.
			return rest(ctx, hc, "POST", base+"/v1/greeter:sayHello", `{"name":"soak"}`)
		},
		func(ctx context.Context) error { return rest(ctx, hc, "GET", base+"/v1/books?page_size=5", "") },
	}

	var (
		mu        sync.Mutex
		latencies []time.Duration
		failures  int
		lastErr   error
		wg        sync.WaitGroup
	)
	sem := make(chan struct{}, 256) // bounds calls in flight if the gateway stalls
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	defer tick.Stop()
	report := time.NewTicker(*every)
	defer report.Stop()
	start := time.Now()
	end := time.After(*duration)
	var samples []sample
	fmt.Fprintf(out, "soak: %d calls/s of gRPC unary, gRPC server streams, REST POST and GET for %v, against %s\n", *rate, *duration, addr)
	fmt.Fprintf(out, "%8s %10s %10s %6s %8s %7s %10s\n", "at", "rss_kib", "goroutines", "fds", "calls", "errors", "p99")
	n := 0
loop:
	for {
		select {
		case <-end:
			break loop
		case <-report.C:
			mu.Lock()
			s := sample{at: time.Since(start).Round(time.Second), calls: len(latencies), errors: failures, p99: p99(latencies)}
			latencies, failures = latencies[:0], 0
			e := lastErr
			mu.Unlock()
			s.rssKiB, s.goroutines, s.fds = rssKiB(), runtime.NumGoroutine(), openFDs()
			samples = append(samples, s)
			fmt.Fprintf(out, "%8v %10d %10d %6d %8d %7d %10v\n", s.at, s.rssKiB, s.goroutines, s.fds, s.calls, s.errors, s.p99.Round(10*time.Microsecond))
			if s.errors > 0 {
				fmt.Fprintf(out, "         last error: %v\n", e)
			}
		case <-tick.C:
			select {
			case sem <- struct{}{}:
			default:
				mu.Lock()
				failures++
				lastErr = errors.New("256 calls in flight: the gateway is not keeping up")
				mu.Unlock()
				continue
			}
			call := kinds[n%len(kinds)]
			n++
			wg.Go(func() {
				defer func() { <-sem }()
				cctx, c := context.WithTimeout(ctx, 10*time.Second)
				defer c()
				t0 := time.Now()
				err := call(cctx)
				mu.Lock()
				latencies = append(latencies, time.Since(t0))
				if err != nil {
					failures++
					lastErr = err
				}
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return verdict(out, samples)
}

// verdict compares the last sample with the first (the first interval
// includes warm-up): RSS within 1.5x + 16 MiB, goroutines and descriptors
// within +25% + 20, no call failed.
func verdict(out io.Writer, s []sample) error {
	var problems []string
	first, last := s[0], s[len(s)-1]
	if last.rssKiB > first.rssKiB*3/2+16<<10 {
		problems = append(problems, fmt.Sprintf("RSS grew from %d to %d KiB", first.rssKiB, last.rssKiB))
	}
	if last.goroutines > first.goroutines*5/4+20 {
		problems = append(problems, fmt.Sprintf("goroutines grew from %d to %d", first.goroutines, last.goroutines))
	}
	if last.fds > first.fds*5/4+20 {
		problems = append(problems, fmt.Sprintf("open descriptors grew from %d to %d", first.fds, last.fds))
	}
	for _, x := range s {
		if x.errors > 0 {
			problems = append(problems, fmt.Sprintf("%d calls failed in the interval ending at %v", x.errors, x.at))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	fmt.Fprintln(out, "soak: flat (RSS, goroutines and descriptors within bounds), no failed call")
	return nil
}

func rest(ctx context.Context, hc *http.Client, method, url, body string) error {
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return nil
}

func p99(l []time.Duration) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[(len(s)*99)/100]
}

// rssKiB is this process's resident set (Linux; 0 elsewhere).
func rssKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// openFDs counts this process's open file descriptors (Linux; 0 elsewhere).
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}
