package quota

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestMemoryRateAccuracy: driven at ten times the rate for 10 simulated
// seconds, GCRA lets burst + rate × duration through, exactly.
func TestMemoryRateAccuracy(t *testing.T) {
	clk := newFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	m := NewMemory(WithMemoryClock(clk.Now))
	r := Rate{Requests: 100, Per: time.Second, Burst: 20}
	allowed := 0
	for i := 0; i < 10000; i++ { // one call per ms: 1000/s, ten times the rate
		res, err := m.AllowRate(context.Background(), "k", r)
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed {
			allowed++
		} else if res.RetryAfter <= 0 || res.RetryAfter > 10*time.Millisecond {
			t.Fatalf("refused with RetryAfter %v, want (0, 10ms]", res.RetryAfter)
		}
		clk.Advance(time.Millisecond)
	}
	// The last call is at 9.999s: 20 + floor(9.999 × 100) = 1019.
	if allowed != 1019 {
		t.Errorf("allowed %d calls, want 1019 (burst 20 + 100/s × 9.999s)", allowed)
	}
}

// TestMemoryRateWindowEdge: a burst straddling a second boundary gets the
// burst once, not twice as a fixed window per second would give.
func TestMemoryRateWindowEdge(t *testing.T) {
	clk := newFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 990_000_000, time.UTC))
	m := NewMemory(WithMemoryClock(clk.Now))
	r := Rate{Requests: 10, Per: time.Second, Burst: 10}
	allowed := 0
	for i := 0; i < 40; i++ { // 40 calls from .990 to 1.010: across the boundary
		if res, _ := m.AllowRate(context.Background(), "k", r); res.Allowed {
			allowed++
		}
		clk.Advance(500 * time.Microsecond)
	}
	// 20ms at 10/s refills 0.2 of a call: the burst of 10 and nothing more.
	if allowed != 10 {
		t.Errorf("allowed %d across the boundary, want 10 (a fixed window would allow 20)", allowed)
	}
}

func TestMemoryRateHeaders(t *testing.T) {
	clk := newFakeClock(time.Unix(1_800_000_000, 0))
	m := NewMemory(WithMemoryClock(clk.Now))
	r := Rate{Requests: 10, Per: time.Second, Burst: 5}
	res, _ := m.AllowRate(context.Background(), "k", r)
	if !res.Allowed || res.Remaining != 4 || res.ResetAfter != 100*time.Millisecond {
		t.Errorf("first call: %+v, want allowed, 4 remaining, reset after 100ms", res)
	}
	for range 4 {
		m.AllowRate(context.Background(), "k", r)
	}
	res, _ = m.AllowRate(context.Background(), "k", r)
	if res.Allowed || res.Remaining != 0 || res.RetryAfter != 100*time.Millisecond {
		t.Errorf("sixth call: %+v, want refused, retry after 100ms", res)
	}
	clk.Advance(100 * time.Millisecond)
	if res, _ = m.AllowRate(context.Background(), "k", r); !res.Allowed {
		t.Errorf("after RetryAfter: %+v, want allowed", res)
	}
}

func TestMemoryCalendar(t *testing.T) {
	for _, tt := range []struct {
		name       string
		per        Window
		at, next   time.Time // a time in a window, and the start of the next
		wantWindow time.Duration
	}{
		{"day", Day, time.Date(2026, 3, 1, 23, 59, 59, 0, time.UTC), time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), 24 * time.Hour},
		{"month", Month, time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC), time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), 31 * 24 * time.Hour},
		{"leap february", Month, time.Date(2028, 2, 10, 0, 0, 0, 0, time.UTC), time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC), 29 * 24 * time.Hour},
		{"december", Month, time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), 31 * 24 * time.Hour},
		{"not UTC", Day, time.Date(2026, 3, 1, 23, 30, 0, 0, time.FixedZone("X", -2*3600)), time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC).Add(24 * time.Hour), 24 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock(tt.at)
			m := NewMemory(WithMemoryClock(clk.Now))
			c := Calendar{Requests: 3, Per: tt.per}
			if s, e := tt.per.bounds(tt.at); e.Sub(s) != tt.wantWindow || !e.Equal(tt.next) {
				t.Fatalf("bounds(%v) = %v..%v, want %v long, ending %v", tt.at, s, e, tt.wantWindow, tt.next)
			}
			for i := range 3 {
				res, _ := m.AllowCalendar(context.Background(), "k", c)
				if !res.Allowed || res.Remaining != int64(2-i) || res.ResetAfter != tt.next.Sub(tt.at) {
					t.Fatalf("call %d: %+v", i, res)
				}
			}
			res, _ := m.AllowCalendar(context.Background(), "k", c)
			if res.Allowed || res.RetryAfter != tt.next.Sub(tt.at) {
				t.Fatalf("over quota: %+v, want refused until the window ends", res)
			}
			clk.Set(tt.next)
			if res, _ := m.AllowCalendar(context.Background(), "k", c); !res.Allowed || res.Remaining != 2 {
				t.Fatalf("next window: %+v, want a fresh quota", res)
			}
		})
	}
}

// TestMemoryBounded: the store never holds more than its bound; idle keys
// go first, so a live key keeps its state while idle ones come and go.
func TestMemoryBounded(t *testing.T) {
	clk := newFakeClock(time.Unix(1_800_000_000, 0))
	const bound = 64 * memoryShards
	m := NewMemory(WithMemoryClock(clk.Now), WithMemoryMaxKeys(bound))
	hourly := Rate{Requests: 1, Per: time.Hour, Burst: 1}
	if res, _ := m.AllowRate(context.Background(), "live", hourly); !res.Allowed {
		t.Fatal("first call refused")
	}
	for i := range 100_000 {
		if _, err := m.AllowRate(context.Background(), fmt.Sprint("k", i), Rate{Requests: 1000, Per: time.Second, Burst: 1}); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 0 {
			clk.Advance(10 * time.Millisecond) // earlier keys' buckets refill: they turn idle
			if res, _ := m.AllowRate(context.Background(), "live", hourly); res.Allowed {
				t.Fatalf("the live key lost its state at %d", i)
			}
		}
		if n := m.Len(); n > bound {
			t.Fatalf("%d keys held, bound %d", n, bound)
		}
	}
	if m.EvictedLive() != 0 {
		t.Errorf("%d live keys evicted, want only idle ones", m.EvictedLive())
	}
	// All live: the bound still holds, by evicting live keys.
	m2 := NewMemory(WithMemoryClock(clk.Now), WithMemoryMaxKeys(bound))
	for i := range 10_000 {
		m2.AllowRate(context.Background(), fmt.Sprint("k", i), Rate{Requests: 1, Per: time.Hour})
	}
	if n := m2.Len(); n > bound || m2.EvictedLive() == 0 {
		t.Errorf("all live: %d keys held (bound %d), %d evicted", n, bound, m2.EvictedLive())
	}
}

func BenchmarkMemoryAllowRate(b *testing.B) {
	m := NewMemory()
	r := Rate{Requests: 1 << 30, Per: time.Second, Burst: 1 << 20}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.AllowRate(context.Background(), fmt.Sprint(i%1000), r)
			i++
		}
	})
}
