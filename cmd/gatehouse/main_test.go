package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRun drives the command line in-process: exit status, and what goes
// to stdout and stderr.
func TestRun(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string // substrings of stdout
		wantStderr []string // substrings of stderr
		// stderrLines, when set, is the exact stderr, line by line.
		stderrLines []string
	}{
		{
			name:       "version",
			args:       []string{"version"},
			wantStdout: []string{"gatehouse "},
		},
		{
			name:       "--version",
			args:       []string{"--version"},
			wantStdout: []string{"gatehouse "},
		},
		{
			name:       "help",
			args:       []string{"help"},
			wantStdout: []string{"usage: gatehouse <command>", "serve -c FILE", "validate -c FILE"},
		},
		{
			name:       "no command",
			args:       nil,
			wantCode:   2,
			wantStderr: []string{"usage: gatehouse <command>"},
		},
		{
			name:       "unknown command",
			args:       []string{"frobnicate"},
			wantCode:   2,
			wantStderr: []string{`gatehouse: unknown command "frobnicate"`, "usage: gatehouse <command>", "serve -c FILE"},
		},
		{
			name:       "validate good",
			args:       []string{"validate", "-c", "testdata/good.yaml"},
			wantStdout: []string{"testdata/good.yaml: ok\n"},
		},
		{
			name:     "validate bad lists every error",
			args:     []string{"validate", "-c", "testdata/bad.yaml"},
			wantCode: 1,
			stderrLines: []string{
				`bad.yaml: listeners[0].address: want host:port, got "127.0.0.1" (missing port in address)`,
				`bad.yaml: listeners[0].protocol: want one of "shared" or "grpc" (or leave it out), got "http3"`,
				`bad.yaml: backends[0].weight: unknown field "weight"`,
				`bad.yaml: routes[0].backend: unknown backend "nowhere"`,
			},
		},
		{
			name:       "validate missing file",
			args:       []string{"validate", "-c", "testdata/missing.yaml"},
			wantCode:   1,
			wantStderr: []string{"testdata/missing.yaml", "no such file or directory"},
		},
		{
			name:       "validate bad flag",
			args:       []string{"validate", "-x"},
			wantCode:   2,
			wantStderr: []string{"flag provided but not defined: -x"},
		},
		{
			name:     "serve bad config",
			args:     []string{"serve", "-c", "testdata/bad.yaml"},
			wantCode: 1,
			stderrLines: []string{
				`bad.yaml: listeners[0].address: want host:port, got "127.0.0.1" (missing port in address)`,
				`bad.yaml: listeners[0].protocol: want one of "shared" or "grpc" (or leave it out), got "http3"`,
				`bad.yaml: backends[0].weight: unknown field "weight"`,
				`bad.yaml: routes[0].backend: unknown backend "nowhere"`,
			},
		},
		{
			name:       "serve missing file",
			args:       []string{"serve", "-c", "testdata/missing.yaml"},
			wantCode:   1,
			wantStderr: []string{"testdata/missing.yaml"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, &stdout, &stderr)
			}
			for _, s := range tt.wantStdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout does not hold %q:\n%s", s, &stdout)
				}
			}
			for _, s := range tt.wantStderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr does not hold %q:\n%s", s, &stderr)
				}
			}
			if tt.stderrLines != nil {
				got := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
				if strings.Join(got, "\n") != strings.Join(tt.stderrLines, "\n") {
					t.Errorf("stderr:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.stderrLines, "\n"))
				}
				if stdout.Len() != 0 {
					t.Errorf("stdout is not empty: %q", &stdout)
				}
			}
			if tt.wantCode == 0 && stderr.Len() != 0 {
				t.Errorf("stderr is not empty: %q", &stderr)
			}
		})
	}
}

// syncBuffer is a goroutine-safe bytes.Buffer for a child process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// jsonLines decodes every line of s as a JSON object.
func jsonLines(t *testing.T, what, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("%s line is not JSON: %q: %v", what, l, err)
			continue
		}
		out = append(out, m)
	}
	return out
}

// buildGatehouse builds this command with the go tool that runs the test
// and returns the binary's path.
func buildGatehouse(t *testing.T) string {
	t.Helper()
	goTool := "go"
	if root := os.Getenv("GOROOT"); root != "" {
		goTool = filepath.Join(root, "bin", "go")
	}
	if _, err := exec.LookPath(goTool); err != nil {
		t.Skipf("no go tool to build the binary with: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "gatehouse")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// slowServer is the interop TestService whose UnaryCall takes delay and
// announces its arrival on arrived.
type slowServer struct {
	testgrpc.TestServiceServer
	delay   time.Duration
	arrived chan struct{}
}

func (s *slowServer) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s.arrived <- struct{}{}
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, req.GetResponseSize())}}, nil
}

