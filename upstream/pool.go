package upstream

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// Spec describes one backend.
type Spec struct {
	// Name identifies the backend in routes, logs and metrics. Unique in a
	// pool, not empty.
	Name string
	// Endpoints are the backend's addresses ("host:port"), balanced
	// round-robin. At least one, no duplicates.
	Endpoints []string
}

// BackendState is a snapshot of one backend's connection.
type BackendState struct {
	// Name is the backend's name.
	Name string
	// State is the connectivity state of the backend's connection as a
	// whole: READY when at least one endpoint is.
	State connectivity.State
	// Endpoints holds the state of each endpoint, in Spec order.
	Endpoints []EndpointState
}

// EndpointState is the connectivity state of one endpoint of a backend.
type EndpointState struct {
	// Address is the endpoint as given in the Spec.
	Address string
	// State is the endpoint's connectivity state; IDLE before the
	// connection first connects.
	State connectivity.State
}

// Pool holds one grpc.ClientConn per backend. Its methods are safe for
// concurrent use.
type Pool struct {
	opts options

	mu       sync.RWMutex
	backends map[string]*backend
	eager    bool // Connect was called: connect new backends at once
	closed   bool
}

// backend is one backend's connection and what feeds it.
type backend struct {
	endpoints []string
	cc        *grpc.ClientConn
	resolver  *manual.Resolver
	tracker   *tracker
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

// Conn returns the connection to the named backend. The connection belongs
// to the Pool: callers open streams on it and never close it.
func (p *Pool) Conn(name string) (grpc.ClientConnInterface, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	b, ok := p.backends[name]
	if !ok {
		return nil, false
	}
	return b.cc, true
}

// Connect makes every backend connection, and those Update adds later,
// connect now rather than on its first call.
func (p *Pool) Connect() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.eager = true
	for _, b := range p.backends {
		b.cc.Connect()
	}
}

// Ready reports whether the named backend is reachable: its connection, or
// at least one of its endpoints, is READY.
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

// ready reports whether b is reachable. The caller holds p.mu.
func (b *backend) ready() bool {
	if b.cc.GetState() == connectivity.Ready {
		return true
	}
	for _, e := range b.endpoints {
		if b.tracker.state(e) == connectivity.Ready {
			return true
		}
	}
	return false
}

// Backends returns the state of every backend, sorted by name.
func (p *Pool) Backends() []BackendState {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]BackendState, 0, len(p.backends))
	for name, b := range p.backends {
		bs := BackendState{
			Name:      name,
			State:     b.cc.GetState(),
			Endpoints: make([]EndpointState, len(b.endpoints)),
		}
		for i, e := range b.endpoints {
			bs.Endpoints[i] = EndpointState{Address: e, State: b.tracker.state(e)}
		}
		out = append(out, bs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Update makes the pool hold exactly the backends of specs: it keeps the
// connection of a backend whose name stays (sending it the new endpoints if
// they changed; calls in flight are not disturbed), creates connections for
// new backends and closes those of removed ones (failing their calls in
// flight). On error, for example an invalid spec, the pool is unchanged.
func (p *Pool) Update(specs []Spec) error {
	if err := validate(specs); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errClosed
	}
	added := make(map[string]*backend)
	for _, s := range specs {
		if _, ok := p.backends[s.Name]; ok {
			continue
		}
		b, err := p.newBackend(s)
		if err != nil {
			for _, b := range added {
				b.cc.Close()
			}
			return err
		}
		added[s.Name] = b
	}

	keep := make(map[string]bool, len(specs))
	for _, s := range specs {
		keep[s.Name] = true
		if b, ok := added[s.Name]; ok {
			p.backends[s.Name] = b
			if p.eager {
				b.cc.Connect()
			}
			continue
		}
		b := p.backends[s.Name]
		if !slices.Equal(b.endpoints, s.Endpoints) {
			b.endpoints = slices.Clone(s.Endpoints)
			b.resolver.UpdateState(resolverState(b.endpoints, b.tracker))
		}
	}
	for name, b := range p.backends {
		if !keep[name] {
			b.cc.Close()
			delete(p.backends, name)
		}
	}
	return nil
}

// Close closes every connection. The pool cannot be used afterwards.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for name, b := range p.backends {
		b.cc.Close()
		delete(p.backends, name)
	}
}

// newBackend creates the (idle) connection for s.
func (p *Pool) newBackend(s Spec) (*backend, error) {
	b := &backend{
		endpoints: slices.Clone(s.Endpoints),
		tracker:   newTracker(),
		// A resolver of our own per connection, passed with WithResolvers:
		// nothing is registered globally.
		resolver: manual.NewBuilderWithScheme("gatehouse-upstream"),
	}
	b.resolver.InitialState(resolverState(b.endpoints, b.tracker))
	dopts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(p.opts.creds),
		grpc.WithResolvers(b.resolver),
		grpc.WithDefaultServiceConfig(BalancerServiceConfig),
		// A pooled connection stays connected so that its health shows;
		// grpc's default would drop it after 30 idle minutes.
		grpc.WithIdleTimeout(0),
	}, p.opts.dialOptions...)
	cc, err := grpc.NewClient(b.resolver.Scheme()+":///"+s.Name, dopts...)
	if err != nil {
		return nil, fmt.Errorf("upstream: backend %q: %w", s.Name, err)
	}
	b.cc = cc
	return b, nil
}

// resolverState is the resolver update for endpoints: one address per
// endpoint, and the tracker for the balancer.
func resolverState(endpoints []string, t *tracker) resolver.State {
	s := resolver.State{Endpoints: make([]resolver.Endpoint, len(endpoints))}
	for i, e := range endpoints {
		s.Endpoints[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: e}}}
	}
	return withTracker(s, t)
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
