package upstream

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// guard is the connection the router gets for a backend: a
// grpc.ClientConnInterface that applies the backend's circuit breaker and
// caps, picks the backend connection of the call's retry policy and tracks
// the call's attempts for the retry budget.
type guard struct {
	b *backend
}

var _ grpc.ClientConnInterface = (*guard)(nil)

// Counters are a backend's call counts since the pool started.
type Counters struct {
	// Calls started through the pool (hedged attempts count as calls).
	Calls uint64
	// Attempts made on the wire, retries included.
	Attempts uint64
	// Retries are attempts after the first (not transparent ones).
	Retries uint64
	// RetriesDenied are retries the budget refused.
	RetriesDenied uint64
	// Rejected are calls failed fast by the caps or the open breaker.
	Rejected uint64
}

// shield is a backend's breaker state, kept across config updates.
type shield struct {
	name     string
	cfg      Breaker
	breaker  *gobreaker.TwoStepCircuitBreaker[struct{}] // nil: off
	inflight atomic.Int64
	pending  atomic.Int64
	budget   *budget
	counters struct {
		calls, attempts, retries, denied, rejected atomic.Uint64
	}
}

func newShield(name string, cfg *Breaker) *shield {
	s := &shield{name: name, budget: &budget{}}
	if cfg == nil {
		return s
	}
	s.cfg = *cfg
	if cfg.ConsecutiveFailures > 0 || cfg.FailureRatio > 0 {
		s.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        name,
			MaxRequests: uint32(max(1, cfg.HalfOpenProbes)),
			Interval:    cfg.Window,
			Timeout:     cfg.OpenFor,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				if cfg.ConsecutiveFailures > 0 && c.ConsecutiveFailures >= uint32(cfg.ConsecutiveFailures) {
					return true
				}
				// The ratio is over calls with a result: calls still in
				// flight and neutral ones (see breakerNeutral) do not count.
				done := c.TotalSuccesses + c.TotalFailures
				return cfg.FailureRatio > 0 && done >= uint32(max(1, cfg.MinRequests)) &&
					float64(c.TotalFailures)/float64(done) >= cfg.FailureRatio
			},
			IsSuccessful: func(err error) bool { return !breakerFailure(err) },
			IsExcluded:   breakerNeutral,
		})
	}
	return s
}

// breakerFailure reports whether a call's result counts against the
// backend: unreachable, timed out or broken, not a refusal of the request.
func breakerFailure(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.DataLoss:
		return true
	}
	return false
}

// errNotCounted is the result of a call that ends without the backend
// having answered it for reasons of the gateway's own, such as the
// max_pending cap: the breaker releases its slot (a half-open probe slot
// too) without counting a success or a failure.
var errNotCounted = errors.New("upstream: call ended before the backend answered; not counted")

// breakerNeutral reports whether a call's result is neither a success nor
// a failure for the breaker: a call that never reached the backend
// (errNotCounted) or that the client cancelled (CANCELLED), which says
// nothing about the backend. Counted as successes, either could close a
// half-open breaker without the backend having answered.
func breakerNeutral(err error) bool {
	return errors.Is(err, errNotCounted) || errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled
}

