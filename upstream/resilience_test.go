package upstream

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// fakeClock is a Clock that moves only when Advance is called.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*fakeTimer]struct{}
}

type fakeTimer struct {
	at time.Time
	f  func()
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1e9, 0), timers: map[*fakeTimer]struct{}{}}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers[t] = struct{}{}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.timers[t]
		delete(c.timers, t)
		return ok
	}
}

// Advance moves the clock and runs the timers that fall due, each in its
// own goroutine as time.AfterFunc does.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for t := range c.timers {
		if !t.at.After(c.now) {
			due = append(due, t.f)
			delete(c.timers, t)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		go f()
	}
}

// advanceUntil advances the clock by step until cond holds: timers are
// set asynchronously (after a health check returns), so one step may come
// before the timer it should fire.
func advanceUntil(t *testing.T, c *fakeClock, step time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		c.Advance(step)
		time.Sleep(2 * time.Millisecond)
	}
}

// healthBackend serves the interop TestService and grpc.health.v1.
func healthBackend(t *testing.T) (string, *health.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String(), hs
}

// failingServer fails every EmptyCall with UNAVAILABLE.
type failingServer struct {
	testgrpc.UnimplementedTestServiceServer
}

func (failingServer) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return nil, status.Error(codes.Unavailable, "sick")
}

func startFailing(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, failingServer{})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func countServed(t *testing.T, c testgrpc.TestServiceClient, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		counts[servedBy(t, c)]++
	}
	return counts
}

func TestActiveHealthCheck(t *testing.T) {
	a, ha := healthBackend(t)
	b, hb := healthBackend(t)
	hb.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	clock := newFakeClock()
	const every = time.Hour
	p := newPool(t, []Spec{{Name: "svc", Endpoints: []string{a, b}, HealthCheck: &HealthCheck{
		Interval: every, Timeout: time.Second, UnhealthyThreshold: 2, HealthyThreshold: 1,
	}}}, WithClock(clock))
	p.Connect()
	waitFor(t, "a healthy, b unhealthy", func() bool {
		s := endpointStates(p, "svc")
		return s[a] == connectivity.Ready && s[b] == connectivity.TransientFailure
	})
	if got := countServed(t, client(t, p, "svc"), 10); got[a] != 10 {
		t.Fatalf("calls per endpoint = %v, want all on the healthy %s", got, a)
	}

	hb.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	advanceUntil(t, clock, every, "b healthy", func() bool { return endpointStates(p, "svc")[b] == connectivity.Ready })
	waitFor(t, "b to take calls", func() bool { return countServed(t, client(t, p, "svc"), 4)[b] > 0 })

	// Healthy a needs two failed checks in a row to turn unhealthy.
	ha.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	advanceUntil(t, clock, every, "a unhealthy", func() bool { return endpointStates(p, "svc")[a] == connectivity.TransientFailure })
	if !p.Ready("svc") {
		t.Error("Ready = false with b healthy")
	}
	hb.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	advanceUntil(t, clock, every, "svc not ready", func() bool { return !p.Ready("svc") })
	if got := p.NotReady(); len(got) != 1 || got[0] != "svc" {
		t.Errorf("NotReady = %v, want [svc]", got)
	}
}

