package routing

import (
	"context"
	"sync"
	"testing"
	"time"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/internal/clock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// manualClock is a Clock moved by hand; timers run synchronously.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	at   time.Time
	f    func()
	dead bool
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.dead
		t.dead = true
		return was
	}
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for _, t := range c.timers {
		if !t.dead && !t.at.After(c.now) {
			t.dead = true
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

func TestIdleTimer(t *testing.T) {
	c := &manualClock{now: time.Unix(1e9, 0)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	it := newIdleTimer(c, time.Second, cancel)
	c.advance(500 * time.Millisecond)
	it.touch() // a message
	c.advance(600 * time.Millisecond)
	if it.fired.Load() || ctx.Err() != nil {
		t.Fatal("fired 600ms after the last message, with a 1s idle timeout")
	}
	c.advance(400 * time.Millisecond)
	if !it.fired.Load() || ctx.Err() == nil {
		t.Fatal("did not fire 1s after the last message")
	}
	it.stop()
}

func TestPolicyDeadline(t *testing.T) {
	dur := func(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
	for _, tt := range []struct {
		name     string
		client   time.Duration // 0: none
		def, max time.Duration // 0: unset
		want     time.Duration // 0: no deadline
	}{
		{"nothing", 0, 0, 0, 0},
		{"default only", 0, time.Second, 0, time.Second},
		{"default above max", 0, 5 * time.Second, 2 * time.Second, 2 * time.Second},
		{"client under max", time.Second, 0, 2 * time.Second, time.Second},
		{"client over max", 10 * time.Second, 3 * time.Second, 2 * time.Second, 2 * time.Second},
		{"client wins over default", 5 * time.Second, time.Second, 0, 5 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			to := &configv1.Timeout{}
			if tt.def > 0 {
				to.Default = dur(tt.def)
			}
			if tt.max > 0 {
				to.Max = dur(tt.max)
			}
			ctx := context.Background()
			if tt.client > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.client)
				defer cancel()
			}
			p := &policies{clock: clock.Real{}}
			ctx, c, err := p.begin(ctx, Target{Route: "r", Config: &configv1.Route{Timeout: to}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.end(nil)
			dl, ok := ctx.Deadline()
			if tt.want == 0 {
				if ok {
					t.Fatalf("deadline in %v, want none", time.Until(dl))
				}
				return
			}
			if got := time.Until(dl); !ok || got > tt.want || got < tt.want-time.Second/2 {
				t.Fatalf("deadline in %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRouteConcurrencyCap(t *testing.T) {
	p := &policies{clock: clock.Real{}}
	tgt := Target{Route: "r", Config: &configv1.Route{MaxConcurrentCalls: 1}}
	_, c1, err := p.begin(context.Background(), tgt)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = p.begin(context.Background(), tgt)
	if status.Code(err) != codes.ResourceExhausted || !IsOverloaded(err) {
		t.Fatalf("second call: %v, want an OverloadedError", err)
	}
	c1.end(nil)
	_, c2, err := p.begin(context.Background(), tgt)
	if err != nil {
		t.Fatalf("after the first ended: %v", err)
	}
	c2.end(nil)
}

// live is the number of timers that have neither fired nor been stopped.
func (c *manualClock) live() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.dead {
			n++
		}
	}
	return n
}
