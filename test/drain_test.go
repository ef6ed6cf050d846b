package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// holdServer is the interop TestService with UnaryCall and FullDuplexCall
// replaced by calls that announce their arrival on arrived and then wait,
// ignoring their context, until release is closed: a backend whose calls
// are in flight for exactly as long as the test says.
type holdServer struct {
	testgrpc.TestServiceServer
	arrived chan string   // one send per call that reached the backend
	release chan struct{} // closed to let every held call finish
}

// UnaryCall answers with ResponseSize bytes once released.
func (s *holdServer) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s.arrived <- "unary"
	<-s.release
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, req.GetResponseSize())}}, nil
}

// FullDuplexCall answers the first request with one message at once, then,
// once released, with a second message, and ends when the client closes its
// side.
func (s *holdServer) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte("first")}}); err != nil {
		return err
	}
	s.arrived <- "bidi"
	<-s.release
	if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte("second")}}); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// startHoldBackend serves a holdServer on a free loopback port. Held calls
// are released when the test ends, before the backend stops, so that no
// handler goroutine outlives the test.
func startHoldBackend(t *testing.T) (*holdServer, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &holdServer{
		TestServiceServer: interop.NewTestServer(),
		arrived:           make(chan string, 64),
		release:           make(chan struct{}),
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, hs)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	t.Cleanup(func() {
		select {
		case <-hs.release:
		default:
			close(hs.release)
		}
	})
	return hs, lis.Addr().String()
}

// drainListener is a kind of edge listener the drain tests run against.
type drainListener struct {
	name, protocol string
	extra          string // more keys of the listener, YAML
	tls            bool
}

// drainListeners are both protocols, a shared listener that leaves gRPC to
// net/http, and TLS shared listeners (gRPC clients served natively after
// the split's handshake, or by net/http).
var drainListeners = []drainListener{
	{name: "shared", protocol: "shared"},
	{name: "grpc", protocol: "grpc"},
	{name: "shared-http", protocol: "shared", extra: "grpc_connections: http"},
	{name: "shared-tls", protocol: "shared", tls: true},
	{name: "shared-tls-http", protocol: "shared", extra: "grpc_connections: http", tls: true},
}

// start starts a gateway with drainConfig for l and returns it and a
// function that dials its edge listener.
func (l drainListener) start(t *testing.T, backend string) (*edge.Gateway, func(t *testing.T) *grpc.ClientConn) {
	t.Helper()
	extra := l.extra
	var roots *x509.CertPool
	if l.tls {
		var block string
		block, roots = edgeCert(t)
		extra += "\n    tls: " + block
	}
	g := startGateway(t, drainConfig(l.protocol, backend, extra))
	addr := g.Addr("edge").String()
	return g, func(t *testing.T) *grpc.ClientConn {
		t.Helper()
		if !l.tls {
			return dial(t, addr)
		}
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "localhost"})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return cc
	}
}

// drainConfig routes the TestService to backend on a listener of the given
// protocol (and extra keys), with an admin listener; both bind free
// loopback ports.
func drainConfig(protocol, backend, extra string) string {
	return fmt.Sprintf(`
listeners:
  - name: edge
    address: "127.0.0.1:0"
    protocol: %q
    %s
admin:
  address: "127.0.0.1:0"
backends:
  - name: testsvc
    endpoints: [%q]
routes:
  - name: testsvc
    match: { service: "grpc.testing.TestService" }
    backend: testsvc
`, protocol, extra, backend)
}

// heldCalls starts unary and bidi calls against the hold backend through
// tc and waits until every one has reached the backend. Each call's outcome
// arrives on the returned channel when it ends: nil when the call finished
// OK with the expected messages.
func heldCalls(t *testing.T, hs *holdServer, tc testgrpc.TestServiceClient, unary, bidi int) <-chan error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	out := make(chan error, unary+bidi)
	for range unary {
		go func() {
			resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 100})
			if err == nil && len(resp.GetPayload().GetBody()) != 100 {
				err = fmt.Errorf("unary: %d bytes, want 100", len(resp.GetPayload().GetBody()))
			}
			out <- err
		}()
	}
	for range bidi {
		go func() { out <- bidiCall(ctx, tc) }()
	}
	timeout := time.After(10 * time.Second)
	for range unary + bidi {
		select {
		case <-hs.arrived:
		case err := <-out:
			t.Fatalf("a call ended before it was held: %v", err)
		case <-timeout:
			t.Fatal("the calls never all reached the backend")
		}
	}
	return out
}

// bidiCall makes one FullDuplexCall to a holdServer: one request, two
// messages back, then OK.
func bidiCall(ctx context.Context, tc testgrpc.TestServiceClient) error {
	stream, err := tc.FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
		return err
	}
	for _, want := range []string{"first", "second"} {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		if got := string(m.GetPayload().GetBody()); got != want {
			return fmt.Errorf("bidi: message %q, want %q", got, want)
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	if _, err := stream.Recv(); err != io.EOF {
		return fmt.Errorf("bidi: after the last message: %v, want EOF", err)
	}
	return nil
}

// healthStatus asks the overall ("") grpc.health.v1 status.
func healthStatus(hc healthpb.HealthClient) (healthpb.HealthCheckResponse_ServingStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: ""})
	return resp.GetStatus(), err
}

