package quota

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func newRedis(t *testing.T, addr string) (*Redis, redis.UniversalClient) {
	t.Helper()
	c := NewRedisClient(RedisConfig{Addresses: []string{addr}, Timeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	return NewRedis(c), c
}

func TestRedisRate(t *testing.T) {
	srv := redistest.Start(t)
	r, _ := newRedis(t, srv.Addr())
	ctx := context.Background()
	rate := Rate{Requests: 1, Per: time.Hour, Burst: 3}
	for i := range 3 {
		res, err := r.AllowRate(ctx, "k", rate)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Allowed || res.Remaining != int64(2-i) {
			t.Fatalf("call %d: %+v", i, res)
		}
	}
	res, err := r.AllowRate(ctx, "k", rate)
	if err != nil {
		t.Fatal(err)
	}
	if res.Allowed || res.RetryAfter < 59*time.Minute || res.RetryAfter > time.Hour {
		t.Fatalf("over the limit: %+v, want refused for about an hour", res)
	}
	// Burst 0 means one call at a time, never none.
	if res, err := r.AllowRate(ctx, "zero", Rate{Requests: 1, Per: time.Hour}); err != nil || !res.Allowed {
		t.Fatalf("burst 0: %+v %v", res, err)
	}
}

// TestRedisCalendarWindows: the script's UTC calendar agrees with Go's on
// every kind of boundary, leap years included.
func TestRedisCalendarWindows(t *testing.T) {
	srv := redistest.Start(t)
	base, _ := newRedis(t, srv.Addr())
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(1, 2))
	times := []time.Time{
		time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC),
		time.Date(2100, 2, 28, 12, 0, 0, 0, time.UTC), // not a leap year
		time.Date(2000, 2, 29, 0, 0, 0, 0, time.UTC),  // a leap year
		time.Date(2026, 12, 31, 23, 59, 59, 500_000_000, time.UTC),
		time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 4, 30, 10, 0, 0, 0, time.UTC),
	}
	for range 200 {
		times = append(times, time.Unix(rnd.Int64N(4_102_444_800), 0).UTC()) // 1970..2100
	}
	for i, at := range times {
		r := base.withCalendarClock(func() time.Time { return at })
		for _, w := range []Window{Day, Month} {
			key := at.Format(time.RFC3339Nano) + w.String()
			res, err := r.AllowCalendar(ctx, key, Calendar{Requests: 5, Per: w})
			if err != nil {
				t.Fatal(err)
			}
			_, end := w.bounds(at)
			if d := res.ResetAfter - end.Sub(at); !res.Allowed || res.Remaining != 4 || d < -time.Millisecond || d > time.Millisecond {
				t.Fatalf("%d: %v %s: %+v, want the window to end in %v", i, at, w, res, end.Sub(at))
			}
		}
	}
}

