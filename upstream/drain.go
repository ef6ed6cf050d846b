package upstream

import (
	"sync"
	"time"

	"google.golang.org/grpc"
)

// DefaultDrainGrace is how long a removed backend's connection is kept for
// its calls in flight when no WithDrainGrace is given.
const DefaultDrainGrace = 30 * time.Second

// drainPoll is how often a draining backend checks for calls in flight. The
// first check comes one poll after removal, so that a call that got the
// connection just before has time to start its stream.
const drainPoll = 20 * time.Millisecond

// WithDrainGrace sets how long Update keeps the connection of a removed
// backend open for its calls in flight: it is closed when they have all
// ended, or when d has passed, whichever comes first. Default
// [DefaultDrainGrace].
func WithDrainGrace(d time.Duration) Option {
	return funcOption(func(o *options) { o.drainGrace = d })
}

// drains closes the connections of removed backends once their calls in
// flight have ended or their grace period has passed.
type drains struct {
	mu      sync.Mutex
	stopped bool
	stop    chan struct{} // closed by closeAll; made on first use
	// byName holds the last removed backend of each name until it is
	// closed, for calls that resolved it before its removal (see conn).
	byName map[string]*backend
	wg     sync.WaitGroup
}

// start drains b: its connection is closed when no call is in flight, after
// grace, or at closeAll, whichever comes first.
func (d *drains) start(b *backend, grace time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		b.close()
		return
	}
	if d.stop == nil {
		d.stop = make(chan struct{})
	}
	if grace <= 0 {
		grace = DefaultDrainGrace
	}
	if d.byName == nil {
		d.byName = make(map[string]*backend)
	}
	d.byName[b.spec.Name] = b
	stop := d.stop
	d.wg.Go(func() {
		defer func() {
			d.mu.Lock()
			if d.byName[b.spec.Name] == b {
				delete(d.byName, b.spec.Name)
			}
			d.mu.Unlock()
			b.close()
		}()
		deadline := time.NewTimer(grace)
		defer deadline.Stop()
		poll := time.NewTicker(drainPoll)
		defer poll.Stop()
		for {
			select {
			case <-poll.C:
				if b.shield.inflight.Load() <= 0 {
					return
				}
			case <-deadline.C:
				return
			case <-stop:
				return
			}
		}
	})
}

// conn returns the connection of a removed backend that is still
// draining. A call that resolved its backend on a route table from before
// the removal (the table and the pool are swapped one after the other)
// still gets it: calls finish on the configuration they started with.
func (d *drains) conn(name string) (grpc.ClientConnInterface, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := d.byName[name]
	if !ok {
		return nil, false
	}
	return b.guard, true
}

// closeAll closes every draining connection now and waits until they are
// closed. Drains started afterwards close at once.
func (d *drains) closeAll() {
	d.mu.Lock()
	if !d.stopped {
		d.stopped = true
		if d.stop != nil {
			close(d.stop)
		}
	}
	d.mu.Unlock()
	d.wg.Wait()
}