// waitHealth polls the health service until it reports want.
func waitHealth(t *testing.T, hc healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	var (
		got healthpb.HealthCheckResponse_ServingStatus
		err error
	)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got, err = healthStatus(hc); err == nil && got == want {
			return
		}
	}
	t.Fatalf("health = %v, %v; want %v", got, err, want)
}

// refused reports whether a new TCP connection to addr is refused.
func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		_ = c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// waitRefused polls until new connections to addr are refused.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if refused(addr) {
			return
		}
	}
	t.Fatalf("%s still accepts new connections", addr)
}

// TestShutdownDrainsInFlight: Shutdown turns health NOT_SERVING on the admin
// listener and stops the edge listener accepting while held unary and bidi
// calls are still in flight; those calls then finish OK, and Shutdown
// returns once they have.
func TestShutdownDrainsInFlight(t *testing.T) {
	for _, l := range drainListeners {
		t.Run(l.name, func(t *testing.T) {
			hs, backend := startHoldBackend(t)
			g, dialEdge := l.start(t, backend)
			edgeAddr, adminAddr := g.Addr("edge").String(), g.Addr("admin").String()
			tc := testgrpc.NewTestServiceClient(dialEdge(t))
			hc := healthpb.NewHealthClient(dial(t, adminAddr))
			waitHealth(t, hc, healthpb.HealthCheckResponse_SERVING)

			const unary, bidi = 3, 2
			results := heldCalls(t, hs, tc, unary, bidi)

			shutdownDone := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				shutdownDone <- g.Shutdown(ctx)
			}()

			// Every call is held by the backend, so all that follows is
			// observed during the drain.
			waitHealth(t, hc, healthpb.HealthCheckResponse_NOT_SERVING)
			if code, body, _ := httpDo(t, "GET", "http://"+adminAddr+"/readyz", ""); code != 503 {
				t.Errorf("GET /readyz during the drain: %d %q, want 503", code, body)
			}
			if code, body, _ := httpDo(t, "GET", "http://"+adminAddr+"/healthz", ""); code != 200 {
				t.Errorf("GET /healthz during the drain: %d %q, want 200 (the process is up)", code, body)
			}
			waitRefused(t, edgeAddr)
			fresh := testgrpc.NewTestServiceClient(dialEdge(t))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := fresh.EmptyCall(ctx, &testpb.Empty{}); status.Code(err) != codes.Unavailable {
				t.Errorf("a call on a new connection during the drain: %v, want UNAVAILABLE", err)
			}
			select {
			case err := <-shutdownDone:
				t.Fatalf("Shutdown returned (%v) while calls were in flight", err)
			case err := <-results:
				t.Fatalf("a held call ended during the drain: %v", err)
			default:
			}

			close(hs.release)
			for range unary + bidi {
				select {
				case err := <-results:
					if err != nil {
						t.Errorf("in-flight call: %v", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("an in-flight call never finished")
				}
			}
			select {
			case err := <-shutdownDone:
				if err != nil {
					t.Errorf("Shutdown: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Shutdown did not return after the in-flight calls finished")
			}
			if !refused(adminAddr) {
				t.Errorf("the admin listener still accepts after Shutdown")
			}
		})
	}
}

// TestShutdownDeadline: when Shutdown's context ends while a call hangs
// forever (the backend ignores cancellation), the gateway closes the call,
// the client sees UNAVAILABLE or CANCELED, and Shutdown returns.
func TestShutdownDeadline(t *testing.T) {
	for _, l := range drainListeners {
		t.Run(l.name, func(t *testing.T) {
			hs, backend := startHoldBackend(t)
			g, dialEdge := l.start(t, backend)
			tc := testgrpc.NewTestServiceClient(dialEdge(t))
			const unary, bidi = 1, 1
			results := heldCalls(t, hs, tc, unary, bidi)

			const grace = 300 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), grace)
			defer cancel()
			began := time.Now()
			shutdownDone := make(chan error, 1)
			go func() { shutdownDone <- g.Shutdown(ctx) }()
			select {
			case err := <-shutdownDone:
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown: %v", err)
				}
				if took := time.Since(began); took < grace {
					t.Errorf("Shutdown returned after %v, before its %v deadline, with a call in flight", took, grace)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Shutdown did not return after its context ended")
			}
			for range unary + bidi {
				select {
				case err := <-results:
					if c := status.Code(err); c != codes.Unavailable && c != codes.Canceled {
						t.Errorf("hung call: %v, want UNAVAILABLE or CANCELED", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("a hung call was not closed by Shutdown")
				}
			}
		})
	}
}

// TestShutdownEndsHealthWatch: a client watching health (grpc.health.v1
// Watch, as grpc-go's client-side health checking does) sees NOT_SERVING
// when the drain begins, and its stream ends then, so that it does not hold
// an otherwise idle gateway's Shutdown for the whole grace period.
func TestShutdownEndsHealthWatch(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			g := startGateway(t, drainConfig(proto, startBackend(t), ""))
			for _, listener := range []string{"edge", "admin"} {
				hc := healthpb.NewHealthClient(dial(t, g.Addr(listener).String()))
				waitHealth(t, hc, healthpb.HealthCheckResponse_SERVING)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.Recv(); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			began := time.Now()
			if err := g.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if took := time.Since(began); took > 2*time.Second {
				t.Errorf("Shutdown with only health watches open took %v", took)
			}
		})
	}
}
