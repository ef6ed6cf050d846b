package upstream

import (
	"encoding/json"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/gatehouse-dev/gatehouse/internal/clock"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	_ "google.golang.org/grpc/balancer/leastrequest" // registers grpc-go's least_request_experimental
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/balancer/roundrobin"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// balancerName names the load balancing policy of every backend connection:
// grpc-go's policy of the backend's choice, wrapped to report the state of
// each endpoint, to run active health checks and to eject outliers.
const balancerName = "gatehouse_endpoint_state"

// BalancerServiceConfig is the service config of every backend connection
// without a retry policy.
const BalancerServiceConfig = `{"loadBalancingConfig":[{"` + balancerName + `":{}}]}`

// Why a registered balancer: grpc-go shows the connectivity state of a
// subchannel (one endpoint) only to the load balancing policy that created
// it, and a policy can be chosen only by name from grpc's global registry;
// there is no per-ClientConn way to install one. So the wrapper is
// registered, once, on first use of New; it holds no state of its own —
// each connection's policy (child policy, tracker, health check, outlier
// detector) reaches it through the resolver state's attributes.
//
// What it does, all through public grpc-go APIs:
//   - builds the child policy (round_robin, pick_first,
//     least_request_experimental, or a weighted round robin on
//     endpointsharding) directly, not by name;
//   - wraps every subchannel the child creates: its connectivity states go
//     to the tracker, and its health listener (pick_first's hook for
//     client-side health, gRFC A78) is fed by an active grpc.health.v1
//     Check poller run over the subchannel itself (a balancer producer) and
//     by outlier ejection, so an unhealthy or ejected endpoint is, to the
//     child, in TRANSIENT_FAILURE and gets no picks;
//   - wraps the child's picker to unwrap subchannels, count each call's
//     result per endpoint for outlier detection, and refuse a retry attempt
//     the retry budget has no room for.
//
// grpc-go's own outlier_detection_experimental is only reachable by
// importing its whole xDS stack, and its client-side health checking uses
// the Watch stream, which has no interval, timeout or thresholds; both are
// therefore done here, on the same hooks those use.
var registerBalancer = sync.OnceFunc(func() {
	balancer.Register(wrapperBuilder{})
})

// policyKey is the resolver.State attribute key of a connection's policy.
type policyKey struct{}

// weightKey is the resolver.Endpoint attribute key of an endpoint weight.
type weightKey struct{}

// connPolicy is what one connection's wrapper needs from the pool.
type connPolicy struct {
	tracker   *tracker
	balancing Balancing
	weighted  bool
	health    *HealthCheck // nil: no active checks
	outliers  *outliers    // nil: no ejection
	budget    *budget
	clock     Clock
}

// withPolicy returns s with p attached for the wrapping balancer.
func withPolicy(s resolver.State, p *connPolicy) resolver.State {
	s.Attributes = s.Attributes.WithValue(policyKey{}, p)
	return s
}

type wrapperBuilder struct{}

func (wrapperBuilder) Name() string { return balancerName }

func (wrapperBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	return &wrapper{cc: cc, opts: opts}
}

func (wrapperBuilder) ParseConfig(json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	return nil, nil
}

// wrapper is the connection's balancer: the child policy, wrapped.
type wrapper struct {
	cc   balancer.ClientConn
	opts balancer.BuildOptions

	// mu serialises calls into the child: grpc-go serialises its own
	// calls, and health and ejection updates come from other goroutines.
	mu     sync.Mutex
	child  balancer.Balancer
	config serviceconfig.LoadBalancingConfig
	pol    atomic.Pointer[connPolicy]
	closed bool
}

func (b *wrapper) UpdateClientConnState(s balancer.ClientConnState) error {
	pol, _ := s.ResolverState.Attributes.Value(policyKey{}).(*connPolicy)
	if pol == nil {
		pol = &connPolicy{tracker: newTracker(), balancing: RoundRobin, clock: clock.Real{}}
	}
	b.pol.Store(pol)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.child == nil {
		b.buildChild(pol)
	}
	s.BalancerConfig = b.config
	if pol.balancing == PickFirst && (pol.health != nil || pol.outliers != nil) {
		s.ResolverState = pickfirst.EnableHealthListener(s.ResolverState)
	}
	return b.child.UpdateClientConnState(s)
}

// buildChild builds the child policy of pol. The caller holds b.mu.
func (b *wrapper) buildChild(pol *connPolicy) {
	cc := &wrapperClientConn{ClientConn: b.cc, b: b}
	switch {
	case pol.balancing == PickFirst:
		b.child = balancer.Get(pickfirst.Name).Build(cc, b.opts)
	case pol.balancing == LeastRequest:
		bb := balancer.Get("least_request_experimental")
		b.config, _ = bb.(balancer.ConfigParser).ParseConfig(json.RawMessage(`{"choiceCount":2}`))
		b.child = bb.Build(cc, b.opts)
	case pol.weighted:
		b.child = &weightedRR{Balancer: endpointsharding.NewBalancer(&weightedClientConn{ClientConn: cc}, b.opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})}
	default:
		b.child = balancer.Get(roundrobin.Name).Build(cc, b.opts)
	}
}

