package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// replayServer serves StreamingInputCall: it reads the whole request
// stream, records the message bodies of each attempt, and fails the first
// attempt with UNAVAILABLE (trailers only, no headers: retryable).
type replayServer struct {
	testgrpc.TestServiceServer
	mu       sync.Mutex
	attempts [][]string // message bodies, per attempt
}

func (s *replayServer) StreamingInputCall(stream testgrpc.TestService_StreamingInputCallServer) error {
	var got []string
	size := 0
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		got = append(got, string(m.GetPayload().GetBody()))
		size += len(m.GetPayload().GetBody())
	}
	s.mu.Lock()
	s.attempts = append(s.attempts, got)
	n := len(s.attempts)
	s.mu.Unlock()
	if n == 1 {
		return status.Error(codes.Unavailable, "first attempt fails after the whole stream")
	}
	return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(size)})
}

func (s *replayServer) seen() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.attempts)
}

// replayClientStream sends one StreamingInputCall of msgs messages of size
// bytes each (message i's body starts with its number) and returns the
// aggregated size the backend answered and the bodies sent.
func replayClientStream(ctx context.Context, tc testgrpc.TestServiceClient, msgs, size int) (int32, []string, error) {
	stream, err := tc.StreamingInputCall(ctx)
	if err != nil {
		return 0, nil, err
	}
	var sent []string
	for i := range msgs {
		body := fmt.Sprintf("%04d", i) + strings.Repeat("x", size-4)
		sent = append(sent, body)
		if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: []byte(body)}}); err != nil {
			break // the status comes from CloseAndRecv
		}
	}
	resp, err := stream.CloseAndRecv()
	return resp.GetAggregatedPayloadSize(), sent, err
}

// TestClientStreamRetryReplay: a client-streaming call whose first attempt
// fails UNAVAILABLE after the backend has read the whole stream is retried
// from the gateway's bounded buffer: the second attempt gets every message
// in order and the client sees success. A stream larger than
// retry.buffer_bytes is not retried: the client sees the UNAVAILABLE and
// the backend one attempt.
func TestClientStreamRetryReplay(t *testing.T) {
	for _, tt := range []struct {
		name       string
		msgs, size int
		retried    bool
	}{
		{"within buffer_bytes", 8, 100, true},
		{"over buffer_bytes", 8, 1000, false},
		{"one message within", 1, 1000, true},
		{"one message over", 1, 5000, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rs := &replayServer{TestServiceServer: interop.NewTestServer()}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := grpc.NewServer()
			testgrpc.RegisterTestServiceServer(s, rs)
			go func() { _ = s.Serve(lis) }()
			t.Cleanup(s.Stop)

			g := startGateway(t, resilienceConfig([]string{lis.Addr().String()}, "",
				`    retry: { attempts: 3, on: ["UNAVAILABLE"], backoff: { base: "1ms", max: "5ms" }, budget_percent: 100, buffer_bytes: 4096 }`))
			tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
			got, sent, err := replayClientStream(ctxT(t, 10*time.Second), tc, tt.msgs, tt.size)
			attempts := rs.seen()
			if !tt.retried {
				if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "first attempt fails") {
					t.Errorf("stream over buffer_bytes: %v, want the first attempt's UNAVAILABLE", err)
				}
				if len(attempts) != 1 {
					t.Errorf("backend got %d attempts, want 1: a stream over buffer_bytes is not retried", len(attempts))
				}
				return
			}
			if err != nil {
				t.Fatalf("retried stream: %v", err)
			}
			if want := int32(tt.msgs * tt.size); got != want {
				t.Errorf("aggregated size %d, want %d", got, want)
			}
			if len(attempts) != 2 {
				t.Fatalf("backend got %d attempts, want 2", len(attempts))
			}
			for i, a := range attempts {
				if !slices.Equal(a, sent) {
					t.Errorf("attempt %d got %d messages %.20q, want all %d in order", i+1, len(a), a, len(sent))
				}
			}
		})
	}
}

// blackholeBackend accepts TCP connections and never answers: a backend
// connection stays CONNECTING (until its connect timeout), and calls wait
// for it.
func blackholeBackend(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = lis.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return lis.Addr().String()
}

