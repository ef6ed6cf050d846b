package upstream

import (
	"sort"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
)

// weightedRR is round robin with static endpoint weights: grpc-go's
// endpointsharding over one pick_first per endpoint (as its round_robin
// is), with a picker that gives each READY endpoint picks in proportion to
// its weight. grpc-go's weighted_round_robin takes weights from server load
// reports (ORCA), not from configuration, so it does not fit.
type weightedRR struct {
	balancer.Balancer
}

func (w *weightedRR) UpdateClientConnState(s balancer.ClientConnState) error {
	s.ResolverState = pickfirst.EnableHealthListener(s.ResolverState)
	return w.Balancer.UpdateClientConnState(s)
}

func (w *weightedRR) ExitIdle() {
	if ei, ok := w.Balancer.(interface{ ExitIdle() }); ok {
		ei.ExitIdle()
	}
}

// weightedClientConn replaces endpointsharding's even round robin with the
// weighted picker whenever an endpoint is READY.
type weightedClientConn struct {
	balancer.ClientConn
}

func (c *weightedClientConn) UpdateState(s balancer.State) {
	var wp weightedPicker
	for _, ch := range endpointsharding.ChildStatesFromPicker(s.Picker) {
		if ch.State.ConnectivityState != connectivity.Ready {
			continue
		}
		w, _ := ch.Endpoint.Attributes.Value(weightKey{}).(uint32)
		wp.total += uint64(max(w, 1))
		wp.cum = append(wp.cum, wp.total)
		wp.pickers = append(wp.pickers, ch.State.Picker)
	}
	if len(wp.pickers) > 0 {
		s.Picker = &wp
	}
	c.ClientConn.UpdateState(s)
}

// weightedPicker cycles through total slots; endpoint i owns weight(i)
// consecutive slots.
type weightedPicker struct {
	pickers []balancer.Picker
	cum     []uint64 // cumulative weights
	total   uint64
	next    atomic.Uint64
}

func (p *weightedPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	slot := (p.next.Add(1) - 1) % p.total
	i := sort.Search(len(p.cum), func(i int) bool { return p.cum[i] > slot })
	return p.pickers[i].Pick(info)
}
