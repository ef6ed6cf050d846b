package test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// TestShedBeforeQuota: the listener's max_concurrent_calls sheds a call
// before the quota interceptor sees it, so shed calls use up no quota.
// With a burst of 3 and one call held at the backend (the listener is
// full), five calls are shed, all naming max_concurrent_calls; once the
// held call ends, two more calls pass and the third is refused by the
// quota: only the calls served counted.
func TestShedBeforeQuota(t *testing.T) {
	hs, backend := startHoldBackend(t)
	cfg := resilienceConfig([]string{backend}, "", "") + `
quota:
  policies:
    - { name: burst3, rate: { requests: 3, per: "1h", burst: 3 } }
`
	cfg = strings.Replace(cfg, "    protocol: grpc\n", "    protocol: grpc\n    limits: { max_concurrent_calls: 1 }\n", 1)
	g := startGateway(t, cfg)
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))

	held := heldCalls(t, hs, tc, 1, 0) // quota: 1 of 3
	ctx := ctxT(t, 10*time.Second)
	for i := range 5 {
		err := unaryOK(ctx, tc)
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_concurrent_calls") {
			t.Fatalf("call %d while the listener is full: %v, want RESOURCE_EXHAUSTED naming max_concurrent_calls", i+1, err)
		}
	}
	close(hs.release)
	if err := <-held; err != nil {
		t.Fatalf("held call: %v", err)
	}
	for i := range 2 { // quota: 3 of 3
		if err := unaryOK(ctx, tc); err != nil {
			t.Fatalf("call %d after the shed ones: %v, want served: shed calls used up quota", i+1, err)
		}
	}
	if err := unaryOK(ctx, tc); status.Code(err) != codes.ResourceExhausted || strings.Contains(err.Error(), "max_concurrent_calls") {
		t.Errorf("fourth served call: %v, want refused by the quota", err)
	}
}
