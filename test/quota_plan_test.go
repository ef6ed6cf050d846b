package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	"github.com/gatehouse-dev/gatehouse/internal/redistest"
	"github.com/gatehouse-dev/gatehouse/quota"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestQuotaPlans: a calendar quota for a plan, end to end with real API
// keys. Keys labelled plan: free get 2 calls a UTC day each, counted by
// key across REST and gRPC: the third call is RESOURCE_EXHAUSTED (429 over
// REST, with Retry-After up to the end of the day); a key labelled plan:
// pro is not limited by the policy and gets no RateLimit headers from it.
// In memory and on Redis.
func TestQuotaPlans(t *testing.T) {
	keys := map[string]string{"free-1": "k-free-1", "free-2": "k-free-2", "pro-1": "k-pro-1"}
	hash := func(id string) string {
		sum := sha256.Sum256([]byte(keys[id]))
		return hex.EncodeToString(sum[:])
	}
	// The in-memory store runs on a clock that is far from midnight; Redis
	// runs on its server's, the same machine's.
	noon := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		store func(t *testing.T) string // the quota's store section
		opts  []edge.Option
		now   func() time.Time
	}{
		{
			name:  "memory",
			store: func(*testing.T) string { return "" },
			opts:  []edge.Option{edge.WithQuotaOptions(quota.WithNow(func() time.Time { return noon }))},
			now:   func() time.Time { return noon },
		},
		{
			name: "redis",
			store: func(t *testing.T) string {
				return fmt.Sprintf("store: { redis: { addresses: [%q], timeout: \"1s\" } }", redistest.Start(t).Addr())
			},
			now: time.Now,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, backend := startGreeter(t)
			g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends: [{ name: greeter, endpoints: [%q] }]
authentication:
  api_keys:
    - name: keys
      header: x-api-key
      keys:
        - { id: free-1, sha256: %s, labels: { plan: free } }
        - { id: free-2, sha256: %s, labels: { plan: free } }
        - { id: pro-1, sha256: %s, labels: { plan: pro } }
routes:
  - name: hello
    match: { service: "examples.greeter.v1.GreeterService" }
    backend: greeter
    auth: { require: [keys] }
quota:
  %s
  policies:
    - name: free-plan-daily
      key: "principal.api_key"
      quota: { requests: 2, per: DAY }
      when: 'principal.labels["plan"] == "free"'
`, backend, hash("free-1"), hash("free-2"), hash("pro-1"), tt.store(t)), append(tt.opts, edge.WithREST(demo.REST()...))...)
			if tt.name == "redis" {
				waitPastMidnight(t)
			}
			client := greeterv1.NewGreeterServiceClient(dial(t, g.Addr("edge").String()))
			url := "http://" + g.Addr("edge").String() + "/v1/greeter:sayHello"
			grpcCall := func(id string) (codes.Code, metadata.MD, error) {
				t.Helper()
				ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-api-key", keys[id]), 5*time.Second)
				defer cancel()
				var hdr metadata.MD
				_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"}, grpc.Header(&hdr))
				return status.Code(err), hdr, err
			}
			restCall := func(id string) (int, string, http.Header) {
				t.Helper()
				return httpDo(t, http.MethodPost, url, `{"name":"Ada"}`, "X-Api-Key", keys[id])
			}

			// free-1: one call over gRPC, one over REST, then refused on both.
			code, hdr, err := grpcCall("free-1")
			if code != codes.OK {
				t.Fatalf("free-1, first call (gRPC): %v", err)
			}
			if got := strings.Join(hdr.Get("ratelimit-policy"), ""); !strings.HasPrefix(got, `"free-plan-daily";q=2;w=86400`) {
				t.Errorf("ratelimit-policy %q, want the daily quota of 2", got)
			}
			if got := strings.Join(hdr.Get("ratelimit"), ""); !strings.HasPrefix(got, `"free-plan-daily";r=1;`) {
				t.Errorf("ratelimit %q, want 1 call left", got)
			}
			sc, body, h := restCall("free-1")
			if sc != http.StatusOK {
				t.Fatalf("free-1, second call (REST): %d %s", sc, body)
			}
			if got := h.Get("RateLimit"); !strings.HasPrefix(got, `"free-plan-daily";r=0;`) {
				t.Errorf("REST RateLimit %q, want none left: the gRPC call counted", got)
			}
			code, _, err = grpcCall("free-1")
			if code != codes.ResourceExhausted {
				t.Fatalf("free-1, third call (gRPC): %v, want RESOURCE_EXHAUSTED", err)
			}
			var qf *errdetails.QuotaFailure
			for _, d := range status.Convert(err).Details() {
				if d, ok := d.(*errdetails.QuotaFailure); ok {
					qf = d
				}
			}
			if v := qf.GetViolations(); len(v) != 1 || v[0].GetQuotaId() != "free-plan-daily" || v[0].GetQuotaValue() != 2 {
				t.Errorf("QuotaFailure %v, want the free-plan-daily quota of 2", qf)
			}
			sc, body, h = restCall("free-1")
			if sc != http.StatusTooManyRequests {
				t.Fatalf("free-1, fourth call (REST): %d %s, want 429", sc, body)
			}
			// Retry-After is the time to the end of the UTC day, in seconds.
			now := tt.now().UTC()
			toMidnight := now.Truncate(24 * time.Hour).Add(24 * time.Hour).Sub(now)
			ra, err := strconv.Atoi(h.Get("Retry-After"))
			if err != nil || ra < 1 || time.Duration(ra)*time.Second > toMidnight+5*time.Second || time.Duration(ra)*time.Second < toMidnight-5*time.Second {
				t.Errorf("Retry-After %q, want about %v (to the end of the UTC day)", h.Get("Retry-After"), toMidnight.Round(time.Second))
			}

			// free-2 has a count of its own.
			if code, _, err := grpcCall("free-2"); code != codes.OK {
				t.Errorf("free-2 after free-1 ran out: %v", err)
			}
			// pro-1 is not on the free plan: no limit, no RateLimit headers.
			for i := range 5 {
				code, hdr, err := grpcCall("pro-1")
				if code != codes.OK {
					t.Fatalf("pro-1, call %d (gRPC): %v", i+1, err)
				}
				if len(hdr.Get("ratelimit")) != 0 {
					t.Errorf("pro-1 got ratelimit %v from a policy that does not apply", hdr.Get("ratelimit"))
				}
				sc, body, h := restCall("pro-1")
				if sc != http.StatusOK {
					t.Fatalf("pro-1, call %d (REST): %d %s", i+1, sc, body)
				}
				if h.Get("RateLimit") != "" {
					t.Errorf("pro-1 got RateLimit %q from a policy that does not apply", h.Get("RateLimit"))
				}
			}
		})
	}
}

// waitPastMidnight waits, if the UTC day ends within the next few seconds,
// until it has ended, so that a test's calls fall in one calendar window.
func waitPastMidnight(t *testing.T) {
	now := time.Now().UTC()
	if left := now.Truncate(24 * time.Hour).Add(24 * time.Hour).Sub(now); left < 10*time.Second {
		t.Logf("waiting %v for the UTC day to end", left)
		time.Sleep(left + 100*time.Millisecond)
	}
}
