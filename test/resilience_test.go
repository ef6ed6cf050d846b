package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// faultServer is the interop TestService whose UnaryCall and
// FullDuplexCall do what the test says; it counts the calls it gets.
type faultServer struct {
	testgrpc.TestServiceServer
	unary  func(ctx context.Context, n int64) error // nil: answer at once
	bidi   func(stream testgrpc.TestService_FullDuplexCallServer) error
	unaryN atomic.Int64
	bidiN  atomic.Int64
}

func (s *faultServer) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	n := s.unaryN.Add(1)
	if s.unary != nil {
		if err := s.unary(ctx, n); err != nil {
			return nil, err
		}
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, req.GetResponseSize())}}, nil
}

func (s *faultServer) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	s.bidiN.Add(1)
	if s.bidi != nil {
		return s.bidi(stream)
	}
	return s.TestServiceServer.FullDuplexCall(stream)
}

// startFault serves fs on a free loopback port; stop stops it hard (the
// process "dies": connections close, calls in flight fail).
func startFault(t *testing.T, fs *faultServer) (addr string, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if fs.TestServiceServer == nil {
		fs.TestServiceServer = interop.NewTestServer()
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, fs)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	var once sync.Once
	stop = func() { once.Do(func() { s.Stop(); <-done }) }
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// resilienceConfig routes the TestService to one backend with the given
// extra backend and route YAML (indented for their blocks).
func resilienceConfig(endpoints []string, backendExtra, routeExtra string) string {
	q := make([]string, len(endpoints))
	for i, e := range endpoints {
		q[i] = fmt.Sprintf("%q", e)
	}
	return fmt.Sprintf(`
listeners:
  - name: edge
    address: "127.0.0.1:0"
    protocol: grpc
admin:
  address: "127.0.0.1:0"
backends:
  - name: testsvc
    endpoints: [%s]
%s
routes:
  - name: testsvc
    match: { service: "grpc.testing.TestService" }
    backend: testsvc
%s
`, strings.Join(q, ", "), backendExtra, routeExtra)
}

func unaryOK(ctx context.Context, tc testgrpc.TestServiceClient) error {
	_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10})
	return err
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestBackendKilledMidCall: pick_first sends every call to the first
// endpoint; it dies while a unary call and a bidi stream are in flight.
// The unary call is retried on the second endpoint and succeeds; the
// stream, which had received a message, fails UNAVAILABLE and is never
// replayed on the second endpoint.
func TestBackendKilledMidCall(t *testing.T) {
	arrived := make(chan string, 4)
	first := &faultServer{
		unary: func(ctx context.Context, n int64) error {
			if n > 5 { // the warm-up calls pass; the next is held until the kill
				arrived <- "unary"
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		},
		bidi: func(stream testgrpc.TestService_FullDuplexCallServer) error {
			if _, err := stream.Recv(); err != nil {
				return err
			}
			if err := stream.Send(&testpb.StreamingOutputCallResponse{}); err != nil {
				return err
			}
			arrived <- "bidi"
			<-stream.Context().Done()
			return stream.Context().Err()
		},
	}
	second := &faultServer{}
	a, kill := startFault(t, first)
	b, _ := startFault(t, second)
	g := startGateway(t, resilienceConfig([]string{a, b},
		"    load_balancing: PICK_FIRST",
		`    retry: { attempts: 3, on: ["UNAVAILABLE"], backoff: { base: "5ms", max: "20ms" } }`))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx := ctxT(t, 10*time.Second)
	for range 5 { // earn retry budget: 20% of 5 calls is one retry
		if err := unaryOK(ctx, tc); err != nil {
			t.Fatal(err)
		}
	}

	unaryDone := make(chan error, 1)
	go func() { unaryDone <- unaryOK(ctx, tc) }()
	stream, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case <-arrived:
		case <-ctx.Done():
			t.Fatal("calls never reached the first endpoint")
		}
	}
	kill()

	if err := <-unaryDone; err != nil {
		t.Errorf("unary call across the kill: %v, want success (retried)", err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream across the kill: %v, want UNAVAILABLE", err)
	}
	if n := second.unaryN.Load(); n != 1 {
		t.Errorf("second endpoint got %d unary calls, want 1 (the retry)", n)
	}
	if n := second.bidiN.Load(); n != 0 {
		t.Errorf("second endpoint got %d streams, want 0: a stream with a response must not be replayed", n)
	}
}

