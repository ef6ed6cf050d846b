package upstream

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// LookupHostFunc resolves a host name to addresses, as
// net.Resolver.LookupHost does.
type LookupHostFunc func(ctx context.Context, host string) ([]string, error)

// dnsWatch resolves a backend's endpoint names every DNSRefresh. A name
// whose lookup fails keeps its last known addresses.
type dnsWatch struct {
	b      *backend
	lookup LookupHostFunc
	clock  Clock

	mu       sync.Mutex
	known    map[string][]string // endpoint as written -> its addresses
	originOf map[string]string   // address -> endpoint as written
	timer    func() bool
	stopped  bool
	running  sync.WaitGroup
}

func newDNSWatch(b *backend, lookup LookupHostFunc, clock Clock) *dnsWatch {
	return &dnsWatch{b: b, lookup: lookup, clock: clock, known: map[string][]string{}, originOf: map[string]string{}}
}

// start resolves at once, in the background, then every DNSRefresh.
func (w *dnsWatch) start() {
	w.running.Add(1)
	go func() {
		defer w.running.Done()
		w.refresh()
		w.schedule(w.every())
	}()
}

func (w *dnsWatch) every() time.Duration {
	if d := w.b.spec.DNSRefresh; d > 0 {
		return d
	}
	return 30 * time.Second
}

// schedule runs a refresh after d, unless stopped.
func (w *dnsWatch) schedule(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.running.Add(1)
	w.timer = w.clock.AfterFunc(d, func() {
		defer w.running.Done()
		w.refresh()
		w.schedule(w.every())
	})
}

// refresh resolves every endpoint name now.
func (w *dnsWatch) refresh() {
	w.b.mu.Lock()
	names := slices.Clone(w.b.spec.Endpoints)
	w.b.mu.Unlock()
	var addrs []string
	origin := map[string]string{}
	for _, ep := range names {
		host, port, err := net.SplitHostPort(ep)
		if err != nil {
			continue
		}
		var found []string
		if _, err := netip.ParseAddr(host); err == nil {
			found = []string{ep}
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ips, err := w.lookup(ctx, host)
			cancel()
			w.mu.Lock()
			if err != nil || len(ips) == 0 {
				found = w.known[ep] // keep the last known addresses
			} else {
				for _, ip := range ips {
					found = append(found, net.JoinHostPort(ip, port))
				}
				slices.Sort(found)
				w.known[ep] = found
			}
			w.mu.Unlock()
		}
		for _, a := range found {
			if _, dup := origin[a]; !dup {
				origin[a] = ep
				addrs = append(addrs, a)
			}
		}
	}
	if len(addrs) == 0 {
		return // nothing known yet, or every name lost: keep what we had
	}
	slices.Sort(addrs)
	w.mu.Lock()
	w.originOf = origin
	w.mu.Unlock()
	w.b.setEndpoints(addrs)
}

func (w *dnsWatch) origin(addr string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.originOf[addr]
}

func (w *dnsWatch) stop() {
	w.mu.Lock()
	w.stopped = true
	if w.timer != nil && w.timer() {
		w.running.Done()
	}
	w.mu.Unlock()
	w.running.Wait()
}
