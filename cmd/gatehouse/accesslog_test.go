package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
)

// TestAccessLogFileRotates runs the real binary with the access log in a
// file of max_size_mb 1 and makes calls whose lines add up to more than
// that, but less than twice (each carries a 2 KiB user agent): the file
// is rotated once, the backup exists beside it, neither file is over the
// limit, and every line of both is a complete JSON object, each call
// logged exactly once.
func TestAccessLogFileRotates(t *testing.T) {
	bin := buildGatehouse(t)
	backend := startDelayBackend(t, 0)
	dir := t.TempDir()
	logFile := filepath.Join(dir, "access.log")
	p := serveConfig(t, bin, func(edge, admin string) string {
		return fmt.Sprintf(`
listeners: [{name: edge, address: %q, protocol: grpc}]
admin: {address: %q}
backends: [{name: testsvc, endpoints: [%q]}]
routes: [{name: testsvc, match: {service: "grpc.testing.TestService"}, backend: testsvc}]
telemetry: {access_log: {file: %q, max_size_mb: 1, max_backups: 3}}
`, edge, admin, backend, logFile)
	})

	ua := strings.Repeat("u", 2<<10)
	cc, err := grpc.NewClient(p.edge, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUserAgent(ua))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tc := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// 1 MiB takes ~450 lines: 650 calls rotate the file once.
	const calls, workers = 650, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < calls; i += workers {
				cctx := metadata.AppendToOutgoingContext(ctx, "x-request-id", fmt.Sprintf("rot-%d", i))
				if _, err := tc.UnaryCall(cctx, &testpb.SimpleRequest{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// SIGTERM: the buffered lines are written, the file closed.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("still running 20s after the signal")
	}

	files, err := filepath.Glob(filepath.Join(dir, "access*.log"))
	if err != nil {
		t.Fatal(err)
	}
	var backups []string
	for _, f := range files {
		if f != logFile {
			backups = append(backups, f)
		}
	}
	if len(backups) != 1 {
		t.Fatalf("want 1 rotated backup beside %s, got %v", logFile, files)
	}
	seen := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > 1<<20 {
			t.Errorf("%s has %d bytes, more than max_size_mb 1", f, len(data))
		}
		if len(data) > 0 && data[len(data)-1] != '\n' {
			t.Errorf("%s ends in the middle of a line", f)
		}
		for i, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("%s line %d is not a complete JSON object: %.80q...: %v", f, i+1, l, err)
			}
			if id, _ := m["request_id"].(string); strings.HasPrefix(id, "rot-") {
				seen[id]++
				if m["user_agent"] == nil || !strings.HasPrefix(m["user_agent"].(string), ua) {
					t.Errorf("%s line %d: user_agent cut", f, i+1)
				}
			}
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("call %s logged %d times", id, n)
		}
	}
	if len(seen) != calls {
		t.Errorf("%d of %d calls logged", len(seen), calls)
	}
}