// TestRetryBudgetHalfFailing: a backend fails every other call. Retries
// raise the client's success rate above one half, and the attempts that
// reach the backend stay within 1.2 times the client's calls.
func TestRetryBudgetHalfFailing(t *testing.T) {
	fs := &faultServer{unary: func(_ context.Context, n int64) error {
		if n%2 == 0 {
			return status.Error(codes.Unavailable, "every other call fails")
		}
		return nil
	}}
	addr, _ := startFault(t, fs)
	g := startGateway(t, resilienceConfig([]string{addr}, "",
		`    retry: { attempts: 3, on: ["UNAVAILABLE"], backoff: { base: "1ms", max: "2ms" }, budget_percent: 20 }`))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx := ctxT(t, 20*time.Second)

	const calls, workers = 400, 8
	var ok atomic.Int64
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= calls {
				err := unaryOK(ctx, tc)
				if err == nil {
					ok.Add(1)
				} else if !strings.Contains(err.Error(), "every other call fails") {
					// A retry the budget refuses ends the call with the
					// backend's own status, not one of ours.
					t.Errorf("failed call: %v, want the backend's UNAVAILABLE", err)
				}
			}
		})
	}
	wg.Wait()
	attempts := fs.unaryN.Load()
	rate := float64(ok.Load()) / calls
	t.Logf("%d client calls, %d succeeded (%.0f%%), %d upstream attempts (%.2fx)", calls, ok.Load(), 100*rate, attempts, float64(attempts)/calls)
	if rate <= 0.55 {
		t.Errorf("success rate %.2f, want above 0.55 (0.5 without retries)", rate)
	}
	if float64(attempts) > 1.2*calls {
		t.Errorf("%d upstream attempts for %d calls, want at most 1.2x", attempts, calls)
	}
}

// TestDeadlineSlowBackend: the route's max (or default) deadline wins over
// a longer (or absent) client deadline, and a shorter client deadline wins
// over both; the client sees DEADLINE_EXCEEDED, and the backend sees the
// effective deadline (propagated as grpc-timeout) and its call ended by it.
func TestDeadlineSlowBackend(t *testing.T) {
	type seen struct {
		deadline time.Time // zero: none
		err      error
	}
	got := make(chan seen, 4)
	fs := &faultServer{unary: func(ctx context.Context, _ int64) error {
		dl, _ := ctx.Deadline()
		<-ctx.Done()
		got <- seen{dl, ctx.Err()}
		return ctx.Err()
	}}
	addr, _ := startFault(t, fs)
	g := startGateway(t, resilienceConfig([]string{addr}, "", `    timeout: { default: "150ms", max: "300ms" }`))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))

	for _, tt := range []struct {
		name   string
		client time.Duration // 0: no client deadline
		want   time.Duration
	}{
		{"client longer than max", 10 * time.Second, 300 * time.Millisecond},
		{"no client deadline: default", 0, 150 * time.Millisecond},
		{"client shorter", 80 * time.Millisecond, 80 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			began := time.Now()
			ctx := context.Background()
			if tt.client > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.client)
				defer cancel()
			}
			err := unaryOK(ctx, tc)
			took := time.Since(began)
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("call: %v, want DEADLINE_EXCEEDED", err)
			}
			if took < tt.want || took > tt.want+2*time.Second {
				t.Errorf("call took %v, want about %v", took, tt.want)
			}
			select {
			case s := <-got:
				// The expected deadline is began+want; the backend's is
				// later only by the time the call took to reach the
				// gateway and the backend (relative grpc-timeouts).
				expected := began.Add(tt.want)
				switch {
				case s.deadline.IsZero():
					t.Errorf("the backend saw no deadline, want about %v", tt.want)
				case s.deadline.After(expected.Add(50 * time.Millisecond)):
					t.Errorf("the backend's deadline is %v after the expected one: the effective deadline did not propagate", s.deadline.Sub(expected))
				case s.deadline.Before(expected.Add(-time.Millisecond)):
					t.Errorf("the backend's deadline is %v before the expected one", expected.Sub(s.deadline))
				}
				// Its call ends by its own deadline or by the gateway's
				// cancel (RST_STREAM) when that comes first: both are the
				// deadline's doing, never a call left running.
				if !errors.Is(s.err, context.DeadlineExceeded) && !errors.Is(s.err, context.Canceled) {
					t.Errorf("the backend's call ended with %v, want its deadline or a cancel", s.err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the backend never saw its call end")
			}
		})
	}
}