// admit lets a call in or fails it fast; done must be called with the
// call's result (errNotCounted when the backend was never asked).
func (s *shield) admit() (done func(error), err error) {
	if max := s.cfg.MaxConcurrent; max > 0 && s.inflight.Add(1) > int64(max) {
		s.inflight.Add(-1)
		s.counters.rejected.Add(1)
		return nil, status.Errorf(codes.Unavailable, "gatehouse: backend %q: %d calls in flight, the circuit_breaker.max_concurrent cap", s.name, max)
	} else if max <= 0 {
		s.inflight.Add(1)
	}
	var bdone func(error)
	if s.breaker != nil {
		var berr error
		bdone, berr = s.breaker.Allow()
		if berr != nil {
			s.inflight.Add(-1)
			s.counters.rejected.Add(1)
			if errors.Is(berr, gobreaker.ErrTooManyRequests) {
				return nil, status.Errorf(codes.Unavailable, "gatehouse: backend %q: circuit breaker half-open, %d probe calls in flight already", s.name, max(1, s.cfg.HalfOpenProbes))
			}
			return nil, status.Errorf(codes.Unavailable, "gatehouse: backend %q: circuit breaker open (consecutive_failures %d, failure_ratio %g); calls fail fast for %v", s.name, s.cfg.ConsecutiveFailures, s.cfg.FailureRatio, s.cfg.OpenFor)
		}
	}
	var once sync.Once
	return func(err error) {
		once.Do(func() {
			s.inflight.Add(-1)
			if bdone != nil {
				bdone(err)
			}
		})
	}, nil
}

// budget is the retry budget of a backend: each call adds its route's
// budget_percent/100 of a token, each retry spends one, so that retries
// stay within that share of the calls. Up to burst tokens are saved for
// quiet periods.
type budget struct {
	mu     sync.Mutex
	tokens float64
}

const budgetBurst = 10

func (b *budget) credit(percent int) {
	b.mu.Lock()
	b.tokens = min(b.tokens+float64(percent)/100, budgetBurst)
	b.mu.Unlock()
}

func (b *budget) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// call is one call's record, shared by its attempts.
type call struct {
	s        *shield
	attempts atomic.Int32
	mu       sync.Mutex
	last     error // the last attempt's error
}

func (c *call) lastStatus() *status.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		return status.New(codes.Unavailable, "gatehouse: retry budget exhausted")
	}
	return status.Convert(c.last)
}

// attempt is one attempt of a call, found by the picker in its context.
type attempt struct {
	call   *call
	denied bool
}

type callKey struct{}
type attemptKey struct{}

func attemptFrom(ctx context.Context) *attempt {
	if ctx == nil {
		return nil
	}
	a, _ := ctx.Value(attemptKey{}).(*attempt)
	return a
}

// statsChain runs several stats handlers as one: each TagRPC and TagConn
// in order on the context the previous returned, each HandleRPC and
// HandleConn in order.
type statsChain []stats.Handler

func (c statsChain) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	for _, h := range c {
		ctx = h.TagRPC(ctx, info)
	}
	return ctx
}

func (c statsChain) HandleRPC(ctx context.Context, s stats.RPCStats) {
	for _, h := range c {
		h.HandleRPC(ctx, s)
	}
}

func (c statsChain) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	for _, h := range c {
		ctx = h.TagConn(ctx, info)
	}
	return ctx
}

func (c statsChain) HandleConn(ctx context.Context, s stats.ConnStats) {
	for _, h := range c {
		h.HandleConn(ctx, s)
	}
}

// attemptTracker is the stats handler of backend connections: grpc-go
// tags each attempt (retries included) with TagRPC before picking it,
// which lets the budget refuse a retry at pick time.
type attemptTracker struct{}

func (attemptTracker) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	c, _ := ctx.Value(callKey{}).(*call)
	if c == nil {
		return ctx
	}
	return context.WithValue(ctx, attemptKey{}, &attempt{call: c})
}

func (attemptTracker) HandleRPC(ctx context.Context, s stats.RPCStats) {
	a, _ := ctx.Value(attemptKey{}).(*attempt)
	if a == nil {
		return
	}
	switch s := s.(type) {
	case *stats.Begin:
		n := a.call.attempts.Add(1)
		if n == 1 || s.IsTransparentRetryAttempt {
			a.call.s.counters.attempts.Add(1)
			return
		}
		if !a.call.s.budget.take() {
			a.denied = true
			a.call.s.counters.denied.Add(1)
			return
		}
		a.call.s.counters.attempts.Add(1)
		a.call.s.counters.retries.Add(1)
	case *stats.End:
		a.call.mu.Lock()
		a.call.last = s.Error
		a.call.mu.Unlock()
	}
}

