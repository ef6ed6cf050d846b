package upstream

import (
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/roundrobin"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
)

// balancerName names the load balancing policy of every backend connection:
// grpc-go's round_robin, wrapped to report the state of each endpoint.
const balancerName = "gatehouse_endpoint_state_round_robin"

// BalancerServiceConfig is the service config of every backend connection:
// round-robin over the backend's endpoints, as
// {"loadBalancingConfig":[{"round_robin":{}}]} would, with per-endpoint
// states reported to the Pool.
const BalancerServiceConfig = `{"loadBalancingConfig":[{"` + balancerName + `":{}}]}`

// Why a registered balancer: grpc-go shows the connectivity state of a
// subchannel (one endpoint) only to the load balancing policy that created
// it, and a policy can be chosen only by name from grpc's global registry;
// there is no per-ClientConn way to install one. The alternatives found
// without registration are imprecise or global in other ways: a stats
// handler sees a transport before the server's preface arrives (it is not
// READY yet) and never sees a failed handshake, a context dialer sees TCP
// only, and channelz must be switched on process-wide by importing its
// service. So the wrapper is registered, once, on first use of New; it holds
// no state of its own — each connection's tracker reaches it through the
// resolver state's attributes.
var registerBalancer = sync.OnceFunc(func() {
	balancer.Register(trackingBuilder{})
})

// trackerKey is the resolver.State attribute key of a connection's tracker.
type trackerKey struct{}

// withTracker returns s with t attached for the wrapping balancer.
func withTracker(s resolver.State, t *tracker) resolver.State {
	s.Attributes = s.Attributes.WithValue(trackerKey{}, t)
	return s
}

// trackingBuilder builds round_robin balancers whose subchannel states are
// copied into the connection's tracker.
type trackingBuilder struct{}

func (trackingBuilder) Name() string { return balancerName }

func (trackingBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &trackingBalancer{}
	b.Balancer = balancer.Get(roundrobin.Name).Build(&trackingClientConn{ClientConn: cc, b: b}, opts)
	return b
}

// trackingBalancer is round_robin that learns its tracker from the resolver.
type trackingBalancer struct {
	balancer.Balancer // round_robin
	tracker           atomic.Pointer[tracker]
}

func (b *trackingBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	if t, ok := s.ResolverState.Attributes.Value(trackerKey{}).(*tracker); ok {
		b.tracker.Store(t)
	}
	return b.Balancer.UpdateClientConnState(s)
}

// trackingClientConn wraps the channel given to round_robin so that every
// subchannel it creates reports its state changes to the tracker too.
type trackingClientConn struct {
	balancer.ClientConn
	b *trackingBalancer
}

func (c *trackingClientConn) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	t := c.b.tracker.Load()
	if t == nil || len(addrs) == 0 {
		return c.ClientConn.NewSubConn(addrs, opts)
	}
	addr := addrs[0].Addr
	id := new(subConnID)
	listener := opts.StateListener
	opts.StateListener = func(s balancer.SubConnState) {
		t.set(addr, id, s.ConnectivityState)
		if listener != nil {
			listener(s)
		}
	}
	t.set(addr, id, connectivity.Idle)
	return c.ClientConn.NewSubConn(addrs, opts)
}

// subConnID identifies one subchannel in a tracker (by pointer).
type subConnID struct{ _ byte }

// tracker holds the state of each subchannel of one connection, by address.
// An address can have more than one subchannel for a while (when the
// balancer replaces one).
type tracker struct {
	mu     sync.Mutex
	byAddr map[string]map[*subConnID]connectivity.State
}

func newTracker() *tracker {
	return &tracker{byAddr: make(map[string]map[*subConnID]connectivity.State)}
}

func (t *tracker) set(addr string, id *subConnID, s connectivity.State) {
	t.mu.Lock()
	defer t.mu.Unlock()
	subs := t.byAddr[addr]
	if s == connectivity.Shutdown {
		delete(subs, id)
		if len(subs) == 0 {
			delete(t.byAddr, addr)
		}
		return
	}
	if subs == nil {
		subs = make(map[*subConnID]connectivity.State, 1)
		t.byAddr[addr] = subs
	}
	subs[id] = s
}

// state returns the best state of addr's subchannels (READY, CONNECTING,
// TRANSIENT_FAILURE, IDLE in that order), IDLE when it has none.
func (t *tracker) state(addr string) connectivity.State {
	t.mu.Lock()
	defer t.mu.Unlock()
	best := connectivity.Idle
	for _, s := range t.byAddr[addr] {
		if rank(s) > rank(best) {
			best = s
		}
	}
	return best
}

func rank(s connectivity.State) int {
	switch s {
	case connectivity.Ready:
		return 3
	case connectivity.Connecting:
		return 2
	case connectivity.TransientFailure:
		return 1
	}
	return 0
}