// TestOutlierEjection: one of three endpoints fails every call; after
// consecutive_failures it is ejected and the other two serve everything.
func TestOutlierEjection(t *testing.T) {
	bad := &faultServer{unary: func(context.Context, int64) error { return status.Error(codes.Unavailable, "sick") }}
	good1, good2 := &faultServer{}, &faultServer{}
	a, _ := startFault(t, bad)
	b, _ := startFault(t, good1)
	c, _ := startFault(t, good2)
	g := startGateway(t, resilienceConfig([]string{a, b, c},
		`    outlier_detection: { consecutive_failures: 3, ejection_time: "60s", max_ejection_percent: 50 }`, ""))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx := ctxT(t, 10*time.Second)

	// Round robin: the bad endpoint sees every third call until ejected.
	for i := 0; bad.unaryN.Load() < 3; i++ {
		_ = unaryOK(ctx, tc)
		if i > 50 {
			t.Fatal("the bad endpoint never got three calls")
		}
	}
	before := bad.unaryN.Load()
	for i := range 30 {
		if err := unaryOK(ctx, tc); err != nil {
			t.Fatalf("call %d after ejection: %v", i, err)
		}
	}
	if n := bad.unaryN.Load(); n != before {
		t.Errorf("the ejected endpoint got %d more calls", n-before)
	}
	if good1.unaryN.Load() == 0 || good2.unaryN.Load() == 0 {
		t.Errorf("healthy endpoints served %d and %d, want both", good1.unaryN.Load(), good2.unaryN.Load())
	}
}

// TestBlackholeBreaker: the only endpoint accepts TCP and never answers.
// Calls time out (connect timeout, then the route deadline); after
// consecutive_failures the breaker opens and calls fail fast with
// UNAVAILABLE naming it.
func TestBlackholeBreaker(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	g := startGateway(t, resilienceConfig([]string{lis.Addr().String()},
		`    connect_timeout: "100ms"
    circuit_breaker: { consecutive_failures: 3, open_for: "60s" }`,
		`    timeout: { default: "200ms" }`))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := unaryOK(context.Background(), tc); status.Code(err) == codes.OK {
				t.Errorf("call to a blackhole succeeded")
			}
		})
	}
	wg.Wait()
	began := time.Now()
	err = unaryOK(context.Background(), tc)
	took := time.Since(began)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "circuit breaker open") {
		t.Fatalf("call after 3 failures: %v, want UNAVAILABLE naming the open breaker", err)
	}
	if took > 100*time.Millisecond {
		t.Errorf("the open breaker took %v to answer, want fast", took)
	}
}

// TestHedging: the first attempt hangs; the hedge after hedge_delay
// answers; the client sees success and the first attempt is cancelled.
func TestHedging(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	fs := &faultServer{unary: func(ctx context.Context, n int64) error {
		if n == 1 {
			<-ctx.Done()
			cancelled <- struct{}{}
			return ctx.Err()
		}
		return nil
	}}
	addr, _ := startFault(t, fs)
	g := startGateway(t, resilienceConfig([]string{addr}, "",
		`    retry: { attempts: 2, hedge_delay: "50ms" }`))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx := ctxT(t, 5*time.Second)
	if err := unaryOK(ctx, tc); err != nil {
		t.Fatalf("hedged call: %v", err)
	}
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("the losing attempt was not cancelled")
	}
	if n := fs.unaryN.Load(); n != 2 {
		t.Errorf("backend got %d attempts, want 2", n)
	}
	// A stream on the hedged route is proxied as a stream.
	if err := bidiEcho(ctx, tc, 3); err != nil {
		t.Errorf("stream on a hedged route: %v", err)
	}
}

