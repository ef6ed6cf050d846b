package upstream

import (
	"errors"
	"fmt"
	"google.golang.org/grpc/stats"
	"maps"
	"slices"
	"sort"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// BackendState is a snapshot of one backend's connection.
type BackendState struct {
	// Name is the backend's name.
	Name string
	// State is the connectivity state of the backend as a whole: READY
	// when at least one endpoint is.
	State connectivity.State
	// Endpoints holds the state of each endpoint, in Spec order (for DNS
	// discovery: each resolved address, sorted).
	Endpoints []EndpointState
}

// EndpointState is the state of one endpoint of a backend.
type EndpointState struct {
	// Address is the endpoint as given in the Spec, or as resolved.
	Address string
	// State is the endpoint's state for traffic: its connectivity state,
	// or TRANSIENT_FAILURE while it is connected but fails its health
	// checks or is ejected as an outlier; IDLE before it first connects.
	State connectivity.State
	// Ejected reports an endpoint ejected as an outlier.
	Ejected bool
}

// Pool holds the connections to each backend: one grpc.ClientConn per
// backend and distinct retry policy, behind one guarded connection per
// backend. Its methods are safe for concurrent use.
type Pool struct {
	opts options

	mu       sync.RWMutex
	backends map[string]*backend
	eager    bool // Connect was called: connect new backends at once
	closed   bool
	drains   drains // removed backends finishing their calls
}

// backend is one backend's connections and what feeds them.
type backend struct {
	pool     *Pool
	spec     Spec
	tracker  *tracker
	shield   *shield
	outliers *outliers
	guard    *guard

	mu        sync.Mutex
	endpoints []string            // current addresses
	conns     map[string]*polConn // by RetryPolicy.key()
	eager     bool
	closed    bool
	dns       *dnsWatch // nil for static endpoints
}

// polConn is one grpc.ClientConn of a backend and its resolver.
type polConn struct {
	cc       *grpc.ClientConn
	resolver *manual.Resolver
}

// errClosed is returned by Update on a closed Pool.
var errClosed = errors.New("upstream: pool is closed")

// New returns a Pool with a connection to each backend of specs. Connections
// are created idle and connect on their first call, or at once after
// [Pool.Connect]. New never dials.
func New(specs []Spec, opts ...Option) (*Pool, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt.apply(&o)
	}
	registerBalancer()
	p := &Pool{opts: o, backends: make(map[string]*backend, len(specs))}
	if err := p.Update(specs); err != nil {
		return nil, err
	}
	return p, nil
}

// Conn returns the connection to the named backend: it applies the
// backend's circuit breaker and retry budget, and the retry policy a
// [CallPolicy] call option names. A removed backend that is still draining
// is found too. The connection belongs to the Pool: callers open streams on
// it and never close it.
func (p *Pool) Conn(name string) (grpc.ClientConnInterface, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	b, ok := p.backends[name]
	if !ok {
		return p.drains.conn(name) // removed but still draining (drain.go)
	}
	return b.guard, true
}

// Connect makes every backend connection, and those Update adds later,
// connect now rather than on its first call.
func (p *Pool) Connect() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.eager = true
	for _, b := range p.backends {
		b.connect()
	}
}

// Ready reports whether the named backend is reachable: at least one of its
// endpoints is READY (and, with health checks, healthy and not ejected).
func (p *Pool) Ready(name string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	b, ok := p.backends[name]
	return ok && b.ready()
}

// AllReady reports whether every backend is reachable (see [Pool.Ready]);
// true for an empty pool.
func (p *Pool) AllReady() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, b := range p.backends {
		if !b.ready() {
			return false
		}
	}
	return true
}

// NotReady returns the names of the backends without a reachable endpoint,
// sorted.
func (p *Pool) NotReady() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out []string
	for name, b := range p.backends {
		if !b.ready() {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func (b *backend) ready() bool {
	for _, e := range b.addrs() {
		if b.tracker.state(e) == connectivity.Ready {
			return true
		}
	}
	return false
}

// addrs returns the backend's current addresses.
func (b *backend) addrs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.endpoints)
}

