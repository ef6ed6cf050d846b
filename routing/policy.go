package routing

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/clock"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ReasonOverloaded is the google.rpc.ErrorInfo reason of the
// RESOURCE_EXHAUSTED status of a call refused because a concurrency cap
// (listener or route) is full; the REST error handler turns it into 503.
const ReasonOverloaded = "OVERLOADED"

// OverloadedError is the error for a call shed by a concurrency cap:
// RESOURCE_EXHAUSTED with msg and an ErrorInfo whose reason is
// ReasonOverloaded.
func OverloadedError(msg string) error {
	st := status.New(codes.ResourceExhausted, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonOverloaded, Domain: ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}

// IsOverloaded reports whether err is an OverloadedError.
func IsOverloaded(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.ResourceExhausted {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == ReasonOverloaded && ei.GetDomain() == ErrorDomain {
			return true
		}
	}
	return false
}

// Clock is the time source of the director's idle timeouts and hedging.
type Clock = clock.Clock

// policies holds the director's per-route state: calls in flight per route.
type policies struct {
	clock    Clock
	inflight sync.Map // route name -> *atomic.Int64
}

// call is the state of one call's route policies.
type call struct {
	route   string
	release func()
	cancel  context.CancelFunc
	idle    *idleTimer
}

// begin applies t's route policies to a call: the route's concurrency cap,
// then its deadline (the client's, capped by timeout.max; timeout.default
// when the client set none) and idle timeout. The returned context carries
// the deadline to the backend; end must be called when the call ends.
func (p *policies) begin(ctx context.Context, t Target) (context.Context, *call, error) {
	c := &call{route: t.Route}
	r := t.Config
	if max := r.GetMaxConcurrentCalls(); max > 0 {
		v, _ := p.inflight.LoadOrStore(t.Route, new(atomic.Int64))
		n := v.(*atomic.Int64)
		if n.Add(1) > int64(max) {
			n.Add(-1)
			return ctx, nil, OverloadedError(fmt.Sprintf("gatehouse: route %q: %d calls in flight, its max_concurrent_calls", t.Route, max))
		}
		c.release = func() { n.Add(-1) }
	}
	to := r.GetTimeout()
	def, max := to.GetDefault().AsDuration(), to.GetMax().AsDuration()
	if to.GetDefault() == nil {
		def = 0
	}
	if to.GetMax() == nil {
		max = 0
	}
	d := max
	if _, ok := ctx.Deadline(); !ok && def > 0 && (max == 0 || def < max) {
		d = def
	}
	if d > 0 {
		// WithTimeout keeps the parent's (the client's) deadline when it is
		// earlier: the effective deadline is the smaller one.
		ctx, c.cancel = context.WithTimeout(ctx, d)
	} else {
		ctx, c.cancel = context.WithCancel(ctx)
	}
	if idle := to.GetIdle(); idle != nil && idle.AsDuration() > 0 {
		c.idle = newIdleTimer(p.clock, idle.AsDuration(), c.cancel)
	}
	return ctx, c, nil
}

// wrap returns ss with every message either way resetting the idle timer.
func (c *call) wrap(ss grpc.ServerStream) grpc.ServerStream {
	if c.idle == nil {
		return ss
	}
	return &idleServerStream{ServerStream: ss, t: c.idle}
}

// end releases the call's resources and returns its final error: the idle
// timeout as DEADLINE_EXCEEDED, or err.
func (c *call) end(err error) error {
	if c.idle != nil {
		c.idle.stop()
		if c.idle.fired.Load() && err != nil {
			err = status.Errorf(codes.DeadlineExceeded, "gatehouse: route %q: no message either way for %v (timeout.idle)", c.route, c.idle.d)
		}
	}
	c.cancel()
	if c.release != nil {
		c.release()
	}
	return err
}

// idleTimer cancels a call after d without a message either way.
type idleTimer struct {
	clock  Clock
	d      time.Duration
	last   atomic.Int64 // UnixNano of the last message
	fired  atomic.Bool
	cancel context.CancelFunc

	mu      sync.Mutex
	stopped bool
	stopFn  func() bool
}

func newIdleTimer(clock Clock, d time.Duration, cancel context.CancelFunc) *idleTimer {
	t := &idleTimer{clock: clock, d: d, cancel: cancel}
	t.touch()
	t.arm(d)
	return t
}

func (t *idleTimer) touch() { t.last.Store(t.clock.Now().UnixNano()) }

func (t *idleTimer) arm(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopFn = t.clock.AfterFunc(d, t.check)
	}
}

// check fires the timeout, or re-arms it for the time left.
func (t *idleTimer) check() {
	quiet := t.clock.Now().Sub(time.Unix(0, t.last.Load()))
	if quiet >= t.d {
		t.fired.Store(true)
		t.cancel()
		return
	}
	t.arm(t.d - quiet)
}

func (t *idleTimer) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	if t.stopFn != nil {
		t.stopFn()
	}
}

type idleServerStream struct {
	grpc.ServerStream
	t *idleTimer
}

func (s *idleServerStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.t.touch()
	}
	return err
}

func (s *idleServerStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if err == nil {
		s.t.touch()
	}
	return err
}
