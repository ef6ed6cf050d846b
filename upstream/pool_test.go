package upstream

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"
)

const testTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startBackend serves the interop TestService on 127.0.0.1:0 until the test
// ends (or stop is called) and returns its address.
func startBackend(t *testing.T) (addr string, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	stop = func() {
		s.Stop()
		<-done
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func newPool(t *testing.T, specs []Spec, opts ...Option) *Pool {
	t.Helper()
	p, err := New(specs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// waitFor polls cond until it holds or the test times out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// endpointStates returns the states of backend name's endpoints by address.
func endpointStates(p *Pool, name string) map[string]connectivity.State {
	for _, b := range p.Backends() {
		if b.Name == name {
			m := make(map[string]connectivity.State, len(b.Endpoints))
			for _, e := range b.Endpoints {
				m[e.Address] = e.State
			}
			return m
		}
	}
	return nil
}

func client(t *testing.T, p *Pool, name string) testgrpc.TestServiceClient {
	t.Helper()
	cc, ok := p.Conn(name)
	if !ok {
		t.Fatalf("Conn(%q) not found", name)
	}
	return testgrpc.NewTestServiceClient(cc)
}

// servedBy returns the address of the endpoint that served one call.
func servedBy(t *testing.T, c testgrpc.TestServiceClient) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var pr peer.Peer
	if _, err := c.EmptyCall(ctx, &testpb.Empty{}, grpc.Peer(&pr)); err != nil {
		t.Fatal(err)
	}
	return pr.Addr.String()
}

func TestRoundRobinSpreadsCalls(t *testing.T) {
	a, _ := startBackend(t)
	b, _ := startBackend(t)
	p := newPool(t, []Spec{{Name: "svc", Endpoints: []string{a, b}}})
	p.Connect()
	waitFor(t, "both endpoints READY", func() bool {
		s := endpointStates(p, "svc")
		return s[a] == connectivity.Ready && s[b] == connectivity.Ready
	})
	c := client(t, p, "svc")
	counts := map[string]int{}
	const calls = 20
	for range calls {
		counts[servedBy(t, c)]++
	}
	if counts[a] != calls/2 || counts[b] != calls/2 {
		t.Fatalf("calls per endpoint = %v, want %d each on %s and %s", counts, calls/2, a, b)
	}
}

func TestEndpointStates(t *testing.T) {
	live, stopLive := startBackend(t)
	dead := deadAddr(t)
	p := newPool(t, []Spec{
		{Name: "mixed", Endpoints: []string{live, dead}},
		{Name: "down", Endpoints: []string{dead}},
	})

	// Before Connect nothing dials.
	for _, b := range p.Backends() {
		if b.State != connectivity.Idle {
			t.Fatalf("backend %s is %v before Connect, want IDLE", b.Name, b.State)
		}
		for _, e := range b.Endpoints {
			if e.State != connectivity.Idle {
				t.Fatalf("endpoint %s of %s is %v before Connect, want IDLE", e.Address, b.Name, e.State)
			}
		}
	}
	if p.Ready("mixed") || p.AllReady() {
		t.Fatal("ready before Connect")
	}

	p.Connect()
	waitFor(t, "live READY and dead TRANSIENT_FAILURE", func() bool {
		s := endpointStates(p, "mixed")
		return s[live] == connectivity.Ready && s[dead] == connectivity.TransientFailure
	})
	waitFor(t, "down backend TRANSIENT_FAILURE", func() bool {
		return endpointStates(p, "down")[dead] == connectivity.TransientFailure
	})
	if !p.Ready("mixed") {
		t.Error("Ready(mixed) = false with one READY endpoint")
	}
	if p.Ready("down") || p.AllReady() {
		t.Error("Ready(down) or AllReady() true with backend down")
	}
	if p.Ready("nonexistent") {
		t.Error("Ready(nonexistent) = true")
	}
	got := p.Backends()
	if len(got) != 2 || got[0].Name != "down" || got[1].Name != "mixed" {
		t.Fatalf("Backends() = %+v, want down and mixed in that order", got)
	}
	if got[1].State != connectivity.Ready || got[1].Endpoints[0].Address != live {
		t.Errorf("mixed = %+v, want READY with endpoints in spec order", got[1])
	}

	// The live endpoint goes away: its state follows.
	stopLive()
	waitFor(t, "stopped endpoint leaves READY", func() bool {
		return endpointStates(p, "mixed")[live] != connectivity.Ready
	})
	waitFor(t, "mixed not ready", func() bool { return !p.Ready("mixed") })
}

func TestUpdate(t *testing.T) {
	a, _ := startBackend(t)
	b, _ := startBackend(t)
	p := newPool(t, []Spec{
		{Name: "kept", Endpoints: []string{a}},
		{Name: "moved", Endpoints: []string{a}},
		{Name: "removed", Endpoints: []string{a}},
	})
	p.Connect()
	kept, _ := p.Conn("kept")
	moved, _ := p.Conn("moved")
	removed, _ := p.Conn("removed")
	if got := servedBy(t, client(t, p, "moved")); got != a {
		t.Fatalf("moved served by %s, want %s", got, a)
	}

	if err := p.Update([]Spec{
		{Name: "kept", Endpoints: []string{a}},
		{Name: "moved", Endpoints: []string{b}},
		{Name: "added", Endpoints: []string{b}},
	}); err != nil {
		t.Fatal(err)
	}
	if c, _ := p.Conn("kept"); c != kept {
		t.Error("Update replaced the connection of an unchanged backend")
	}
	if c, _ := p.Conn("moved"); c != moved {
		t.Error("Update replaced the connection of a backend whose endpoints changed")
	}
	for _, bs := range p.Backends() {
		if bs.Name == "removed" {
			t.Error("removed backend still listed")
		}
	}
	// No call in flight: the removed backend's drain closes it at once,
	// and then Conn no longer finds it.
	waitFor(t, "removed backend's connection to shut down", func() bool {
		return connState(removed) == connectivity.Shutdown
	})
	if _, ok := p.Conn("removed"); ok {
		t.Error("removed backend still present after its drain")
	}
	waitFor(t, "moved backend to use its new endpoint", func() bool {
		return servedBy(t, client(t, p, "moved")) == b
	})
	if got := servedBy(t, client(t, p, "added")); got != b {
		t.Errorf("added served by %s, want %s", got, b)
	}
	if got := servedBy(t, client(t, p, "kept")); got != a {
		t.Errorf("kept served by %s, want %s", got, a)
	}
	waitFor(t, "moved endpoints to be reported", func() bool {
		s := endpointStates(p, "moved")
		_, old := s[a]
		return !old && s[b] == connectivity.Ready
	})
	waitFor(t, "added backend READY after Connect", func() bool { return p.Ready("added") })

	p.Close()
	if err := p.Update(nil); err == nil {
		t.Error("Update after Close succeeded")
	}
	if s := connState(kept); s != connectivity.Shutdown {
		t.Errorf("after Close kept is %v, want SHUTDOWN", s)
	}
}

func TestInvalidSpecs(t *testing.T) {
	tests := []struct {
		name  string
		specs []Spec
	}{
		{"no name", []Spec{{Endpoints: []string{"127.0.0.1:1"}}}},
		{"duplicate name", []Spec{{Name: "a", Endpoints: []string{"127.0.0.1:1"}}, {Name: "a", Endpoints: []string{"127.0.0.1:2"}}}},
		{"no endpoints", []Spec{{Name: "a"}}},
		{"empty endpoint", []Spec{{Name: "a", Endpoints: []string{""}}}},
		{"duplicate endpoint", []Spec{{Name: "a", Endpoints: []string{"127.0.0.1:1", "127.0.0.1:1"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := New(tt.specs); err == nil {
				p.Close()
				t.Fatalf("New(%+v) succeeded, want an error", tt.specs)
			}
		})
	}

	// A failed Update leaves the pool as it was.
	p := newPool(t, []Spec{{Name: "a", Endpoints: []string{"127.0.0.1:1"}}})
	before, _ := p.Conn("a")
	if err := p.Update([]Spec{{Name: "b"}}); err == nil {
		t.Fatal("Update with an invalid spec succeeded")
	}
	if after, ok := p.Conn("a"); !ok || after != before {
		t.Fatal("failed Update changed the pool")
	}
}

// connState is the state of the default connection behind a pool's
// connection, SHUTDOWN once it is closed.
func connState(c grpc.ClientConnInterface) connectivity.State {
	b := c.(*guard).b
	b.mu.Lock()
	defer b.mu.Unlock()
	if pc, ok := b.conns[""]; ok {
		return pc.cc.GetState()
	}
	return connectivity.Shutdown
}