// Backends returns the state of every backend, sorted by name.
func (p *Pool) Backends() []BackendState {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]BackendState, 0, len(p.backends))
	for name, b := range p.backends {
		addrs := b.addrs()
		bs := BackendState{Name: name, State: connectivity.Idle, Endpoints: make([]EndpointState, len(addrs))}
		for i, e := range addrs {
			st := b.tracker.state(e)
			bs.Endpoints[i] = EndpointState{Address: e, State: st, Ejected: b.outliers != nil && b.outliers.ejected(e)}
			if rank(st) > rank(bs.State) {
				bs.State = st
			}
		}
		out = append(out, bs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Update makes the pool hold exactly the backends of specs: it keeps the
// connections of a backend whose name and policies stay (sending them the
// new endpoints if they changed; calls in flight are not disturbed),
// creates connections for new backends, and drains those of removed ones
// and of ones whose policies changed: they are closed once their calls in
// flight have ended, or after the drain grace (see [WithDrainGrace]). On
// error, for example an invalid spec, the pool is unchanged.
func (p *Pool) Update(specs []Spec) error {
	if err := validate(specs); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errClosed
	}
	var retired []*backend
	keep := make(map[string]bool, len(specs))
	for _, s := range specs {
		keep[s.Name] = true
		old, ok := p.backends[s.Name]
		if ok && samePolicy(old.spec, s) {
			old.setSpecEndpoints(s)
			continue
		}
		if ok {
			retired = append(retired, old)
		}
		b := p.newBackend(s)
		p.backends[s.Name] = b
		if p.eager {
			b.connect()
		}
	}
	for name, b := range p.backends {
		if !keep[name] {
			retired = append(retired, b)
			delete(p.backends, name)
		}
	}
	for _, b := range retired {
		p.drains.start(b, p.opts.drainGrace)
	}
	return nil
}

// samePolicy reports whether a and b differ at most in their endpoints.
func samePolicy(a, b Spec) bool {
	a.Endpoints, b.Endpoints = nil, nil
	ha, hb, ba, bb, oa, ob := a.HealthCheck, b.HealthCheck, a.Breaker, b.Breaker, a.Outlier, b.Outlier
	a.HealthCheck, b.HealthCheck, a.Breaker, b.Breaker, a.Outlier, b.Outlier = nil, nil, nil, nil, nil, nil
	wa, wb := a.Weights, b.Weights
	a.Weights, b.Weights = nil, nil
	return a.Name == b.Name && a.Discovery == b.Discovery && a.DNSRefresh == b.DNSRefresh && a.Balancing == b.Balancing &&
		a.ConnectTimeout == b.ConnectTimeout && maps.Equal(wa, wb) && eqPtr(ha, hb) && eqPtr(ba, bb) && eqPtr(oa, ob)
}

func eqPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// Close closes every connection, draining ones included. The pool cannot
// be used afterwards.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	for name, b := range p.backends {
		b.close()
		delete(p.backends, name)
	}
	p.mu.Unlock()
	p.drains.closeAll()
}

// newBackend sets up s; its default connection is created idle.
func (p *Pool) newBackend(s Spec) *backend {
	b := &backend{
		pool:    p,
		spec:    s,
		tracker: newTracker(),
		shield:  newShield(s.Name, s.Breaker),
		conns:   make(map[string]*polConn),
	}
	b.guard = &guard{b: b}
	if s.Outlier != nil {
		b.outliers = newOutliers(*s.Outlier, p.opts.clock, func() int { return len(b.addrs()) })
	}
	if s.Discovery == DNS {
		b.dns = newDNSWatch(b, p.opts.lookupHost, p.opts.clock)
	} else {
		b.endpoints = slices.Clone(s.Endpoints)
	}
	b.mu.Lock()
	_, _ = b.connLocked(nil)
	b.mu.Unlock()
	if b.dns != nil {
		b.dns.start()
	}
	return b
}

// policy is the connPolicy of b's connections.
func (b *backend) policy() *connPolicy {
	bal := b.spec.Balancing
	if bal == "" {
		bal = RoundRobin
	}
	weighted := false
	for _, w := range b.spec.Weights {
		if w > 1 {
			weighted = true
		}
	}
	return &connPolicy{
		tracker:   b.tracker,
		balancing: bal,
		weighted:  weighted && bal == RoundRobin,
		health:    b.spec.HealthCheck,
		outliers:  b.outliers,
		budget:    b.shield.budget,
		clock:     b.pool.opts.clock,
	}
}

// conn returns the connection for retry policy rp, creating it on first
// use, and the backend's shield.
func (b *backend) conn(rp *RetryPolicy) (*grpc.ClientConn, *shield, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, nil, fmt.Errorf("upstream: backend %q: %w", b.spec.Name, errClosed)
	}
	pc, err := b.connLocked(rp)
	if err != nil {
		return nil, nil, err
	}
	return pc.cc, b.shield, nil
}

