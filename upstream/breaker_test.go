package upstream

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// gate is a loopback listener that refuses gRPC (it closes every
// connection it accepts, so the client's handshake fails) until open is
// called; from then on it serves srv.
type gate struct {
	lis    net.Listener
	conns  chan net.Conn
	mu     sync.Mutex
	opened bool
	done   chan struct{}
}

func startGate(t *testing.T, srv testgrpc.TestServiceServer) (*gate, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{lis: lis, conns: make(chan net.Conn), done: make(chan struct{})}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, srv)
	served := make(chan struct{})
	go func() { defer close(served); _ = s.Serve(gateListener{g}) }()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			open := g.opened
			g.mu.Unlock()
			if !open {
				_ = c.Close()
				continue
			}
			select {
			case g.conns <- c:
			case <-g.done:
				_ = c.Close()
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = lis.Close()
		close(g.done)
		s.Stop()
		<-served
	})
	return g, lis.Addr().String()
}

func (g *gate) open() {
	g.mu.Lock()
	g.opened = true
	g.mu.Unlock()
}

// gateListener hands the gate's admitted connections to a grpc.Server.
type gateListener struct{ g *gate }

func (l gateListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.g.conns:
		return c, nil
	case <-l.g.done:
		return nil, net.ErrClosed
	}
}
func (l gateListener) Close() error   { return nil }
func (l gateListener) Addr() net.Addr { return l.g.lis.Addr() }

// holdServer answers EmptyCall at once and holds FullDuplexCall, after
// sending its headers, until the call ends.
type holdServer struct {
	testgrpc.UnimplementedTestServiceServer
}

func (holdServer) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (holdServer) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

// fastBackoff reconnects within tens of milliseconds, so that a gate
// opening is seen at once.
var fastBackoff = WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.2, MaxDelay: 50 * time.Millisecond},
	MinConnectTimeout: time.Second,
}))

// openBreaker fails calls on the closed gate until the breaker opens, then
// waits for it to turn half-open.
func openBreaker(t *testing.T, p *Pool, c testgrpc.TestServiceClient) {
	t.Helper()
	waitFor(t, "the breaker to open", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_, _ = c.EmptyCall(ctx, &testpb.Empty{})
		return p.Breakers()["svc"] == BreakerOpen
	})
	waitFor(t, "the breaker to turn half-open", func() bool { return p.Breakers()["svc"] == BreakerHalfOpen })
}

// inflight is the number of calls the backend's shield holds (admitted,
// result not yet reported).
func inflight(p *Pool, name string) int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.backends[name].shield.inflight.Load()
}

func pendingCalls(p *Pool, name string) int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.backends[name].shield.pending.Load()
}

// TestHalfOpenNeutralResults: in the half-open state, results that say
// nothing about the backend neither close nor reopen the breaker and give
// the probe slot back: a call refused by max_pending, and a client's
// cancel (while the call waits for a connection, or once the backend has
// it). Only answers of the backend count.
func TestHalfOpenNeutralResults(t *testing.T) {
	for _, tt := range []struct {
		name   string
		probes int
		// neutral makes the half-open breaker see a neutral result; the
		// gate is closed when it starts, and open when it returns.
		neutral func(t *testing.T, p *Pool, g *gate, c testgrpc.TestServiceClient)
	}{
		{
			// Two probes: a probe waits for a connection, a second is
			// refused by max_pending, then the first gets its answer. One
			// probe answered: still half-open.
			name: "max_pending refusal", probes: 2,
			neutral: func(t *testing.T, p *Pool, g *gate, c testgrpc.TestServiceClient) {
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				defer cancel()
				first := make(chan error, 1)
				go func() {
					_, err := c.EmptyCall(ctx, &testpb.Empty{}, grpc.WaitForReady(true))
					first <- err
				}()
				waitFor(t, "a call waiting for a connection", func() bool { return pendingCalls(p, "svc") == 1 })
				_, err := c.EmptyCall(ctx, &testpb.Empty{})
				if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "circuit_breaker.max_pending") {
					t.Fatalf("call over max_pending: %v, want UNAVAILABLE naming circuit_breaker.max_pending", err)
				}
				g.open()
				if err := <-first; err != nil {
					t.Fatalf("the waiting probe: %v", err)
				}
			},
		},
		{
			name: "cancel while waiting for a connection", probes: 1,
			neutral: func(t *testing.T, p *Pool, g *gate, c testgrpc.TestServiceClient) {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() {
					_, err := c.EmptyCall(ctx, &testpb.Empty{}, grpc.WaitForReady(true))
					done <- err
				}()
				waitFor(t, "a call waiting for a connection", func() bool { return pendingCalls(p, "svc") == 1 })
				cancel()
				if err := <-done; status.Code(err) != codes.Canceled {
					t.Fatalf("cancelled call: %v, want CANCELLED", err)
				}
				waitFor(t, "the call's result to reach the breaker", func() bool { return inflight(p, "svc") == 0 })
				g.open()
			},
		},
		{
			name: "cancel while the backend has the call", probes: 1,
			neutral: func(t *testing.T, p *Pool, g *gate, c testgrpc.TestServiceClient) {
				g.open()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				stream, err := c.FullDuplexCall(ctx, grpc.WaitForReady(true))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := stream.Header(); err != nil {
					t.Fatalf("held stream: %v", err)
				}
				cancel()
				waitFor(t, "the call's result to reach the breaker", func() bool { return inflight(p, "svc") == 0 })
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g, addr := startGate(t, holdServer{})
			p := newPool(t, []Spec{{Name: "svc", Endpoints: []string{addr},
				Breaker: &Breaker{MaxPending: 1, ConsecutiveFailures: 2, OpenFor: 100 * time.Millisecond, HalfOpenProbes: tt.probes}}},
				fastBackoff)
			p.Connect()
			c := client(t, p, "svc")
			openBreaker(t, p, c)

			tt.neutral(t, p, g, c)
			if st := p.Breakers()["svc"]; st != BreakerHalfOpen {
				t.Fatalf("breaker %v after a neutral result, want half-open (%v)", st, BreakerHalfOpen)
			}
			// The probe slot is free again: real answers close the breaker.
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			for p.Breakers()["svc"] == BreakerHalfOpen {
				if _, err := c.EmptyCall(ctx, &testpb.Empty{}, grpc.WaitForReady(true)); err != nil {
					t.Fatalf("probe: %v", err)
				}
			}
			if st := p.Breakers()["svc"]; st != BreakerClosed {
				t.Errorf("breaker %v after answered probes, want closed", st)
			}
		})
	}
}