// startSlowBackend serves a slowServer on a free loopback port.
func startSlowBackend(t *testing.T, delay time.Duration) (*slowServer, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ss := &slowServer{TestServiceServer: interop.NewTestServer(), delay: delay, arrived: make(chan struct{}, 64)}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, ss)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return ss, lis.Addr().String()
}

// freePort returns a loopback port that was free a moment ago. The caller
// must be ready to retry if someone else takes it in between.
func freePort(t *testing.T) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

// process is a running gatehouse binary.
type process struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	exited         chan struct{} // closed when the process has exited
	err            error         // cmd.Wait's result, once exited is closed
	edge, admin    string
}

// exitCode returns the exit status, or -1 if the process was killed by a
// signal.
func (p *process) exitCode() int { return p.cmd.ProcessState.ExitCode() }

// startServing writes a config, runs `gatehouse serve` on it and waits until
// a call through it succeeds. Ports are picked free beforehand; when one was
// taken in between, it tries again with new ones.
func startServing(t *testing.T, bin, protocol, backend string, grace time.Duration) *process {
	t.Helper()
	return serveConfig(t, bin, func(edge, admin string) string {
		return fmt.Sprintf(`
listeners:
  - name: edge
    address: %q
    protocol: %q
admin:
  address: %q
backends:
  - name: testsvc
    endpoints: [%q]
routes:
  - name: testsvc
    match: { service: "grpc.testing.TestService" }
    backend: testsvc
shutdown_grace: %s
`, edge, protocol, admin, backend, grace)
	})
}

// serveConfig runs `gatehouse serve` on the config that yaml returns for
// the edge and admin addresses given, and waits until a call through it
// succeeds (startServing with a config of the test's own).
func serveConfig(t *testing.T, bin string, yaml func(edge, admin string) string) *process {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p := &process{
			edge:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		}
		cfg := filepath.Join(t.TempDir(), "gatehouse.yaml")
		if err := os.WriteFile(cfg, []byte(yaml(p.edge, p.admin)), 0o600); err != nil {
			t.Fatal(err)
		}
		p.stdout, p.stderr = &syncBuffer{}, &syncBuffer{}
		p.cmd = exec.Command(bin, "serve", "-c", cfg)
		p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p.exited = make(chan struct{})
		go func() { p.err = p.cmd.Wait(); close(p.exited) }()
		t.Cleanup(func() {
			select {
			case <-p.exited:
			default:
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		})
		if p.waitServing(t) {
			return p
		}
		if attempt < 5 && strings.Contains(p.stderr.String(), "address already in use") {
			t.Logf("a port was taken, trying again:\n%s", p.stderr)
			continue
		}
		t.Fatalf("gatehouse serve never served (exit: %v)\nstderr:\n%s", p.err, p.stderr)
	}
}

// waitServing polls with calls until one passes through the gateway to the
// backend. It reports false if the process exits or nothing works in time.
func (p *process) waitServing(t *testing.T) bool {
	t.Helper()
	cc, err := grpc.NewClient(p.edge, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tc := testgrpc.NewTestServiceClient(cc)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		select {
		case <-p.exited:
			return false
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := tc.EmptyCall(ctx, &testpb.Empty{})
		cancel()
		if err == nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// TestServeDrainsOnSIGTERM runs the real binary in front of a backend, sends
// it SIGTERM while unary and bidi calls are in flight, and checks the drain
// from the outside: the process logs "draining", refuses new connections,
// lets every in-flight call finish OK, writes one access line per call and
// exits 0 within the grace period.
func TestServeDrainsOnSIGTERM(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("SIGTERM cannot be sent on Windows")
	}
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildGatehouse(t)
	for _, protocol := range []string{"shared", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			testDrainOnSIGTERM(t, bin, protocol)
		})
	}
}

