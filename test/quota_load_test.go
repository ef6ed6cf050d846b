package test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/internal/redistest"
	"github.com/gatehouse-dev/gatehouse/quota"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// loadCall is one call of TestQuotaRedisKilledUnderLoad.
type loadCall struct {
	route      string
	start, end time.Time
	code       codes.Code
}

// TestQuotaRedisKilledUnderLoad: Redis is killed, and later restarted,
// while clients call both routes of quotaFailureConfig concurrently. Every
// call is answered within the store timeout and some slack, with a code
// its policy allows: FAIL_OPEN never refuses as unavailable, FAIL_CLOSED
// refuses every call made while Redis is dead with UNAVAILABLE and none
// once the gateway is back on Redis; nothing panics (a panic would end the
// test binary). Enforcement resumes on the restarted Redis: the
// FAIL_CLOSED route, which has no fallback, lets exactly its burst through
// after the restart, and both policies' counters are in Redis again.
func TestQuotaRedisKilledUnderLoad(t *testing.T) {
	srv := redistest.Start(t)
	const (
		timeout   = 150 * time.Millisecond // quotaFailureConfig's
		slack     = 400 * time.Millisecond // 8 concurrent clients on a loaded race-enabled 2-core machine
		perRoute  = 4                      // clients per route
		burst     = 10                     // quotaFailureConfig's, per hour: no refill during the test
		openShare = burst / 2              // the fallback's share: 2 replicas
	)
	g := startGateway(t, quotaFailureConfig(startBackend(t), srv.Addr()),
		edge.WithQuotaOptions(quota.WithProbeInterval(50*time.Millisecond)))
	c := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))

	var (
		mu        sync.Mutex
		calls     []loadCall
		restarted atomic.Int64 // unix nanos when Restart began; 0 before
		recovered atomic.Int64 // unix nanos when a FAIL_CLOSED call after the restart was allowed
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	for i := range 2 * perRoute {
		route := "open"
		if i%2 == 1 {
			route = "closed"
		}
		wg.Go(func() {
			var mine []loadCall
			defer func() {
				mu.Lock()
				calls = append(calls, mine...)
				mu.Unlock()
			}()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-route", route), 5*time.Second)
				start := time.Now()
				_, err := c.EmptyCall(ctx, &testpb.Empty{})
				cancel()
				lc := loadCall{route: route, start: start, end: time.Now(), code: status.Code(err)}
				mine = append(mine, lc)
				if r := restarted.Load(); route == "closed" && lc.code == codes.OK && r != 0 && start.UnixNano() > r {
					recovered.CompareAndSwap(0, lc.end.UnixNano())
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}

	time.Sleep(300 * time.Millisecond)
	killing := time.Now()
	srv.Stop()
	killed := time.Now()
	time.Sleep(500 * time.Millisecond)
	restarting := time.Now()
	restarted.Store(restarting.UnixNano())
	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for recovered.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // load on Redis again
	close(stop)
	wg.Wait()
	if recovered.Load() == 0 {
		t.Fatal("no FAIL_CLOSED call was allowed within 5s of the restart")
	}
	back := time.Unix(0, recovered.Load())

	var slowest time.Duration
	bad := 0               // calls answered with a code their policy does not allow
	n := map[string]int{}  // calls by phase and route
	ok := map[string]int{} // allowed calls by phase and route
	for _, lc := range calls {
		d := lc.end.Sub(lc.start)
		slowest = max(slowest, d)
		if d > timeout+slack {

			t.Errorf("a %s call starting %v after the kill took %v, want at most the %v timeout + %v", lc.route, lc.start.Sub(killing).Round(time.Millisecond), d, timeout, slack)
		}
		phase := "up"
		switch {
		case lc.start.After(back):
			phase = "back"
		case lc.start.After(restarting):
			phase = "restarting"
		case lc.start.After(killed) && lc.end.Before(restarting):
			phase = "down"
		case lc.end.After(killing):
			phase = "killing" // in flight across the kill or the restart
		}
		n[phase+"/"+lc.route]++
		if lc.code == codes.OK {
			ok[phase+"/"+lc.route]++
		}
		want := []codes.Code{codes.OK, codes.ResourceExhausted}
		switch {
		case lc.route == "closed" && phase == "down":
			want = []codes.Code{codes.Unavailable}
		case lc.route == "closed" && phase != "back" && phase != "up":
			want = append(want, codes.Unavailable)
		}
		if !slices.Contains(want, lc.code) {
			if bad++; bad > 5 {
				continue // the first few tell the story
			}
			t.Errorf("a %s call in phase %q (starting %v after the kill): %v, want one of %v", lc.route, phase, lc.start.Sub(killing).Round(time.Millisecond), lc.code, want)
		}
	}
	if bad > 5 {
		t.Errorf("%d calls in all were answered with a code their policy does not allow", bad)
	}
	t.Logf("%d calls, slowest %v; calls by phase/route %v, allowed %v", len(calls), slowest.Round(time.Millisecond), n, ok)
	// The load reached every phase that is checked.
	for _, k := range []string{"up/open", "up/closed", "down/open", "down/closed", "back/closed"} {
		if n[k] < burst+1 {
			t.Fatalf("only %d calls in %s: too little load to check it", n[k], k)
		}
	}
	// Redis before the kill, the fallback while Redis is dead, the
	// restarted Redis: each lets its allowance through, no more.
	if got := ok["up/open"] + ok["up/closed"]; got != 2*burst {
		t.Errorf("%d calls allowed before the kill, want %d (burst %d on each route)", got, 2*burst, burst)
	}
	if got := ok["down/open"]; got > openShare {
		t.Errorf("FAIL_OPEN allowed %d calls while Redis was dead, want at most %d (burst %d / 2 replicas)", got, openShare, burst)
	}
	// FAIL_CLOSED allows nothing while Redis is dead, and the old Redis's
	// burst was used up before the kill (checked above), so every closed
	// call allowed from the kill on, including one in flight across the
	// restart ("killing"), was allowed by the restarted Redis.
	if got := ok["killing/closed"] + ok["restarting/closed"] + ok["back/closed"]; got != burst {
		t.Errorf("FAIL_CLOSED allowed %d calls after the restart, want %d: the burst of the restarted (empty) Redis", got, burst)
	}
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	for _, k := range []string{"rate:" + quota.KeyPrefix + "open:127.0.0.1", "rate:" + quota.KeyPrefix + "closed:127.0.0.1"} {
		if got, err := rc.Exists(context.Background(), k).Result(); err != nil || got != 1 {
			keys, _ := rc.Keys(context.Background(), "*").Result()
			t.Errorf("counter %s is not in the restarted Redis (%v); keys %v", k, err, keys)
		}
	}
}
