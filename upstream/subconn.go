package upstream

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// subConn is one subchannel as the child policy sees it. Its health
// listener reports READY only while the endpoint passes its active health
// checks (when configured) and is not ejected as an outlier.
type subConn struct {
	balancer.SubConn
	b    *wrapper
	pol  *connPolicy
	addr string
	id   *subConnID

	mu       sync.Mutex
	conn     connectivity.State // raw connectivity
	listener func(balancer.SubConnState)
	gen      int                // bumped per RegisterHealthListener
	inner    connectivity.State // grpc-go's own health report
	checked  connectivity.State // active checks' verdict
	ejected  bool
	stop     context.CancelFunc // ends the checker
	sent     connectivity.State // last state given to listener; -1 none
}

// connectivity records a raw connectivity change.
func (sc *subConn) connectivity(s connectivity.State) {
	sc.mu.Lock()
	sc.conn = s
	var stop context.CancelFunc
	if s != connectivity.Ready {
		stop, sc.stop = sc.stop, nil
	}
	eff := sc.effectiveLocked()
	sc.mu.Unlock()
	if stop != nil {
		stop()
	}
	sc.pol.tracker.set(sc.addr, sc.id, eff)
	if s == connectivity.Shutdown && sc.pol.outliers != nil {
		sc.pol.outliers.remove(sc)
	}
}

// effectiveLocked is the state of the endpoint for traffic. The caller
// holds sc.mu.
func (sc *subConn) effectiveLocked() connectivity.State {
	if sc.conn != connectivity.Ready {
		return sc.conn
	}
	return sc.healthLocked()
}

// healthLocked is what the health listener should say while the
// subchannel is READY. The caller holds sc.mu.
func (sc *subConn) healthLocked() connectivity.State {
	switch {
	case sc.ejected:
		return connectivity.TransientFailure
	case sc.pol.health != nil && sc.checked != connectivity.Ready:
		return sc.checked
	case sc.pol.health == nil && sc.inner != connectivity.Ready:
		return sc.inner
	}
	return connectivity.Ready
}

func (sc *subConn) RegisterHealthListener(l func(balancer.SubConnState)) {
	sc.mu.Lock()
	sc.gen++
	gen := sc.gen
	stop := sc.stop
	sc.stop = nil
	sc.listener = l
	sc.inner = connectivity.Connecting
	sc.checked = connectivity.Connecting
	sc.sent = -1
	var ctx context.Context
	if l != nil && sc.pol.health != nil {
		ctx, sc.stop = context.WithCancel(context.Background())
	}
	sc.mu.Unlock()
	if stop != nil {
		stop()
	}
	if l == nil {
		sc.SubConn.RegisterHealthListener(nil)
		return
	}
	sc.SubConn.RegisterHealthListener(func(s balancer.SubConnState) {
		sc.mu.Lock()
		sc.inner = s.ConnectivityState
		sc.mu.Unlock()
		sc.emit(gen)
	})
	if ctx != nil {
		go sc.check(ctx, gen, sc.pol.health)
	}
}

func (sc *subConn) Shutdown() {
	sc.mu.Lock()
	stop := sc.stop
	sc.stop = nil
	sc.mu.Unlock()
	if stop != nil {
		stop()
	}
	sc.SubConn.Shutdown()
}

// emit tells the child's health listener of a change, if any.
func (sc *subConn) emit(gen int) {
	sc.b.mu.Lock()
	defer sc.b.mu.Unlock()
	sc.mu.Lock()
	eff := sc.effectiveLocked()
	if gen != sc.gen || sc.listener == nil || sc.b.closed {
		sc.mu.Unlock()
		sc.pol.tracker.set(sc.addr, sc.id, eff)
		return
	}
	st := sc.healthLocked()
	l := sc.listener
	changed := st != sc.sent
	sc.sent = st
	sc.mu.Unlock()
	sc.pol.tracker.set(sc.addr, sc.id, eff)
	if changed {
		l(balancer.SubConnState{ConnectivityState: st, ConnectionError: healthError(st, sc)})
	}
}

// setEjected ejects the endpoint or lets it back.
func (sc *subConn) setEjected(ejected bool) {
	sc.mu.Lock()
	sc.ejected = ejected
	gen := sc.gen
	sc.mu.Unlock()
	sc.emit(gen)
}

func healthError(st connectivity.State, sc *subConn) error {
	if st != connectivity.TransientFailure {
		return nil
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.ejected {
		return errEjected
	}
	return errUnhealthy
}

// check runs active health checks of the subchannel until ctx ends: a
// grpc.health.v1 Check every Interval, each within Timeout, sent over the
// subchannel itself (a balancer producer gives its ClientConnInterface).
func (sc *subConn) check(ctx context.Context, gen int, hc *HealthCheck) {
	p, closeProducer := sc.SubConn.GetOrBuildProducer(ccProducerBuilder{})
	defer closeProducer()
	client := healthpb.NewHealthClient(p.(*ccProducer).cc)
	var oks, fails int
	healthy := false
	tick := make(chan struct{}, 1)
	for {
		cctx, cancel := context.WithTimeout(ctx, hc.Timeout)
		resp, err := client.Check(cctx, &healthpb.HealthCheckRequest{Service: hc.Service})
		cancel()
		if ctx.Err() != nil {
			return
		}
		verdict := connectivity.State(-1)
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			oks, fails = oks+1, 0
			if !healthy && oks >= max(1, hc.HealthyThreshold) {
				healthy, verdict = true, connectivity.Ready
			}
		} else {
			oks, fails = 0, fails+1
			// Not yet seen healthy: unhealthy at once; healthy: after
			// UnhealthyThreshold failures in a row.
			if (!healthy && fails == 1) || (healthy && fails >= max(1, hc.UnhealthyThreshold)) {
				healthy, verdict = false, connectivity.TransientFailure
			}
		}
		if verdict >= 0 {
			sc.mu.Lock()
			sc.checked = verdict
			sc.mu.Unlock()
			sc.emit(gen)
		}
		stop := sc.pol.clock.AfterFunc(hc.Interval, func() {
			select {
			case tick <- struct{}{}:
			default:
			}
		})
		select {
		case <-ctx.Done():
			stop()
			return
		case <-tick:
		}
	}
}

// ccProducerBuilder builds a producer that only exposes the subchannel as
// a grpc.ClientConnInterface, to send health checks over it.
type ccProducerBuilder struct{}

type ccProducer struct{ cc grpc.ClientConnInterface }

func (ccProducerBuilder) Build(cci any) (balancer.Producer, func()) {
	return &ccProducer{cc: cci.(grpc.ClientConnInterface)}, func() {}
}
