package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
)

// delayServer is the interop TestService whose UnaryCall takes delay, so
// that a load of calls always has some in flight.
type delayServer struct {
	testgrpc.TestServiceServer
	delay time.Duration
}

func (s *delayServer) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &testpb.SimpleResponse{}, nil
}

// startDelayBackend serves a delayServer on a free loopback port.
func startDelayBackend(t *testing.T, delay time.Duration) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, &delayServer{TestServiceServer: interop.NewTestServer(), delay: delay})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// TestAuditUnderLoadAcrossSIGTERM runs the real binary with an audit trail
// and keeps a load of calls going while it gets SIGTERM. With
// on_sink_failure KEEP_SERVING a call does not wait for its record, which
// is queued: the graceful shutdown must write every queued record. Every
// call that succeeded has its record (found by its request id, with
// outcome OK), and `gatehouse audit verify` passes on the file.
func TestAuditUnderLoadAcrossSIGTERM(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("SIGTERM cannot be sent on Windows")
	}
	bin := buildGatehouse(t)
	backend := startDelayBackend(t, 5*time.Millisecond)
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	p := serveConfig(t, bin, func(edge, admin string) string {
		return fmt.Sprintf(`
listeners: [{name: edge, address: %q, protocol: grpc}]
admin: {address: %q}
backends: [{name: testsvc, endpoints: [%q]}]
routes: [{name: testsvc, match: {service: "grpc.testing.TestService"}, backend: testsvc}]
audit: {file: %q, fsync: INTERVAL, fsync_interval: 20ms, on_sink_failure: KEEP_SERVING}
shutdown_grace: 10s
`, edge, admin, backend, auditFile)
	})

	cc, err := grpc.NewClient(p.edge, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tc := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const workers = 8
	var (
		mu        sync.Mutex
		succeeded []string // request ids of the calls that succeeded
		seq       atomic.Int64
		wg        sync.WaitGroup
	)
	stop := make(chan struct{})
	enough := make(chan struct{})
	var enoughOnce sync.Once
	for w := range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("load-%d-%d", w, seq.Add(1))
				cctx := metadata.AppendToOutgoingContext(ctx, "x-request-id", id)
				if _, err := tc.UnaryCall(cctx, &testpb.SimpleRequest{}); err != nil {
					time.Sleep(time.Millisecond) // refused while draining: try again until stopped
					continue
				}
				mu.Lock()
				succeeded = append(succeeded, id)
				if len(succeeded) >= 200 {
					enoughOnce.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		})
	}
	select {
	case <-enough:
	case <-time.After(20 * time.Second):
		close(stop)
		wg.Wait()
		t.Fatalf("the load never reached 200 calls\nstderr:\n%s", p.stderr)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Errorf("still running 20s after SIGTERM")
	}
	close(stop)
	wg.Wait()
	if code := p.exitCode(); code != 0 {
		t.Fatalf("exit status %d after SIGTERM\nstderr:\n%s", code, p.stderr)
	}

	var out, errOut bytes.Buffer
	if code := auditCommand([]string{"verify", auditFile}, &out, &errOut); code != 0 {
		t.Fatalf("gatehouse audit verify: exit %d: %s%s", code, out.String(), errOut.String())
	}
	data, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]string{} // request id → outcome code
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r struct {
			RequestID string `json:"request_id"`
			Method    string `json:"method"`
			Outcome   struct {
				Code string `json:"code"`
			} `json:"outcome"`
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("audit line is not JSON: %q: %v", l, err)
		}
		if r.Method == "/grpc.testing.TestService/UnaryCall" {
			recorded[r.RequestID] = r.Outcome.Code
		}
	}
	mu.Lock()
	defer mu.Unlock()
	missing := 0
	for _, id := range succeeded {
		if code, ok := recorded[id]; !ok || code != "OK" {
			missing++
			if missing <= 5 {
				t.Errorf("call %s succeeded; its record: %q (found %v)", id, code, ok)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d successful calls have no OK record", missing, len(succeeded))
	}
	t.Logf("%d successful calls, %d UnaryCall records; %s", len(succeeded), len(recorded), strings.TrimSpace(out.String()))
}