func TestOutlierEjectionAndReturn(t *testing.T) {
	good, _ := startBackend(t)
	bad1, bad2 := startFailing(t), startFailing(t)
	clock := newFakeClock()
	p := newPool(t, []Spec{{Name: "svc", Endpoints: []string{good, bad1, bad2},
		Outlier: &Outlier{ConsecutiveFailures: 2, EjectionTime: time.Minute, MaxEjectionPercent: 50}}}, WithClock(clock))
	p.Connect()
	waitFor(t, "all READY", func() bool {
		s := endpointStates(p, "svc")
		return s[good] == connectivity.Ready && s[bad1] == connectivity.Ready && s[bad2] == connectivity.Ready
	})
	c := client(t, p, "svc")
	ejected := func() (n int, which string) {
		for _, b := range p.Backends() {
			for _, e := range b.Endpoints {
				if e.Ejected {
					n++
					which = e.Address
				}
			}
		}
		return n, which
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	waitFor(t, "an ejection", func() bool {
		_, _ = c.EmptyCall(ctx, &testpb.Empty{})
		n, _ := ejected()
		return n == 1
	})
	for range 20 {
		_, _ = c.EmptyCall(ctx, &testpb.Empty{})
	}
	// 50% of 3 endpoints is one: the second bad endpoint stays in.
	n, out := ejected()
	if n != 1 {
		t.Fatalf("%d endpoints ejected, want 1 (max_ejection_percent)", n)
	}
	if s := endpointStates(p, "svc")[out]; s != connectivity.TransientFailure {
		t.Errorf("ejected endpoint is %v, want TRANSIENT_FAILURE", s)
	}
	clock.Advance(time.Minute)
	waitFor(t, "the ejected endpoint back", func() bool {
		n, _ := ejected()
		return n == 0 && endpointStates(p, "svc")[out] == connectivity.Ready
	})
}

func TestWeightedRoundRobin(t *testing.T) {
	a, _ := startBackend(t)
	b, _ := startBackend(t)
	p := newPool(t, []Spec{{Name: "svc", Endpoints: []string{a, b}, Weights: map[string]uint32{a: 3}}})
	p.Connect()
	waitFor(t, "both READY", func() bool {
		s := endpointStates(p, "svc")
		return s[a] == connectivity.Ready && s[b] == connectivity.Ready
	})
	waitFor(t, "3:1 split", func() bool {
		got := countServed(t, client(t, p, "svc"), 40)
		return got[a] == 30 && got[b] == 10
	})
}

func TestPickFirst(t *testing.T) {
	a, _ := startBackend(t)
	b, _ := startBackend(t)
	p := newPool(t, []Spec{
		{Name: "pf", Endpoints: []string{a, b}, Balancing: PickFirst},
	})
	p.Connect()
	if got := countServed(t, client(t, p, "pf"), 10); got[a] != 10 {
		t.Errorf("pick_first spread %v, want all on %s", got, a)
	}
}

// slowEmpty is the interop TestService whose EmptyCall takes delay.
type slowEmpty struct {
	testgrpc.TestServiceServer
	delay time.Duration
}

func (s slowEmpty) EmptyCall(ctx context.Context, in *testpb.Empty) (*testpb.Empty, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.TestServiceServer.EmptyCall(ctx, in)
}

// TestLeastRequestAvoidsTheBusyEndpoint: with one endpoint slow (its calls
// pile up) and one fast, least_request sends most calls to the fast one,
// where round_robin keeps sending half of them to the slow one. Random
// two-choice picking (grpc-go's least_request) lands on the slow endpoint
// only when both choices are it, about a quarter of the picks.
func TestLeastRequestAvoidsTheBusyEndpoint(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, slowEmpty{interop.NewTestServer(), 50 * time.Millisecond})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	slow := lis.Addr().String()
	fast, _ := startBackend(t)
	p := newPool(t, []Spec{
		{Name: "lr", Endpoints: []string{slow, fast}, Balancing: LeastRequest},
		{Name: "rr", Endpoints: []string{slow, fast}, Balancing: RoundRobin},
	})
	p.Connect()
	share := func(name string) float64 {
		c := client(t, p, name)
		waitFor(t, name+" to reach both endpoints", func() bool {
			got := countServed(t, c, 10)
			return got[slow] > 0 && got[fast] > 0
		})
		var mu sync.Mutex
		counts := map[string]int{}
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for range 40 {
					a := servedBy(t, c)
					mu.Lock()
					counts[a]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return float64(counts[slow]) / float64(counts[slow]+counts[fast])
	}
	rr, lr := share("rr"), share("lr")
	if rr < 0.4 {
		t.Errorf("round_robin sent %.0f%% of calls to the slow endpoint, want about half (the control)", rr*100)
	}
	if lr > 0.35 {
		t.Errorf("least_request sent %.0f%% of calls to the slow endpoint, want about a quarter (round_robin: %.0f%%)", lr*100, rr*100)
	}
	t.Logf("share of calls on the slow endpoint: round_robin %.0f%%, least_request %.0f%%", rr*100, lr*100)
}

func TestDNSDiscovery(t *testing.T) {
	addr, _ := startBackend(t)
	_, port, _ := net.SplitHostPort(addr)
	var mu sync.Mutex
	answer, fail := []string{"127.0.0.1"}, false
	lookup := func(_ context.Context, host string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		if host != "svc.test" || fail {
			return nil, errors.New("no such host")
		}
		return answer, nil
	}
	clock := newFakeClock()
	p := newPool(t, []Spec{{Name: "svc", Endpoints: []string{"svc.test:" + port}, Discovery: DNS, DNSRefresh: time.Minute}},
		WithClock(clock), WithLookupHost(lookup))
	p.Connect()
	if got := servedBy(t, client(t, p, "svc")); got != addr {
		t.Fatalf("served by %s, want %s", got, addr)
	}
	// DNS fails: the last known address stays.
	mu.Lock()
	fail = true
	mu.Unlock()
	clock.Advance(time.Minute)
	if got := servedBy(t, client(t, p, "svc")); got != addr {
		t.Fatalf("after a failed lookup served by %s, want %s", got, addr)
	}
	// The name moves to another loopback address.
	lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", port))
	if err != nil {
		t.Skipf("127.0.0.2:%s: %v", port, err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()
	mu.Lock()
	answer, fail = []string{"127.0.0.2"}, false
	mu.Unlock()
	moved := net.JoinHostPort("127.0.0.2", port)
	advanceUntil(t, clock, time.Minute, "the new address", func() bool {
		s := endpointStates(p, "svc")
		_, old := s[addr]
		return !old && s[moved] == connectivity.Ready
	})
	if got := servedBy(t, client(t, p, "svc")); got != moved {
		t.Fatalf("served by %s, want %s", got, moved)
	}
}

func TestDNSLocalhost(t *testing.T) {
	addr, _ := startBackend(t)
	_, port, _ := net.SplitHostPort(addr)
	p := newPool(t, []Spec{{Name: "svc", Endpoints: []string{"localhost:" + port}, Discovery: DNS}})
	p.Connect()
	if got := servedBy(t, client(t, p, "svc")); got != addr {
		t.Fatalf("served by %s, want %s", got, addr)
	}
}

func TestBreakerCapsAndTrips(t *testing.T) {
	addr, stop := startBackend(t)
	p := newPool(t, []Spec{{Name: "svc", Endpoints: []string{addr},
		Breaker: &Breaker{MaxConcurrent: 1, ConsecutiveFailures: 2, OpenFor: 50 * time.Millisecond, HalfOpenProbes: 1}}})
	p.Connect()
	c := client(t, p, "svc")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	stream, err := c.FullDuplexCall(ctx) // in flight until closed
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.EmptyCall(ctx, &testpb.Empty{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "max_concurrent") {
		t.Fatalf("call over max_concurrent: %v, want UNAVAILABLE naming the cap", err)
	}
	_ = stream.CloseSend()
	if _, err := stream.Recv(); err == nil {
		t.Fatal("stream: want EOF")
	}
	if _, err := c.EmptyCall(ctx, &testpb.Empty{}); err != nil {
		t.Fatalf("call under the cap: %v", err)
	}

	stop() // the backend goes away: failures open the breaker
	waitFor(t, "the breaker to open", func() bool {
		_, err := c.EmptyCall(ctx, &testpb.Empty{})
		return err != nil && strings.Contains(err.Error(), "circuit breaker open")
	})
	if n, _ := p.Counters("svc"); n.Rejected == 0 {
		t.Errorf("counters %+v, want rejections", n)
	}
}

func TestRetryPolicyServiceConfig(t *testing.T) {
	rp := &RetryPolicy{Attempts: 3, Codes: []codes.Code{codes.Unavailable, codes.Canceled, codes.DeadlineExceeded}, Base: 25 * time.Millisecond, Max: 250 * time.Millisecond}
	got := rp.serviceConfig()
	for _, want := range []string{`"maxAttempts":3`, `"UNAVAILABLE"`, `"CANCELLED"`, `"DEADLINE_EXCEEDED"`, `"initialBackoff":"0.025000000s"`, `"gatehouse_endpoint_state"`} {
		if !strings.Contains(got, want) {
			t.Errorf("service config %s lacks %s", got, want)
		}
	}
	if (&RetryPolicy{Attempts: 1}).key() != "" || (*RetryPolicy)(nil).key() != "" {
		t.Error("a policy of one attempt should share the plain connection")
	}
}
