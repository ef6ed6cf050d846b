package transcode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// Source says where one backend's schema comes from.
type Source struct {
	// Backend names the backend.
	Backend string
	// DescriptorSet is a descriptor set file, reread on every Update.
	DescriptorSet string
	// Reflection fetches the schema by server reflection of the backend, on
	// every Update and every RefreshInterval.
	Reflection bool
	// RefreshInterval is the time between reflection fetches.
	RefreshInterval time.Duration
	// AutoMapping serves POST /pkg.Service/Method for methods without a
	// google.api.http annotation.
	AutoMapping bool
}

func (s Source) describe() string {
	switch {
	case s.DescriptorSet != "":
		return "descriptor_set " + s.DescriptorSet
	case s.Reflection:
		return "reflection"
	}
	return "none"
}

// ConnFunc returns the connection to a backend; reflection is fetched over
// it.
type ConnFunc func(backend string) (grpc.ClientConnInterface, bool)

// Manager keeps every backend's schema: it loads them on Update, refreshes
// reflection sources on their interval, keeps a backend's last good schema
// when a load fails, and publishes a new Set when any schema changes.
type Manager struct {
	conn     ConnFunc
	log      *slog.Logger
	onChange func(*Set)
	timeout  time.Duration

	set atomic.Pointer[Set]

	mu      sync.Mutex // serializes loads and publishing
	sources []Source
	state   map[string]*backendState
	closed  bool
	wg      sync.WaitGroup
}

type backendState struct {
	src    Source
	good   *Schema // last good schema, nil when none
	err    error   // last load error, nil after a success
	cancel context.CancelFunc
}

// ManagerOption configures a Manager.
type ManagerOption interface{ apply(*Manager) }

type managerOptionFunc func(*Manager)

func (f managerOptionFunc) apply(m *Manager) { f(m) }

// WithLogger sets the logger for load errors and schema changes.
func WithLogger(l *slog.Logger) ManagerOption {
	return managerOptionFunc(func(m *Manager) {
		if l != nil {
			m.log = l
		}
	})
}

// WithOnChange sets a function called with the new Set each time it
// changes. Calls are serialized; it must not call Update.
func WithOnChange(f func(*Set)) ManagerOption {
	return managerOptionFunc(func(m *Manager) { m.onChange = f })
}

// WithFetchTimeout bounds one reflection fetch. Default 5s.
func WithFetchTimeout(d time.Duration) ManagerOption {
	return managerOptionFunc(func(m *Manager) {
		if d > 0 {
			m.timeout = d
		}
	})
}

// NewManager returns a Manager with no sources; Update gives it some.
func NewManager(conn ConnFunc, opts ...ManagerOption) *Manager {
	m := &Manager{
		conn:    conn,
		log:     slog.New(slog.DiscardHandler),
		timeout: 5 * time.Second,
		state:   map[string]*backendState{},
	}
	for _, o := range opts {
		o.apply(m)
	}
	m.set.Store(NewSet(nil))
	return m
}

// Set returns the current Set.
func (m *Manager) Set() *Set { return m.set.Load() }

// Errors returns the last load error of each backend whose schema failed to
// load, by backend.
func (m *Manager) Errors() map[string]error {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]error{}
	for name, st := range m.state {
		if st.err != nil {
			out[name] = st.err
		}
	}
	return out
}

// Update puts sources in force: descriptor sets are reread and reflection
// fetched now (in parallel), backends no longer listed are dropped, and
// reflection sources are refreshed every interval from now on. It returns
// the load errors, each a *LoadError naming its backend; the backends
// concerned keep their last good schema.
func (m *Manager) Update(ctx context.Context, sources []Source) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("transcode: manager closed")
	}
	m.sources = slices.Clone(sources)
	keep := map[string]bool{}
	for _, src := range sources {
		keep[src.Backend] = true
		st, ok := m.state[src.Backend]
		if !ok {
			st = &backendState{}
			m.state[src.Backend] = st
		}
		if st.src.describe() != src.describe() && st.src.Backend != "" {
			// A new source: the old schema serves until the new one loads.
			st.err = nil
		}
		st.src = src
	}
	for name, st := range m.state {
		if !keep[name] {
			if st.cancel != nil {
				st.cancel()
			}
			delete(m.state, name)
		}
	}

	// Load every source in parallel.
	results := make([]*Schema, len(sources))
	errs := make([]error, len(sources))
	var wg sync.WaitGroup
	for i, src := range sources {
		wg.Go(func() { results[i], errs[i] = m.load(ctx, src) })
	}
	wg.Wait()
	for i, src := range sources {
		m.record(src.Backend, results[i], errs[i])
	}
	m.publish()

	// (Re)start the refresh loops.
	for _, src := range sources {
		st := m.state[src.Backend]
		if st.cancel != nil {
			st.cancel()
			st.cancel = nil
		}
		if src.Reflection && src.RefreshInterval > 0 {
			lctx, cancel := context.WithCancel(context.Background())
			st.cancel = cancel
			m.wg.Go(func() { m.refresh(lctx, src) })
		}
	}
	return errors.Join(errs...)
}