func testDrainOnSIGTERM(t *testing.T, bin, protocol string) {
	const (
		callTime    = 1500 * time.Millisecond // how long each in-flight call takes
		grace       = 10 * time.Second
		unary, bidi = 3, 3
	)
	slow, backend := startSlowBackend(t, callTime)
	p := startServing(t, bin, protocol, backend, grace)

	cc, err := grpc.NewClient(p.edge, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tc := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Start the calls and wait until each is known to be in flight: the
	// backend has the unary calls, and each bidi call has its first message
	// back and is waiting callTime for its second.
	type result struct {
		kind string
		err  error
		end  time.Time
	}
	results := make(chan result, unary+bidi)
	inFlight := make(chan struct{}, bidi)
	for range unary {
		go func() {
			resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10})
			if err == nil && len(resp.GetPayload().GetBody()) != 10 {
				err = fmt.Errorf("%d bytes, want 10", len(resp.GetPayload().GetBody()))
			}
			results <- result{"unary", err, time.Now()}
		}()
	}
	for range bidi {
		go func() {
			results <- result{"bidi", fullDuplex(ctx, tc, callTime, inFlight), time.Now()}
		}()
	}
	for _, w := range []struct {
		ch   <-chan struct{}
		n    int
		what string
	}{{slow.arrived, unary, "unary calls reached the backend"}, {inFlight, bidi, "bidi calls got their first message"}} {
		for range w.n {
			select {
			case <-w.ch:
			case r := <-results:
				t.Fatalf("%s call ended before SIGTERM: %v", r.kind, r.err)
			case <-time.After(10 * time.Second):
				t.Fatalf("not all %s", w.what)
			}
		}
	}

	sigterm := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// New connections are refused while the calls are still in flight.
	refusedAt := time.Time{}
	for deadline := time.Now().Add(callTime / 2); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", p.edge, time.Second)
		if err == nil {
			_ = c.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			refusedAt = time.Now()
			break
		}
		if !errors.Is(err, syscall.ECONNRESET) { // reset: queued as the listener closed
			t.Fatalf("dial during the drain: %v", err)
		}
	}
	if refusedAt.IsZero() {
		t.Errorf("new connections still accepted %v after SIGTERM", callTime/2)
	}
	fresh, err := grpc.NewClient(p.edge, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if _, err := testgrpc.NewTestServiceClient(fresh).EmptyCall(ctx, &testpb.Empty{}); status.Code(err) != codes.Unavailable {
		t.Errorf("a call on a new connection during the drain: %v, want UNAVAILABLE", err)
	}

	for range unary + bidi {
		select {
		case r := <-results:
			if r.err != nil {
				t.Errorf("in-flight %s call: %v", r.kind, r.err)
			}
			if !refusedAt.IsZero() && r.end.Before(refusedAt) {
				t.Errorf("in-flight %s call ended before new connections were refused: no drain was observed", r.kind)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("an in-flight call never finished")
		}
	}

	select {
	case <-p.exited:
	case <-time.After(grace + 5*time.Second):
		t.Fatalf("still running %v after SIGTERM", time.Since(sigterm))
	}
	if took := time.Since(sigterm); took > grace {
		t.Errorf("exited %v after SIGTERM, more than the %v grace period", took, grace)
	}
	if p.exitCode() != 0 {
		t.Errorf("exit status %d (%v), want 0\nstderr:\n%s", p.exitCode(), p.err, p.stderr)
	}

	// Process log on stderr: "draining" with the grace period, then "stopped".
	var draining, stopped bool
	for _, l := range jsonLines(t, "stderr", p.stderr.String()) {
		switch l["msg"] {
		case "draining":
			draining = true
			if l["grace"] != grace.String() {
				t.Errorf("draining line: grace %v, want %s", l["grace"], grace)
			}
		case "stopped":
			stopped = draining
		}
	}
	if !draining || !stopped {
		t.Errorf("stderr lacks a \"draining\" line followed by a \"stopped\" line:\n%s", p.stderr)
	}

	// Access log on stdout: one line per call, each naming the method and
	// the route.
	perMethod := map[string]int{}
	for _, l := range jsonLines(t, "stdout", p.stdout.String()) {
		method, _ := l["grpc.method"].(string)
		route, hasRoute := l["route"].(string)
		if method == "" || !hasRoute {
			t.Errorf("access line without grpc.method and route: %v", l)
			continue
		}
		if route != "testsvc" {
			t.Errorf("access line for %s: route %q, want testsvc", method, route)
		}
		if method == "/grpc.testing.TestService/EmptyCall" {
			continue // the readiness polls
		}
		perMethod[method]++
		if l["grpc.code"] != "OK" {
			t.Errorf("access line for in-flight %s: grpc.code %v, want OK", method, l["grpc.code"])
		}
	}
	want := map[string]int{
		"/grpc.testing.TestService/UnaryCall":      unary,
		"/grpc.testing.TestService/FullDuplexCall": bidi,
	}
	if fmt.Sprint(perMethod) != fmt.Sprint(want) {
		t.Errorf("access lines per method %v, want %v\nstdout:\n%s", perMethod, want, p.stdout)
	}
}

// fullDuplex makes one FullDuplexCall that asks for one message at once and
// one after d, signals inFlight when the first has arrived, and expects both
// and then OK.
func fullDuplex(ctx context.Context, tc testgrpc.TestServiceClient, d time.Duration, inFlight chan<- struct{}) error {
	stream, err := tc.FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	err = stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{
		{Size: 1},
		{Size: 2, IntervalUs: int32(d / time.Microsecond)},
	}})
	if err != nil {
		return err
	}
	for i, size := range []int{1, 2} {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		if len(m.GetPayload().GetBody()) != size {
			return fmt.Errorf("message %d: %d bytes, want %d", i, len(m.GetPayload().GetBody()), size)
		}
		if i == 0 {
			inFlight <- struct{}{}
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	if _, err := stream.Recv(); err != io.EOF {
		return fmt.Errorf("after the last message: %v, want EOF", err)
	}
	return nil
}