// TestRedisCalendarCount: a quota counts allowed calls only, refuses past
// its limit, and starts afresh in the next window.
func TestRedisCalendarCount(t *testing.T) {
	srv := redistest.Start(t)
	base, c := newRedis(t, srv.Addr())
	ctx := context.Background()
	clk := newFakeClock(time.Date(2026, 1, 31, 23, 59, 0, 0, time.UTC))
	r := base.withCalendarClock(clk.Now)
	q := Calendar{Requests: 3, Per: Month}
	for i := range 5 {
		res, err := r.AllowCalendar(ctx, "k", q)
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed != (i < 3) {
			t.Fatalf("call %d: %+v", i, res)
		}
	}
	ttl, err := c.TTL(ctx, KeyPrefix+"cal:k").Result()
	if err != nil || ttl <= 0 {
		t.Errorf("the counter has no expiry: %v %v", ttl, err)
	}
	clk.Set(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
	if res, _ := r.AllowCalendar(ctx, "k", q); !res.Allowed || res.Remaining != 2 {
		t.Errorf("next month: %+v, want a fresh quota", res)
	}
}

// fixedWindowScript is the naive limiter that TestRedisRateWindowEdge
// measures itself against: a counter per second of the Redis server's
// clock (INCR, then EXPIRE when new), allowing ARGV[1] calls per second.
// It answers 1 when a call is allowed.
var fixedWindowScript = redis.NewScript(`
local t = redis.call("TIME")
local k = KEYS[1] .. ":" .. t[1]
local n = redis.call("INCR", k)
if n == 1 then redis.call("EXPIRE", k, 2) end
if n <= tonumber(ARGV[1]) then return 1 end
return 0
`)

// TestRedisRateWindowEdge: a burst that straddles a second boundary of the
// Redis server's clock gets the burst once, not twice as a fixed window per
// second does. The run sends the limit and more just before the boundary,
// waits for the server's TIME to cross it, and sends as many again; each
// call goes to the store and to fixedWindowScript, which must let the
// limit through twice: that shows the run is one a fixed window fails.
func TestRedisRateWindowEdge(t *testing.T) {
	srv := redistest.Start(t)
	r, c := newRedis(t, srv.Addr())
	ctx := context.Background()
	const limit = 20 // per second, and the burst
	rate := Rate{Requests: limit, Per: time.Second, Burst: limit}
	serverNow := func() time.Time {
		t.Helper()
		now, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return now
	}
	lead := 5 * time.Millisecond // how long before the boundary the run starts
	for attempt := 1; ; attempt++ {
		if attempt > 8 {
			t.Fatalf("no run fitted %d calls before a second boundary of the server's clock in %d attempts", limit+5, attempt-1)
		}
		key := fmt.Sprintf("edge-%d", attempt)
		gcra, fixed := 0, 0
		call := func() {
			res, err := r.AllowRate(ctx, key, rate)
			if err != nil {
				t.Fatal(err)
			}
			if res.Allowed {
				gcra++
			}
			n, err := fixedWindowScript.Run(ctx, c, []string{"fixed:" + key}, limit).Int()
			if err != nil {
				t.Fatal(err)
			}
			fixed += n
		}
		now := serverNow()
		boundary := now.Truncate(time.Second).Add(time.Second)
		if boundary.Sub(now) < lead+5*time.Millisecond {
			boundary = boundary.Add(time.Second)
		}
		time.Sleep(boundary.Sub(now) - lead)
		first := serverNow()
		for range limit + 5 {
			call()
		}
		if before := serverNow(); !before.Before(boundary) || !first.Before(boundary) {
			t.Logf("attempt %d: the calls before the boundary ended %v after it; starting earlier", attempt, before.Sub(boundary))
			lead *= 2
			continue
		}
		for serverNow().Before(boundary) {
			time.Sleep(time.Millisecond)
		}
		for range limit + 5 {
			call()
		}
		elapsed := serverNow().Sub(first)
		if elapsed > 250*time.Millisecond {
			t.Logf("attempt %d: the run took %v of the server's time; again", attempt, elapsed)
			continue
		}
		// From a full bucket, GCRA lets through the burst and then one call
		// per emission interval (50ms), plus one for rounding.
		bound := limit + int(elapsed/rate.interval()) + 1
		t.Logf("attempt %d: %d calls before and %d after the server's second boundary, over %v: GCRA allowed %d (bound %d), a fixed window %d",
			attempt, limit+5, limit+5, elapsed.Round(time.Microsecond), gcra, bound, fixed)
		if fixed != 2*limit {
			t.Fatalf("the fixed window allowed %d, want %d: the run did not straddle its window edge", fixed, 2*limit)
		}
		if gcra > bound {
			t.Errorf("allowed %d in %v across the boundary, want at most %d (the fixed window allowed %d)", gcra, elapsed, bound, fixed)
		}
		if gcra < limit {
			t.Errorf("allowed %d, want at least the burst of %d", gcra, limit)
		}
		return
	}
}

// TestLimiterStoreFailure: with Redis killed, a FAIL_CLOSED policy refuses
// as unavailable and a FAIL_OPEN one enforces limit / replicas in memory,
// each within the timeout; the transition is logged once; with Redis back,
// the shared limits apply again.
func TestLimiterStoreFailure(t *testing.T) {
	srv := redistest.Start(t)
	store, c := newRedis(t, srv.Addr())
	var logs syncBuf
	const timeout = 150 * time.Millisecond // generous for a loaded race-enabled CI machine
	l, err := New([]Policy{
		{Name: "open", Rate: &Rate{Requests: 10, Per: time.Hour, Burst: 10}, Routes: []string{"a"}},
		{Name: "closed", Rate: &Rate{Requests: 10, Per: time.Hour, Burst: 10}, Routes: []string{"b"}, FailClosed: true},
	}, store, 2, WithTimeout(timeout), WithProbeInterval(100*time.Millisecond),
		WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	call := func(route string) (Outcome, time.Duration) {
		t.Helper()
		start := time.Now()
		v, err := l.Limit(ctx, &Call{Route: route, SourceIP: "192.0.2.1"})
		if err != nil || len(v.Outcomes) != 1 {
			t.Fatalf("Limit: %+v %v", v, err)
		}
		return v.Outcomes[0], time.Since(start)
	}
	for _, r := range []string{"a", "b"} {
		if o, _ := call(r); !o.Allowed || o.StoreFailed {
			t.Fatalf("route %s with Redis up: %+v", r, o)
		}
	}

	srv.Stop()
	var slowest time.Duration
	openAllowed := 0
	for i := range 40 {
		o, d := call("b")
		slowest = max(slowest, d)
		if o.Allowed || !o.StoreFailed {
			t.Fatalf("FAIL_CLOSED call %d with Redis down: %+v, want unavailable", i, o)
		}
		o, d = call("a")
		slowest = max(slowest, d)
		if !o.StoreFailed {
			t.Fatalf("FAIL_OPEN call %d: %+v, want a fallback decision", i, o)
		}
		if o.Allowed {
			openAllowed++
		}
	}
	if openAllowed != 5 {
		t.Errorf("FAIL_OPEN allowed %d calls in memory, want 5 (burst 10 / 2 replicas)", openAllowed)
	}
	if slowest > timeout+250*time.Millisecond {
		t.Errorf("slowest decision with Redis down took %v, want within the %v timeout", slowest, timeout)
	}
	if n := strings.Count(logs.String(), "quota store unreachable"); n != 1 || !l.StoreDown() {
		t.Errorf("logged the outage %d times (down=%v), want once:\n%s", n, l.StoreDown(), logs.String())
	}

	srv.Restart() // empty: its counters start afresh
	deadline := time.Now().Add(5 * time.Second)
	for l.StoreDown() {
		if time.Now().After(deadline) {
			t.Fatal("the limiter did not go back to Redis within 5s")
		}
		call("b")
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "quota store reachable again"); n != 1 {
		t.Errorf("logged the recovery %d times, want once:\n%s", n, logs.String())
	}
	// Enforcement resumes on Redis: ten calls of route a pass, the
	// eleventh is refused, and the counter is in Redis.
	allowed := 0
	for range 11 {
		if o, _ := call("a"); o.Allowed && !o.StoreFailed {
			allowed++
		}
	}
	if allowed != 10 {
		t.Errorf("after the restart, allowed %d of 11 on Redis, want 10", allowed)
	}
	if n, err := c.Exists(ctx, "rate:"+KeyPrefix+"open:192.0.2.1").Result(); err != nil || n != 1 {
		keys, _ := c.Keys(ctx, "*").Result()
		t.Errorf("the counter is not in Redis: %v %v; keys %v", n, err, keys)
	}
}

// TestLimiterStoreHangs: with Redis frozen (calls hang rather than fail),
// each decision still comes within the timeout, as configured per policy.
func TestLimiterStoreHangs(t *testing.T) {
	srv := redistest.Start(t)
	store, _ := newRedis(t, srv.Addr())
	const timeout = 100 * time.Millisecond
	l, err := New([]Policy{
		{Name: "open", Rate: &Rate{Requests: 10, Per: time.Hour, Burst: 10}, Routes: []string{"a"}},
		{Name: "closed", Rate: &Rate{Requests: 10, Per: time.Hour, Burst: 10}, Routes: []string{"b"}, FailClosed: true},
	}, store, 1, WithTimeout(timeout), WithProbeInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := l.Limit(ctx, &Call{Route: "a"}); err != nil { // a pooled connection
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	for _, tt := range []struct {
		route       string
		allowed     bool
		unavailable bool
	}{{"b", false, true}, {"a", true, false}} {
		start := time.Now()
		v, err := l.Limit(ctx, &Call{Route: tt.route})
		d := time.Since(start)
		if err != nil || len(v.Outcomes) != 1 {
			t.Fatalf("route %s: %+v %v", tt.route, v, err)
		}
		o := v.Outcomes[0]
		if o.Allowed != tt.allowed || o.Unavailable != tt.unavailable || !o.StoreFailed {
			t.Errorf("route %s with Redis hung: %+v", tt.route, o)
		}
		// The first call waits out the timeout; later ones skip the store
		// until the next probe.
		if tt.route == "b" && (d < timeout*8/10 || d > timeout+250*time.Millisecond) {
			t.Errorf("route %s decided in %v, want about the %v timeout", tt.route, d, timeout)
		}
		if tt.route == "a" && d > 50*time.Millisecond {
			t.Errorf("route %s decided in %v while the store is known down, want no wait", tt.route, d)
		}
	}
}

// TestLimiterCanceledCallIsNotAnOutage: a call whose context ends while the
// store is asked does not mark the store down.
func TestLimiterCanceledCallIsNotAnOutage(t *testing.T) {
	srv := redistest.Start(t)
	store, _ := newRedis(t, srv.Addr())
	l, err := New([]Policy{{Name: "p", Rate: &Rate{Requests: 1, Per: time.Second}}}, store, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = l.Limit(ctx, &Call{Route: "r"})
	if !errors.Is(err, context.Canceled) || l.StoreDown() {
		t.Errorf("Limit with a canceled context: %v, down=%v", err, l.StoreDown())
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
