package upstream

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/connectivity"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// TestRemovedBackendDrains checks that Update keeps a removed backend's
// connection for the calls in flight on it, closes it once they end, and
// closes it after the grace period when they do not.
func TestRemovedBackendDrains(t *testing.T) {
	a, _ := startBackend(t)
	for _, tc := range []struct {
		name   string
		grace  time.Duration
		finish bool // end the stream, rather than outlast the grace
	}{
		{"stream ends", time.Minute, true},
		{"grace passes", 200 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPool(t, []Spec{{Name: "gone", Endpoints: []string{a}}}, WithDrainGrace(tc.grace))
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			stream, err := client(t, p, "gone").FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cc, _ := p.Conn("gone")
			if err := p.Update(nil); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * drainPoll)
			if s := connState(cc); s == connectivity.Shutdown {
				t.Fatal("removed backend closed with a stream in flight")
			}
			// A call that resolved the backend on a route table from
			// before the removal still finds it while it drains.
			if _, ok := p.Conn("gone"); !ok {
				t.Error("Conn does not find a draining backend")
			}
			// The stream in flight still works.
			if err := stream.Send(&testpb.StreamingOutputCallRequest{
				ResponseParameters: []*testpb.ResponseParameters{{Size: 1}},
			}); err != nil {
				t.Fatalf("send on a draining backend: %v", err)
			}
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("recv on a draining backend: %v", err)
			}
			if tc.finish {
				_ = stream.CloseSend()
				if _, err := stream.Recv(); err == nil {
					t.Fatal("want the end of the stream")
				}
				cancel()
			}
			began := time.Now()
			waitFor(t, "the drained connection to close", func() bool {
				return connState(cc) == connectivity.Shutdown
			})
			if tc.finish && time.Since(began) > tc.grace/2 {
				t.Errorf("closed %v after the stream ended, want soon after", time.Since(began))
			}
		})
	}
}
