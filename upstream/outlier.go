package upstream

import (
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	errEjected   = errors.New("upstream: endpoint ejected as an outlier")
	errUnhealthy = errors.New("upstream: endpoint failed its health checks")
)

// outliers ejects a backend's endpoints that fail ConsecutiveFailures calls
// in a row, for EjectionTime times the number of ejections (at most 10),
// never more than MaxEjectionPercent of the endpoints at once. It is shared
// by every connection of the backend, keyed by address.
type outliers struct {
	cfg   Outlier
	clock Clock
	total func() int // the backend's endpoint count

	mu  sync.Mutex
	eps map[string]*endpointOutlier
}

type endpointOutlier struct {
	failures  int
	ejected   bool
	ejections int
	unEject   func() bool
	subs      map[*subConn]struct{}
}

func newOutliers(cfg Outlier, clock Clock, total func() int) *outliers {
	return &outliers{cfg: cfg, clock: clock, total: total, eps: make(map[string]*endpointOutlier)}
}

func (o *outliers) ep(addr string) *endpointOutlier {
	e := o.eps[addr]
	if e == nil {
		e = &endpointOutlier{subs: make(map[*subConn]struct{})}
		o.eps[addr] = e
	}
	return e
}

// add registers a subchannel, ejected at once if its address is.
func (o *outliers) add(sc *subConn) {
	o.mu.Lock()
	e := o.ep(sc.addr)
	e.subs[sc] = struct{}{}
	ejected := e.ejected
	o.mu.Unlock()
	if ejected {
		sc.mu.Lock()
		sc.ejected = true
		sc.mu.Unlock()
	}
}

func (o *outliers) remove(sc *subConn) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.eps[sc.addr]; e != nil {
		delete(e.subs, sc)
	}
}

// isFailure reports whether a call result counts against its endpoint: the
// codes a sick server or a broken connection give.
func isFailure(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DataLoss:
		return true
	}
	return false
}

// result records one call's result on addr.
func (o *outliers) result(addr string, err error) {
	o.mu.Lock()
	e := o.ep(addr)
	if !isFailure(err) {
		e.failures = 0
		o.mu.Unlock()
		return
	}
	e.failures++
	if e.ejected || e.failures < max(1, o.cfg.ConsecutiveFailures) || !o.roomLocked() {
		o.mu.Unlock()
		return
	}
	e.ejected = true
	e.failures = 0
	e.ejections++
	d := o.cfg.EjectionTime * time.Duration(min(e.ejections, 10))
	e.unEject = o.clock.AfterFunc(d, func() { o.letBack(addr) })
	subs := e.subsList()
	o.mu.Unlock()
	for _, sc := range subs {
		sc.setEjected(true)
	}
}

// roomLocked reports whether one more endpoint may be ejected.
func (o *outliers) roomLocked() bool {
	n := 0
	for _, e := range o.eps {
		if e.ejected {
			n++
		}
	}
	return (n+1)*100 <= o.cfg.MaxEjectionPercent*o.total()
}

func (o *outliers) letBack(addr string) {
	o.mu.Lock()
	e := o.eps[addr]
	if e == nil || !e.ejected {
		o.mu.Unlock()
		return
	}
	e.ejected = false
	subs := e.subsList()
	o.mu.Unlock()
	for _, sc := range subs {
		sc.setEjected(false)
	}
}

// Ejected reports whether addr is ejected now.
func (o *outliers) ejected(addr string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.eps[addr]
	return e != nil && e.ejected
}

// stop cancels pending returns (the pool is closing).
func (o *outliers) stop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range o.eps {
		if e.unEject != nil {
			e.unEject()
		}
	}
}

func (e *endpointOutlier) subsList() []*subConn {
	out := make([]*subConn, 0, len(e.subs))
	for sc := range e.subs {
		out = append(out, sc)
	}
	return out
}