// TestMaxPending: with max_pending 2, three calls go to a backend that
// does not answer. Two wait for a connection; the third fails at once with
// UNAVAILABLE naming circuit_breaker.max_pending, long before its
// deadline, and the two others keep waiting until they are cancelled.
func TestMaxPending(t *testing.T) {
	g := startGateway(t, resilienceConfig([]string{blackholeBackend(t)},
		`    circuit_breaker: { max_pending: 2, consecutive_failures: 0 }`, ""))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	results := make(chan error, 3)
	for range 3 {
		go func() { results <- unaryOK(ctx, tc) }()
	}
	select {
	case err := <-results:
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "circuit_breaker.max_pending") {
			t.Errorf("first call to end: %v, want UNAVAILABLE naming circuit_breaker.max_pending", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no call failed fast over max_pending")
	}
	select {
	case err := <-results:
		t.Fatalf("a second call ended while two may wait: %v", err)
	default:
	}
	cancel()
	for range 2 {
		if err := <-results; status.Code(err) != codes.Canceled {
			t.Errorf("waiting call: %v, want CANCELLED", err)
		}
	}
}

// TestBreakerHalfOpen: after open_for the open breaker lets one probe
// through. A probe that succeeds closes it: from then on a single failure
// does not open it again (consecutive_failures is 2). A probe that fails
// reopens it: the next call fails fast without reaching the backend.
func TestBreakerHalfOpen(t *testing.T) {
	for _, tt := range []struct {
		name       string
		probeFails bool
	}{
		{"probe succeeds: closed", false},
		{"probe fails: reopened", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var failing atomic.Bool
			failing.Store(true)
			fs := &faultServer{unary: func(context.Context, int64) error {
				if failing.Load() {
					return status.Error(codes.Unavailable, "sick")
				}
				return nil
			}}
			addr, _ := startFault(t, fs)
			g := startGateway(t, resilienceConfig([]string{addr},
				`    circuit_breaker: { consecutive_failures: 2, open_for: "200ms", half_open_probes: 1 }`, ""))
			tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
			ctx := ctxT(t, 20*time.Second)
			isOpen := func(err error) bool {
				return status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "circuit breaker open")
			}

			for i := range 2 {
				if err := unaryOK(ctx, tc); isOpen(err) || err == nil {
					t.Fatalf("failing call %d: %v, want the backend's UNAVAILABLE", i, err)
				}
			}
			before := fs.unaryN.Load()
			if err := unaryOK(ctx, tc); !isOpen(err) {
				t.Fatalf("call after 2 failures: %v, want UNAVAILABLE naming the open breaker", err)
			}
			if fs.unaryN.Load() != before {
				t.Fatal("the open breaker let a call reach the backend")
			}

			failing.Store(tt.probeFails)
			// The probe: the first call after open_for that reaches the
			// backend; until then calls fail fast.
			var probeErr error
			for deadline := time.Now().Add(10 * time.Second); fs.unaryN.Load() == before; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("no probe went through after open_for")
				}
				if probeErr = unaryOK(ctx, tc); probeErr != nil && !isOpen(probeErr) && fs.unaryN.Load() == before {
					t.Fatalf("call while open: %v", probeErr)
				}
			}
			if tt.probeFails {
				if probeErr == nil || isOpen(probeErr) {
					t.Fatalf("probe: %v, want the backend's UNAVAILABLE", probeErr)
				}
				n := fs.unaryN.Load()
				if err := unaryOK(ctx, tc); !isOpen(err) || fs.unaryN.Load() != n {
					t.Errorf("call after a failed probe: %v (backend calls %d -> %d), want the breaker open again", err, n, fs.unaryN.Load())
				}
				return
			}
			if probeErr != nil {
				t.Fatalf("probe: %v, want success", probeErr)
			}
			// Closed: one failure (of the 2 that open it) reaches the
			// backend, and so does the call after it.
			failing.Store(true)
			if err := unaryOK(ctx, tc); isOpen(err) || err == nil {
				t.Fatalf("failing call after the probe: %v, want the backend's UNAVAILABLE", err)
			}
			failing.Store(false)
			n := fs.unaryN.Load()
			if err := unaryOK(ctx, tc); err != nil || fs.unaryN.Load() != n+1 {
				t.Errorf("call after one failure: %v (backend calls %d -> %d), want it served: the breaker closed", err, n, fs.unaryN.Load())
			}
		})
	}
}

// TestBreakerFailureRatio: with consecutive_failures off, failure_ratio
// 0.5 over min_requests 10 opens the breaker once half of 10 calls have
// failed (never two in a row); a backend failing a third of its calls
// keeps it closed.
func TestBreakerFailureRatio(t *testing.T) {
	for _, tt := range []struct {
		name      string
		failEvery int64
		opens     bool
	}{
		{"half fail: opens", 2, true},
		{"a third fail: stays closed", 3, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := &faultServer{unary: func(_ context.Context, n int64) error {
				if n%tt.failEvery == 0 {
					return status.Error(codes.Unavailable, "sick")
				}
				return nil
			}}
			addr, _ := startFault(t, fs)
			g := startGateway(t, resilienceConfig([]string{addr},
				`    circuit_breaker: { consecutive_failures: 0, failure_ratio: 0.5, min_requests: 10, open_for: "60s" }`, ""))
			tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
			ctx := ctxT(t, 10*time.Second)
			for i := range 9 {
				if err := unaryOK(ctx, tc); err != nil && strings.Contains(err.Error(), "circuit breaker") {
					t.Fatalf("call %d, before min_requests: %v", i+1, err)
				}
			}
			var err error
			for range 21 {
				if err = unaryOK(ctx, tc); err != nil && strings.Contains(err.Error(), "circuit breaker open") {
					break
				}
			}
			opened := err != nil && strings.Contains(err.Error(), "circuit breaker open")
			if opened != tt.opens {
				t.Fatalf("breaker opened = %v (last error %v), want %v", opened, err, tt.opens)
			}
			if tt.opens {
				if n := fs.unaryN.Load(); n != 10 {
					t.Errorf("backend got %d calls before the breaker opened, want 10 (min_requests)", n)
				}
			}
		})
	}
}

// TestConnectTimeout: backends[].connect_timeout bounds a connection
// attempt to an address that accepts TCP and never answers: once it
// expires the endpoint is in TRANSIENT_FAILURE and calls fail with
// UNAVAILABLE instead of waiting out their deadline (grpc-go gives an
// attempt at least its first reconnect backoff, 1s, so this takes about
// 1s). Without it grpc-go's 20s applies, and a call with a shorter
// deadline waits it out.
func TestConnectTimeout(t *testing.T) {
	for _, tt := range []struct {
		name     string
		backend  string
		deadline time.Duration
		want     codes.Code
	}{
		{"100ms", `    connect_timeout: "100ms"`, 10 * time.Second, codes.Unavailable},
		{"absent: grpc-go's 20s", "", 500 * time.Millisecond, codes.DeadlineExceeded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := startGateway(t, resilienceConfig([]string{blackholeBackend(t)}, tt.backend, ""))
			tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
			if err := unaryOK(ctxT(t, tt.deadline), tc); status.Code(err) != tt.want {
				t.Errorf("call to a blackhole: %v, want %v", err, tt.want)
			}
		})
	}
}