func (attemptTracker) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (attemptTracker) HandleConn(context.Context, stats.ConnStats) {}

func (g *guard) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	cs, err := g.NewStream(ctx, &grpc.StreamDesc{}, method, opts...)
	if err != nil {
		return err
	}
	if err := cs.SendMsg(args); err != nil {
		_ = cs.RecvMsg(reply)
		return err
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	return cs.RecvMsg(reply)
}

func (g *guard) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	pol := callPolicy(opts)
	var rp *RetryPolicy
	percent := 20
	if pol != nil {
		rp = pol.Retry
		percent = pol.BudgetPercent
		if rp.key() != "" && pol.BufferBytes > 0 {
			opts = append(opts, grpc.MaxRetryRPCBufferSize(pol.BufferBytes))
		}
	}
	cc, s, err := g.b.conn(rp)
	if err != nil {
		return nil, err
	}
	done, err := s.admit()
	if err != nil {
		return nil, err
	}
	s.counters.calls.Add(1)
	s.budget.credit(percent)
	ctx = context.WithValue(ctx, callKey{}, &call{s: s})

	if max := s.cfg.MaxPending; max > 0 && s.pending.Add(1) > int64(max) {
		s.pending.Add(-1)
		s.counters.rejected.Add(1)
		err := status.Errorf(codes.Unavailable, "gatehouse: backend %q: %d calls waiting for a connection, the circuit_breaker.max_pending cap", s.name, max)
		done(errNotCounted) // the backend was not asked: neither success nor failure
		return nil, err
	} else if max > 0 {
		defer s.pending.Add(-1)
	}
	cs, err := cc.NewStream(ctx, desc, method, opts...)
	if err != nil {
		done(err)
		return nil, err
	}
	gs := &guardedStream{ClientStream: cs, done: done, single: !desc.ServerStreams}
	gs.stop = context.AfterFunc(ctx, func() { done(status.FromContextError(ctx.Err()).Err()) })
	return gs, nil
}

// guardedStream reports the call's result to the breaker when it ends.
type guardedStream struct {
	grpc.ClientStream
	done   func(error)
	stop   func() bool
	single bool // one response: the call ends with it
}

func (s *guardedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil && s.single {
		s.stop()
		s.done(nil)
	}
	if err != nil {
		s.stop()
		if err == io.EOF {
			s.done(nil)
		} else {
			s.done(err)
		}
	}
	return err
}

// Counters returns the named backend's counters.
func (p *Pool) Counters(name string) (Counters, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	b, ok := p.backends[name]
	if !ok {
		return Counters{}, false
	}
	c := &b.shield.counters
	return Counters{
		Calls: c.calls.Load(), Attempts: c.attempts.Load(), Retries: c.retries.Load(),
		RetriesDenied: c.denied.Load(), Rejected: c.rejected.Load(),
	}, true
}

// BreakerState is a backend circuit breaker's state, numbered as the
// gatehouse_upstream_breaker_state gauge reports it.
type BreakerState int

const (
	// BreakerClosed lets calls through.
	BreakerClosed BreakerState = 0
	// BreakerHalfOpen lets a few probe calls through.
	BreakerHalfOpen BreakerState = 1
	// BreakerOpen fails calls fast.
	BreakerOpen BreakerState = 2
)

// Breakers returns the state of each backend's circuit breaker, by backend
// name; backends without one are absent. It does not block on calls.
func (p *Pool) Breakers() map[string]BreakerState {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make(map[string]BreakerState, len(p.backends))
	for name, b := range p.backends {
		if b.shield.breaker == nil {
			continue
		}
		switch b.shield.breaker.State() {
		case gobreaker.StateOpen:
			out[name] = BreakerOpen
		case gobreaker.StateHalfOpen:
			out[name] = BreakerHalfOpen
		default:
			out[name] = BreakerClosed
		}
	}
	return out
}