func (b *wrapper) ResolverError(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.child != nil {
		b.child.ResolverError(err)
	}
}

func (b *wrapper) UpdateSubConnState(sc balancer.SubConn, s balancer.SubConnState) {}

func (b *wrapper) ExitIdle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.child != nil {
		if ei, ok := b.child.(interface{ ExitIdle() }); ok {
			ei.ExitIdle()
		}
	}
}

func (b *wrapper) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.child != nil {
		b.child.Close()
	}
}

// wrapperClientConn is the channel as the child sees it: its subchannels
// are wrapped and its pickers too.
type wrapperClientConn struct {
	balancer.ClientConn
	b *wrapper
}

func (c *wrapperClientConn) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	pol := c.b.pol.Load()
	if pol == nil || len(addrs) == 0 {
		return c.ClientConn.NewSubConn(addrs, opts)
	}
	sc := &subConn{b: c.b, pol: pol, addr: addrs[0].Addr, id: new(subConnID)}
	listener := opts.StateListener
	opts.StateListener = func(s balancer.SubConnState) {
		sc.connectivity(s.ConnectivityState)
		if listener != nil {
			listener(s)
		}
	}
	inner, err := c.ClientConn.NewSubConn(addrs, opts)
	if err != nil {
		return nil, err
	}
	sc.SubConn = inner
	pol.tracker.set(sc.addr, sc.id, connectivity.Idle)
	if pol.outliers != nil {
		pol.outliers.add(sc)
	}
	return sc, nil
}

func (c *wrapperClientConn) UpdateState(s balancer.State) {
	if s.Picker != nil {
		s.Picker = &picker{child: s.Picker, pol: c.b.pol.Load()}
	}
	c.ClientConn.UpdateState(s)
}

// picker unwraps the child's picks, counts their results per endpoint and
// refuses retries over the budget.
type picker struct {
	child balancer.Picker
	pol   *connPolicy
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	if a := attemptFrom(info.Ctx); a != nil && a.denied {
		// A status error drops the call (no more retries) with the last
		// attempt's own status: the retry budget is spent.
		return balancer.PickResult{}, a.call.lastStatus().Err()
	}
	r, err := p.child.Pick(info)
	if err != nil {
		return r, err
	}
	sc, ok := r.SubConn.(*subConn)
	if !ok {
		return r, nil
	}
	r.SubConn = sc.SubConn
	if o := p.pol.outliers; o != nil {
		done := r.Done
		r.Done = func(di balancer.DoneInfo) {
			o.result(sc.addr, di.Err)
			if done != nil {
				done(di)
			}
		}
	}
	return r, nil
}

// subConnID identifies one subchannel in a tracker (by pointer).
type subConnID struct{ _ byte }

// tracker holds the effective state of each subchannel of one backend, by
// address: its connectivity state, or TRANSIENT_FAILURE while it is READY
// but unhealthy or ejected. An address can have more than one subchannel
// (when the balancer replaces one, or several connections reach it).
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

// addrs returns every address with a subchannel, sorted.
func (t *tracker) addrs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.byAddr))
	for a := range t.byAddr {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
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