// bidiEcho makes a FullDuplexCall of n messages on the interop server.
func bidiEcho(ctx context.Context, tc testgrpc.TestServiceClient, n int) error {
	stream, err := tc.FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	for range n {
		if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1}}}); err != nil {
			return err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	for i := 0; ; i++ {
		if _, err := stream.Recv(); err == io.EOF {
			if i != n {
				return fmt.Errorf("%d messages, want %d", i, n)
			}
			return nil
		} else if err != nil {
			return err
		}
	}
}

// TestIdleTimeout: a stream with no message either way for timeout.idle
// ends with DEADLINE_EXCEEDED; one that keeps talking does not.
func TestIdleTimeout(t *testing.T) {
	fs := &faultServer{bidi: func(stream testgrpc.TestService_FullDuplexCallServer) error {
		for {
			if _, err := stream.Recv(); err != nil {
				return nil
			}
			if err := stream.Send(&testpb.StreamingOutputCallResponse{}); err != nil {
				return err
			}
		}
	}}
	addr, _ := startFault(t, fs)
	g := startGateway(t, resilienceConfig([]string{addr}, "", `    timeout: { idle: "200ms" }`))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx := ctxT(t, 10*time.Second)
	stream, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 { // 5 × 100ms of chatter outlives the 200ms idle timeout
		if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("active stream: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	began := time.Now()
	_, err = stream.Recv() // now quiet
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "idle") {
		t.Fatalf("quiet stream: %v, want DEADLINE_EXCEEDED naming the idle timeout", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("idle timeout fired after %v", took)
	}
}

// TestLoadShedding: over the listener's and the route's caps, calls are
// refused at once with RESOURCE_EXHAUSTED.
func TestLoadShedding(t *testing.T) {
	for _, tt := range []struct{ name, listenerCap, routeCap string }{
		{"listener", "2", ""},
		{"route", "", "    max_concurrent_calls: 2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hs, backend := startHoldBackend(t)
			cfg := resilienceConfig([]string{backend}, "", tt.routeCap)
			if tt.listenerCap != "" {
				cfg = strings.Replace(cfg, "    protocol: grpc\n", "    protocol: grpc\n    limits: { max_concurrent_calls: "+tt.listenerCap+" }\n", 1)
			}
			g := startGateway(t, cfg)
			tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
			results := heldCalls(t, hs, tc, 2, 0)
			ctx := ctxT(t, 5*time.Second)
			began := time.Now()
			err := unaryOK(ctx, tc)
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_concurrent_calls") {
				t.Errorf("call over the cap: %v, want RESOURCE_EXHAUSTED naming max_concurrent_calls", err)
			}
			if took := time.Since(began); took > time.Second {
				t.Errorf("shed after %v, want at once", took)
			}
			close(hs.release)
			for range 2 {
				if err := <-results; err != nil {
					t.Errorf("held call: %v", err)
				}
			}
			if err := unaryOK(ctx, tc); err != nil {
				t.Errorf("call under the cap again: %v", err)
			}
		})
	}
}

// TestShutdownUnderLoad: clients that follow readiness (as a load balancer
// does) keep calling while the gateway shuts down with a drain delay; no
// call fails.
func TestShutdownUnderLoad(t *testing.T) {
	fs := &faultServer{unary: func(context.Context, int64) error {
		time.Sleep(20 * time.Millisecond)
		return nil
	}}
	addr, _ := startFault(t, fs)
	cfg := resilienceConfig([]string{addr}, "", "")
	g := startGateway(t, cfg, edge.WithDrainDelay(300*time.Millisecond))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	hc := healthpb.NewHealthClient(dial(t, g.Addr("admin").String()))
	waitHealth(t, hc, healthpb.HealthCheckResponse_SERVING)

	var ready atomic.Bool
	ready.Store(true)
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() { // the load balancer: polls readiness
		defer close(watchDone)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if st, err := healthStatus(hc); err != nil || st != healthpb.HealthCheckResponse_SERVING {
				ready.Store(false)
			}
		}
	}()
	var calls, failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ready.Load() {
				calls.Add(1)
				if err := unaryOK(context.Background(), tc); err != nil {
					failed.Add(1)
					t.Errorf("call during shutdown: %v", err)
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond) // load runs
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	wg.Wait()
	close(stopWatch)
	<-watchDone
	t.Logf("%d calls during the shutdown, %d failed", calls.Load(), failed.Load())
}