// connLocked returns or creates the connection of rp. The caller holds b.mu.
func (b *backend) connLocked(rp *RetryPolicy) (*polConn, error) {
	key := rp.key()
	if pc, ok := b.conns[key]; ok {
		return pc, nil
	}
	pc := &polConn{
		// A resolver of our own per connection, passed with WithResolvers:
		// nothing is registered globally.
		resolver: manual.NewBuilderWithScheme("gatehouse-upstream"),
	}
	pol := b.policy()
	if b.dns == nil || b.endpoints != nil {
		pc.resolver.InitialState(b.resolverState(pol))
	}
	sc := BalancerServiceConfig
	if rp != nil {
		sc = rp.serviceConfig()
	}
	dopts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(b.pool.opts.creds),
		grpc.WithResolvers(pc.resolver),
		grpc.WithDefaultServiceConfig(sc),
		grpc.WithStatsHandler(b.pool.statsHandler()),
		// A pooled connection stays connected so that its health shows;
		// grpc's default would drop it after 30 idle minutes.
		grpc.WithIdleTimeout(0),
		// Static flow-control windows: grpc-go's BDP estimation, which a
		// static window turns off, sends a PING whenever data arrives with
		// none outstanding, a write and a read per call on a busy
		// connection. Backends sit on a LAN, where these windows are
		// larger than the bandwidth-delay product.
		grpc.WithInitialWindowSize(backendStreamWindow),
		grpc.WithInitialConnWindowSize(backendConnWindow),
	}, b.pool.opts.dialOptions...)
	if d := b.spec.ConnectTimeout; d > 0 {
		// Before the pool's dial options, so that WithConnectTimeout
		// (and any WithConnectParams given there) wins.
		dopts = append([]grpc.DialOption{connectParams(d)}, dopts...)
	}
	cc, err := grpc.NewClient(pc.resolver.Scheme()+":///"+b.spec.Name, dopts...)
	if err != nil {
		return nil, fmt.Errorf("upstream: backend %q: %w", b.spec.Name, err)
	}
	pc.cc = cc
	b.conns[key] = pc
	if b.eager {
		cc.Connect()
	}
	return pc, nil
}

// statsHandler is the one stats handler of backend connections: the
// attempt tracker, then those of WithStatsHandler.
func (p *Pool) statsHandler() stats.Handler {
	if len(p.opts.statsHandlers) == 0 {
		return attemptTracker{}
	}
	return append(statsChain{attemptTracker{}}, p.opts.statsHandlers...)
}

// Flow-control windows of backend connections: per call and per
// connection.
const (
	backendStreamWindow = 1 << 20
	backendConnWindow   = 8 << 20
)

// resolverState is the resolver update for b's endpoints: one address per
// endpoint, its weight, and the policy for the balancer. The caller holds
// b.mu.
func (b *backend) resolverState(pol *connPolicy) resolver.State {
	s := resolver.State{Endpoints: make([]resolver.Endpoint, len(b.endpoints))}
	for i, e := range b.endpoints {
		ep := resolver.Endpoint{Addresses: []resolver.Address{{Addr: e}}}
		if w := b.weight(e); w > 1 {
			ep.Attributes = ep.Attributes.WithValue(weightKey{}, w)
		}
		s.Endpoints[i] = ep
	}
	return withPolicy(s, pol)
}

// weight is the configured weight of address addr (for DNS discovery, the
// weight of the name it came from).
func (b *backend) weight(addr string) uint32 {
	if w, ok := b.spec.Weights[addr]; ok {
		return w
	}
	if b.dns != nil {
		return b.spec.Weights[b.dns.origin(addr)]
	}
	return 1
}

// setEndpoints sends addrs to every connection of b.
func (b *backend) setEndpoints(addrs []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || (b.endpoints != nil && slices.Equal(b.endpoints, addrs)) {
		return
	}
	b.endpoints = slices.Clone(addrs)
	for _, pc := range b.conns {
		pc.resolver.UpdateState(b.resolverState(b.policy()))
	}
}

// setSpecEndpoints takes the endpoints of a new spec of b.
func (b *backend) setSpecEndpoints(s Spec) {
	b.mu.Lock()
	b.spec.Endpoints = slices.Clone(s.Endpoints)
	dns := b.dns
	b.mu.Unlock()
	if dns != nil {
		dns.refresh()
		return
	}
	b.setEndpoints(s.Endpoints)
}

func (b *backend) connect() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.eager = true
	for _, pc := range b.conns {
		pc.cc.Connect()
	}
}

func (b *backend) close() {
	b.mu.Lock()
	b.closed = true
	conns := b.conns
	b.conns = nil
	b.mu.Unlock()
	if b.dns != nil {
		b.dns.stop()
	}
	for _, pc := range conns {
		pc.cc.Close()
	}
	if b.outliers != nil {
		b.outliers.stop()
	}
}

func validate(specs []Spec) error {
	names := make(map[string]bool, len(specs))
	for _, s := range specs {
		if s.Name == "" {
			return errors.New("upstream: backend without a name")
		}
		if names[s.Name] {
			return fmt.Errorf("upstream: backend %q listed twice", s.Name)
		}
		names[s.Name] = true
		if len(s.Endpoints) == 0 {
			return fmt.Errorf("upstream: backend %q has no endpoints", s.Name)
		}
		seen := make(map[string]bool, len(s.Endpoints))
		for _, e := range s.Endpoints {
			if e == "" {
				return fmt.Errorf("upstream: backend %q has an empty endpoint", s.Name)
			}
			if seen[e] {
				return fmt.Errorf("upstream: backend %q lists endpoint %q twice", s.Name, e)
			}
			seen[e] = true
		}
	}
	return nil
}
