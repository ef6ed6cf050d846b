package test

// Fault injection (issue 11): the config file going bad under a running
// gateway, and a client that stops reading a large response.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// TestFaultConfigFileGoesBad deletes, truncates and makes unreadable the
// config file of a running gateway, asks for a reload after each, and
// checks that every reload is refused and the last good config keeps
// serving; a good file then reloads again.
func TestFaultConfigFileGoesBad(t *testing.T) {
	a, _ := startTagged(t, "a")
	b, _ := startTagged(t, "b")
	keep, _ := startTagged(t, "keep")
	good := reloadYAML("127.0.0.1:0", "a", a, keep, 0)
	g, path := startFileGateway(t, good, edge.WithConfigWatchDebounce(20*time.Millisecond))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	admin := "http://" + g.Addr("admin").String()
	served := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		return string(resp.GetPayload().GetBody())
	}
	if got := served(); got != "a" {
		t.Fatalf("served by %q, want a", got)
	}
	faults := []struct {
		name  string
		apply func(t *testing.T)
	}{
		{"deleted", func(t *testing.T) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated", func(t *testing.T) { writeConfig(t, path, good[:len(good)/2], false) }},
		{"empty", func(t *testing.T) { writeConfig(t, path, "", false) }},
		{"unreadable", func(t *testing.T) {
			writeConfig(t, path, good, false)
			if os.Geteuid() == 0 {
				// root reads through any mode: make it a directory instead.
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err := os.Chmod(path, 0); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			f.apply(t)
			code, body, _ := httpDo(t, "POST", admin+"/v1/config:reload", "{}")
			got := served()
			logCase(t, "config file "+f.name, fmt.Sprintf("reload answered %d; calls served by %q", code, got))
			if code == http.StatusOK {
				t.Errorf("reload of a %s file answered 200: %s", f.name, body)
			}
			if got != "a" {
				t.Errorf("served by %q after a %s config file, want the last good config (a)", got, f.name)
			}
			_ = os.Chmod(path, 0o600)
			_ = os.Remove(path) // a file or the empty directory
		})
	}
	writeConfig(t, path, reloadYAML("127.0.0.1:0", "b", b, keep, 1), false)
	if code, body, _ := httpDo(t, "POST", admin+"/v1/config:reload", "{}"); code != http.StatusOK {
		t.Fatalf("reload of a good file: %d %s", code, body)
	}
	eventually(t, "the good config to be in force", func() bool { return served() == "b" })
}

// floodServer streams 1 MiB messages for as long as its client takes them
// and counts the messages its Send returned for.
type floodServer struct {
	testgrpc.UnimplementedTestServiceServer
	sent atomic.Int64
}

func (s *floodServer) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	payload := &testpb.Payload{Body: make([]byte, 1<<20)}
	for range 256 {
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: payload}); err != nil {
			return err
		}
		s.sent.Add(1)
	}
	return nil
}

// TestFaultSlowReader asks for 256 MiB as a server stream and reads
// nothing: flow control must stop the backend after a bounded number of
// messages, and the gateway's memory must stay bounded by its windows.
func TestFaultSlowReader(t *testing.T) {
	fs := &floodServer{}
	lisAddr := startFloodBackend(t, fs)
	for _, protocol := range []string{"shared", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			fs.sent.Store(0)
			g := startGateway(t, fmt.Sprintf(`
listeners:
  - name: edge
    address: "127.0.0.1:0"
    protocol: %s
    limits: { max_message_bytes: 2097152 }
backends:
  - name: flood
    endpoints: [%q]
routes:
  - name: flood
    match: { service: "*" }
    backend: flood
`, protocol, lisAddr))
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			before := ms.HeapInuse
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stream, err := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String())).StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil { // the stream is flowing
				t.Fatal(err)
			}
			// Wait until the backend is blocked: no message sent for 300ms.
			last, since := fs.sent.Load(), time.Now()
			for time.Since(since) < 300*time.Millisecond {
				time.Sleep(20 * time.Millisecond)
				if n := fs.sent.Load(); n != last {
					last, since = n, time.Now()
				}
				if last == 256 {
					break
				}
			}
			runtime.ReadMemStats(&ms)
			grown := int64(ms.HeapInuse) - int64(before)
			logCase(t, "slow reader/"+protocol, fmt.Sprintf("backend stopped after %d of 256 MiB; heap grew %d MiB", last, grown>>20))
			if last >= 256 {
				t.Errorf("the backend sent all 256 MiB to a client that read 1")
			}
			if grown > 128<<20 {
				t.Errorf("heap grew by %d MiB for one slow reader", grown>>20)
			}
			cancel()
		})
	}
}

func startFloodBackend(t *testing.T, fs *floodServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, fs)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().String()
}