// load loads one source.
func (m *Manager) load(ctx context.Context, src Source) (*Schema, error) {
	wrap := func(err error) error { return &LoadError{Backend: src.Backend, Source: src.describe(), Err: err} }
	switch {
	case src.DescriptorSet != "":
		fds, err := ReadDescriptorSet(src.DescriptorSet)
		if err != nil {
			return nil, wrap(err)
		}
		s, err := NewSchema(src.Backend, src.describe(), fds.GetFile(), nil, src.AutoMapping)
		if err != nil {
			return nil, wrap(err)
		}
		return s, nil
	case src.Reflection:
		cc, ok := m.conn(src.Backend)
		if !ok {
			return nil, wrap(fmt.Errorf("no connection to the backend"))
		}
		ctx, cancel := context.WithTimeout(ctx, m.timeout)
		defer cancel()
		files, services, err := FetchReflection(ctx, cc)
		if err != nil {
			return nil, wrap(err)
		}
		s, err := NewSchema(src.Backend, src.describe(), files, services, src.AutoMapping)
		if err != nil {
			return nil, wrap(err)
		}
		return s, nil
	}
	return nil, wrap(errNoSource)
}

// record notes the outcome of one load. The caller holds m.mu.
func (m *Manager) record(backend string, s *Schema, err error) {
	st, ok := m.state[backend]
	if !ok {
		return // dropped meanwhile
	}
	if err != nil {
		if st.err == nil || st.err.Error() != err.Error() {
			if st.good != nil {
				m.log.Error("schema load failed; the last good schema keeps serving", "backend", backend, "error", err)
			} else {
				m.log.Error("schema load failed; the backend has no REST routes until it loads", "backend", backend, "error", err)
			}
		}
		st.err = err
		return
	}
	if st.err != nil {
		m.log.Info("schema loaded again", "backend", backend, "source", s.Source)
	}
	st.err = nil
	if st.good != nil && st.good.Digest == s.Digest {
		return
	}
	if st.good != nil {
		m.log.Info("schema changed", "backend", backend, "source", s.Source, "services", len(s.Services))
	}
	st.good = s
}

// publish builds the Set from the good schemas and, when it differs from
// the current one, stores it and calls onChange. The caller holds m.mu.
func (m *Manager) publish() {
	var schemas []*Schema
	for _, src := range m.sources {
		if st := m.state[src.Backend]; st != nil && st.good != nil {
			schemas = append(schemas, st.good)
		}
	}
	cur := m.set.Load()
	if slices.Equal(cur.schemas, schemas) {
		return
	}
	next := NewSet(schemas)
	m.set.Store(next)
	if m.onChange != nil {
		m.onChange(next)
	}
}

// refresh fetches a reflection source every interval until ctx ends; after
// a failure it retries sooner, backing off from one second.
func (m *Manager) refresh(ctx context.Context, src Source) {
	wait := src.RefreshInterval
	m.mu.Lock()
	if st := m.state[src.Backend]; st != nil && st.err != nil {
		wait = min(time.Second, src.RefreshInterval)
	}
	m.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s, err := m.load(ctx, src)
		if ctx.Err() != nil {
			return
		}
		m.mu.Lock()
		if m.closed || ctx.Err() != nil { // replaced by an Update meanwhile
			m.mu.Unlock()
			return
		}
		m.record(src.Backend, s, err)
		m.publish()
		m.mu.Unlock()
		next := src.RefreshInterval
		if err != nil {
			next = min(backoff, src.RefreshInterval)
			backoff = min(2*backoff, src.RefreshInterval)
		} else {
			backoff = time.Second
		}
		t.Reset(next)
	}
}

// Close stops every refresh loop and waits for them.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	for _, st := range m.state {
		if st.cancel != nil {
			st.cancel()
		}
	}
	m.mu.Unlock()
	m.wg.Wait()
}
