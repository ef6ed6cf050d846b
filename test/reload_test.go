package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/edge"
	adminv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/admin/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// taggedServer answers every UnaryCall, and every message of a
// FullDuplexCall, with its tag as the payload: the client sees which
// backend served it.
type taggedServer struct {
	testgrpc.UnimplementedTestServiceServer
	tag string
}

func (s *taggedServer) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte(s.tag)}}, nil
}

func (s *taggedServer) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	for {
		if _, err := stream.Recv(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte(s.tag)}}); err != nil {
			return err
		}
	}
}

// connCounter is a server stats handler that counts accepted connections.
type connCounter struct{ n atomic.Int64 }

func (c *connCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c *connCounter) HandleRPC(context.Context, stats.RPCStats)                       {}
func (c *connCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (c *connCounter) HandleConn(_ context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnBegin); ok {
		c.n.Add(1)
	}
}

// startTagged starts a taggedServer on loopback and returns its address and
// its count of accepted connections.
func startTagged(t *testing.T, tag string) (string, *connCounter) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cc := &connCounter{}
	s := grpc.NewServer(grpc.StatsHandler(cc))
	testgrpc.RegisterTestServiceServer(s, &taggedServer{tag: tag})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String(), cc
}

// reloadYAML is a config whose main route sends the TestService to the
// backend named target (at addr), and whose "pinned" route sends calls
// with x-pin: keep to backend keep. gen sets shutdown_grace to gen+10
// seconds, so that the test can see which write is in force.
func reloadYAML(admin, target, addr, keep string, gen int) string {
	return fmt.Sprintf(`# generation %[6]d
listeners:
  - name: edge
    address: "127.0.0.1:0"
admin:
  address: %[1]q
backends:
  - name: keep
    endpoints: [%[4]q]
  - name: %[2]s
    endpoints: [%[3]q]
routes:
  - name: pinned
    match:
      service: "grpc.testing.TestService"
      metadata: [{ name: "x-pin", exact: "keep" }]
    backend: keep
  - name: main
    match: { service: "grpc.testing.TestService" }
    backend: %[2]s
shutdown_grace: %[5]ds
`, admin, target, addr, keep, gen+10, gen)
}

// writeConfig writes content to path, in place or by an atomic rename of
// a temporary file in the same directory.
func writeConfig(t *testing.T, path, content string, rename bool) {
	t.Helper()
	if !rename {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	tmp := filepath.Join(filepath.Dir(path), ".gatehouse.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startFileGateway writes yaml to a file in a fresh directory, loads it
// and starts a gateway that reloads from it.
func startFileGateway(t *testing.T, yaml string, opts ...edge.Option) (*edge.Gateway, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatehouse.yaml")
	writeConfig(t, path, yaml, false)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := edge.New(cfg, append([]edge.Option{edge.WithHealthInterval(50 * time.Millisecond), edge.WithConfigFile(path)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return g, path
}

// eventually polls cond every 5ms for up to 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// heldStream is a bidi stream held open through reloads.
type heldStream struct {
	stream testgrpc.TestService_FullDuplexCallClient
	tag    string // the backend that serves it
}

// ping sends one message and returns the tag of the answer.
func (h *heldStream) ping() (string, error) {
	if err := h.stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	resp, err := h.stream.Recv()
	if err != nil {
		return "", fmt.Errorf("recv: %w", err)
	}
	return string(resp.GetPayload().GetBody()), nil
}

// TestReloadUnderLoad rewrites the config file 20 times, valid and invalid,
// in place and by rename, while clients make unary calls without pause and
// hold bidi streams open. Every valid write moves the main route between
// backends "a" and "b" (each config holds only the one it routes to, so the
// other is removed and drains), and keeps backend "keep" unchanged. No
// call may fail, no stream may drop, each valid write must be in force once
// the watcher has read it, each invalid one must leave the previous config
// serving and show in GetConfig, and backend "keep" must keep its one
// connection.
func TestReloadUnderLoad(t *testing.T) {
	addrs := map[string]string{}
	addrs["a"], _ = startTagged(t, "a")
	addrs["b"], _ = startTagged(t, "b")
	keepAddr, keepConns := startTagged(t, "keep")
	adminAddr := "127.0.0.1:0"

	g, path := startFileGateway(t, reloadYAML(adminAddr, "a", addrs["a"], keepAddr, 0),
		edge.WithConfigWatchDebounce(20*time.Millisecond))
	cc := dial(t, g.Addr("edge").String())
	tc := testgrpc.NewTestServiceClient(cc)
	admin := adminv1.NewAdminServiceClient(dial(t, g.Addr("admin").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pinned := metadata.AppendToOutgoingContext(ctx, "x-pin", "keep")

	unaryTag := func(ctx context.Context) (string, error) {
		resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{})
		return string(resp.GetPayload().GetBody()), err
	}

	// Unary load, without pause, on both routes.
	var (
		calls, failed atomic.Int64
		firstErr      atomic.Value
		stop          = make(chan struct{})
		wg            sync.WaitGroup
	)
	for i := range 6 {
		wg.Go(func() {
			cctx := ctx
			if i%3 == 0 {
				cctx = pinned
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := unaryTag(cctx); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				calls.Add(1)
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	var held []*heldStream
	hold := func(ctx context.Context, want string) {
		t.Helper()
		s, err := tc.FullDuplexCall(ctx)
		if err != nil {
			t.Fatalf("open stream: %v", err)
		}
		h := &heldStream{stream: s, tag: want}
		got, err := h.ping()
		if err != nil || got != want {
			t.Fatalf("new stream: served by %q (%v), want %q", got, err, want)
		}
		held = append(held, h)
	}
	pingAll := func(when string) {
		t.Helper()
		for i, h := range held {
			if got, err := h.ping(); err != nil || got != h.tag {
				t.Fatalf("%s: stream %d (on %s): got %q, %v", when, i, h.tag, got, err)
			}
		}
	}
	for range 3 {
		hold(ctx, "a")
	}
	hold(pinned, "keep")

	invalid := []struct {
		yaml string
		want string // in GetConfig.last_errors
	}{
		{"listeners: [\n  - name: edge\n", "gatehouse.yaml: line"},
		{strings.Replace(reloadYAML(adminAddr, "a", addrs["a"], keepAddr, 99), "backend: a", "backend: nowhere", 1), `routes[1].backend: unknown backend "nowhere"`},
		{reloadYAML(adminAddr, "a", addrs["a"], keepAddr, 98) + "surprise: 1\n", "surprise"},
		{"", "the file is empty"},
	}
	target := "a"
	var wantFailures int64
	for i := 1; i <= 20; i++ {
		rename := i%2 == 1
		if i%5 == 3 { // 4 invalid writes
			bad := invalid[i/5]
			writeConfig(t, path, bad.yaml, rename)
			wantFailures++
			eventually(t, fmt.Sprintf("write %d (invalid) to be refused", i), func() bool {
				return g.ReloadStats().Failures == wantFailures
			})
			resp, err := admin.GetConfig(ctx, &adminv1.GetConfigRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(resp.GetLastErrors(), "\n"), bad.want) {
				t.Fatalf("write %d: last_errors %q, want one containing %q", i, resp.GetLastErrors(), bad.want)
			}
			if resp.GetReloadFailures() != wantFailures {
				t.Errorf("write %d: reload_failures %d, want %d", i, resp.GetReloadFailures(), wantFailures)
			}
			if got, err := unaryTag(ctx); err != nil || got != target {
				t.Fatalf("write %d (invalid): served by %q (%v), want the previous config's %q", i, got, err, target)
			}
			pingAll(fmt.Sprintf("after write %d (invalid)", i))
			continue
		}
		target = map[string]string{"a": "b", "b": "a"}[target]
		writeConfig(t, path, reloadYAML(adminAddr, target, addrs[target], keepAddr, i), rename)
		wantGrace := time.Duration(i+10) * time.Second
		eventually(t, fmt.Sprintf("write %d to be in force", i), func() bool {
			return g.ShutdownGrace() == wantGrace
		})
		// The table is swapped before the config is recorded: the next
		// call takes the new route.
		if got, err := unaryTag(ctx); err != nil || got != target {
			t.Fatalf("write %d: served by %q (%v), want %q", i, got, err, target)
		}
		if errs := g.ReloadStats().LastErrors; errs != nil {
			t.Fatalf("write %d: last errors %q after a valid reload", i, errs)
		}
		pingAll(fmt.Sprintf("after write %d", i))
		hold(ctx, target)
	}
	time.Sleep(50 * time.Millisecond) // load on the last config too
	close(stop)
	wg.Wait()

	pingAll("at the end")
	for i, h := range held {
		if err := h.stream.CloseSend(); err != nil {
			t.Fatalf("stream %d: close send: %v", i, err)
		}
		if _, err := h.stream.Recv(); err != io.EOF {
			t.Fatalf("stream %d (on %s): ended with %v, want a clean end", i, h.tag, err)
		}
	}
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d unary calls failed; first: %v", n, calls.Load(), firstErr.Load())
	}
	st := g.ReloadStats()
	if st.Reloads != 20 || st.Failures != 4 {
		t.Errorf("reloads %d, failures %d; want 20, 4", st.Reloads, st.Failures)
	}
	if n := keepConns.n.Load(); n != 1 {
		t.Errorf("backend keep accepted %d connections across the reloads, want 1 (kept)", n)
	}
	t.Logf("%d unary calls, %d streams held, %d reloads", calls.Load(), len(held), st.Reloads)
}

// TestConfigAdminAPI drives GetConfig, ValidateConfig and ReloadConfig over
// gRPC and REST on a gateway whose watcher is off.
func TestConfigAdminAPI(t *testing.T) {
	a, _ := startTagged(t, "a")
	b, _ := startTagged(t, "b")
	keep, _ := startTagged(t, "keep")
	secretYAML := strings.Replace(reloadYAML("127.0.0.1:0", "a", a, keep, 0), "shutdown_grace:", `    request_metadata:
      set: [{ name: "authorization", value: "Bearer s3cr3t" }]
shutdown_grace:`, 1)
	g, path := startFileGateway(t, secretYAML, edge.WithConfigWatchDebounce(-1))
	adminAddr := g.Addr("admin").String()
	admin := adminv1.NewAdminServiceClient(dial(t, adminAddr))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	servedBy := func() string {
		t.Helper()
		resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return string(resp.GetPayload().GetBody())
	}
	base := "http://" + adminAddr

	t.Run("GetConfig", func(t *testing.T) {
		resp, err := admin.GetConfig(ctx, &adminv1.GetConfigRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetSource() != path || resp.GetReloads() != 0 || resp.GetLoadedAt() == "" {
			t.Errorf("source %q reloads %d loaded_at %q", resp.GetSource(), resp.GetReloads(), resp.GetLoadedAt())
		}
		js := resp.GetConfigJson()
		if strings.Contains(js, "s3cr3t") || !strings.Contains(js, "[REDACTED]") {
			t.Errorf("config_json does not redact the authorization value: %s", js)
		}
		if !strings.Contains(js, `"shutdown_grace"`) || !strings.Contains(js, `"request_metadata"`) {
			t.Errorf("config_json not in snake_case: %s", js)
		}
		code, body, _ := httpDo(t, "GET", base+"/v1/config", "")
		var rest adminv1.GetConfigResponse
		if code != 200 || unmarshalJSON(body, &rest) != nil || rest.GetSource() != path || strings.Contains(body, "s3cr3t") {
			t.Errorf("GET /v1/config: %d %s", code, body)
		}
	})

	t.Run("ValidateConfig", func(t *testing.T) {
		bad := strings.Replace(reloadYAML("127.0.0.1:0", "b", b, keep, 1), "backend: b", "backend: nowhere", 1) + "surprise: 1\n"
		resp, err := admin.ValidateConfig(ctx, &adminv1.ValidateConfigRequest{Content: bad})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			`candidate.yaml: routes[1].backend: unknown backend "nowhere"`,
			`candidate.yaml: surprise: unknown field`,
		}
		if resp.GetValid() || len(resp.GetErrors()) != 2 {
			t.Fatalf("ValidateConfig(bad) = %v", resp)
		}
		for i, w := range want {
			if !strings.HasPrefix(resp.GetErrors()[i], w) {
				t.Errorf("error %d = %q, want it to start with %q", i, resp.GetErrors()[i], w)
			}
		}
		good := reloadYAML("127.0.0.1:0", "b", b, keep, 1)
		resp, err = admin.ValidateConfig(ctx, &adminv1.ValidateConfigRequest{Content: good, Name: "next.yaml"})
		if err != nil || !resp.GetValid() || len(resp.GetErrors()) != 0 {
			t.Fatalf("ValidateConfig(good) = %v, %v", resp, err)
		}
		if got := servedBy(); got != "a" {
			t.Errorf("after ValidateConfig, served by %q: a candidate must not be applied", got)
		}
		code, body, _ := httpDo(t, "POST", base+"/v1/config:validate", fmt.Sprintf(`{"content": %q, "name": "rest.yaml"}`, bad))
		var rest adminv1.ValidateConfigResponse
		if code != 200 || unmarshalJSON(body, &rest) != nil || rest.GetValid() || len(rest.GetErrors()) != 2 ||
			!strings.HasPrefix(rest.GetErrors()[0], "rest.yaml: routes[1].backend") {
			t.Errorf("POST /v1/config:validate: %d %s", code, body)
		}
		if code, body, _ := httpDo(t, "POST", base+"/v1/config:validate", `{"content": ""}`); code != 400 {
			t.Errorf("POST /v1/config:validate with no content: %d %s, want 400", code, body)
		}
		if st := g.ReloadStats(); st.Reloads != 0 {
			t.Errorf("ValidateConfig counted as a reload: %+v", st)
		}
	})

	t.Run("ReloadConfig", func(t *testing.T) {
		writeConfig(t, path, strings.Replace(reloadYAML("127.0.0.1:0", "b", b, keep, 2), "backend: b", "backend: nowhere", 1), true)
		_, err := admin.ReloadConfig(ctx, &adminv1.ReloadConfigRequest{})
		st := status.Convert(err)
		if st.Code() != codes.FailedPrecondition {
			t.Fatalf("ReloadConfig(invalid file) = %v, want FAILED_PRECONDITION", err)
		}
		var fields []string
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					fields = append(fields, v.GetField()+": "+v.GetDescription())
				}
			}
		}
		if len(fields) != 1 || fields[0] != `routes[1].backend: unknown backend "nowhere"` {
			t.Errorf("BadRequest violations %q", fields)
		}
		code, body, _ := httpDo(t, "POST", base+"/v1/config:reload", "{}")
		if code != 400 || !strings.Contains(body, "BadRequest") || !strings.Contains(body, "routes[1].backend") {
			t.Errorf("POST /v1/config:reload (invalid): %d %s", code, body)
		}
		gc, err := admin.GetConfig(ctx, &adminv1.GetConfigRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if gc.GetReloads() != 2 || gc.GetReloadFailures() != 2 || len(gc.GetLastErrors()) != 1 ||
			!strings.Contains(gc.GetLastErrors()[0], "gatehouse.yaml: routes[1].backend") {
			t.Errorf("GetConfig after refused reloads: %v", gc)
		}
		if got := servedBy(); got != "a" {
			t.Errorf("after a refused reload, served by %q, want the config in force (a)", got)
		}

		// Valid, but with an admin change that needs a restart: applied
		// for the rest, the admin field reported.
		next := strings.Replace(reloadYAML("127.0.0.1:0", "b", b, keep, 3), "admin:\n", "admin:\n  pprof: true\n", 1)
		writeConfig(t, path, next, false)
		resp, err := admin.ReloadConfig(ctx, &adminv1.ReloadConfigRequest{})
		if err != nil || resp.GetRoutes() != 2 || resp.GetLoadedAt() == "" {
			t.Fatalf("ReloadConfig(valid) = %v, %v", resp, err)
		}
		if got := servedBy(); got != "b" {
			t.Errorf("after the reload, served by %q, want b", got)
		}
		var hdr metadata.MD
		gc, err = admin.GetConfig(ctx, &adminv1.GetConfigRequest{}, grpc.Header(&hdr))
		if err != nil {
			t.Fatal(err)
		}
		if len(gc.GetLastErrors()) != 0 || gc.GetReloads() != 3 || strings.Contains(gc.GetConfigJson(), "pprof") {
			t.Errorf("GetConfig after a good reload: %v", gc)
		}
		if got := hdr.Get(edge.PendingRestartHeader); len(got) != 1 || got[0] != "admin.pprof" {
			t.Errorf("%s = %q, want admin.pprof", edge.PendingRestartHeader, got)
		}
		_, _, h := httpDo(t, "GET", base+"/v1/config", "")
		if got := h.Get(edge.PendingRestartHeader); got != "admin.pprof" {
			t.Errorf("REST %s = %q, want admin.pprof", edge.PendingRestartHeader, got)
		}
		code, body, _ = httpDo(t, "POST", base+"/v1/config:reload", "{}")
		if code != 200 || !strings.Contains(body, `"routes":2`) {
			t.Errorf("POST /v1/config:reload: %d %s", code, body)
		}
	})
}

// TestReloadProgrammatic covers Gateway.Reload with a config built in code:
// it is checked as a file is, and a refused one keeps the old serving.
func TestReloadProgrammatic(t *testing.T) {
	a, _ := startTagged(t, "a")
	b, _ := startTagged(t, "b")
	keep, _ := startTagged(t, "keep")
	var hooks []bool
	var mu sync.Mutex
	g := startGateway(t, reloadYAML("127.0.0.1:0", "a", a, keep, 0),
		edge.WithReloadHook(func(ok bool) { mu.Lock(); hooks = append(hooks, ok); mu.Unlock() }))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	next, err := config.Parse("next.yaml", []byte(reloadYAML("127.0.0.1:0", "b", b, keep, 1)))
	if err != nil {
		t.Fatal(err)
	}
	next.GetRoutes()[1].Backend = "nowhere"
	err = g.Reload(ctx, next)
	var rerr *edge.ReloadError
	var cerr *config.Error
	if !errors.As(err, &rerr) || !errors.As(err, &cerr) || len(rerr.Lines) != 1 ||
		rerr.Lines[0] != `reload: routes[1].backend: unknown backend "nowhere"` {
		t.Fatalf("Reload(invalid) = %v", err)
	}
	next.GetRoutes()[1].Backend = "b"
	if err := g.Reload(ctx, next); err != nil {
		t.Fatal(err)
	}
	resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{})
	if err != nil || string(resp.GetPayload().GetBody()) != "b" {
		t.Fatalf("after Reload: %v, %v; want b", resp, err)
	}
	if err := g.ReloadFile(ctx); err == nil || !strings.Contains(err.Error(), "no config file") {
		t.Errorf("ReloadFile without a config file = %v", err)
	}
	admin := adminv1.NewAdminServiceClient(dial(t, g.Addr("admin").String()))
	if _, err := admin.ReloadConfig(ctx, &adminv1.ReloadConfigRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("ReloadConfig without a config file = %v, want FAILED_PRECONDITION", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(hooks) != "[false true]" {
		t.Errorf("reload hook calls %v, want [false true]", hooks)
	}
}

// TestReloadConfigMapSwap updates the config file the way the kubelet
// updates a mounted ConfigMap: the file is a symlink through "..data" to a
// timestamped directory, and an update writes a new directory and renames a
// new "..data" symlink over the old one. The watcher must see it.
func TestReloadConfigMapSwap(t *testing.T) {
	a, _ := startTagged(t, "a")
	b, _ := startTagged(t, "b")
	keep, _ := startTagged(t, "keep")
	dir := t.TempDir()
	version := func(name, yaml string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		writeConfig(t, filepath.Join(dir, name, "gatehouse.yaml"), yaml, false)
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_01_01_00_00_00.1", reloadYAML("127.0.0.1:0", "a", a, keep, 0))
	path := filepath.Join(dir, "gatehouse.yaml")
	if err := os.Symlink(filepath.Join("..data", "gatehouse.yaml"), path); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, reloadYAML("127.0.0.1:0", "a", a, keep, 0), edge.WithConfigFile(path), edge.WithConfigWatchDebounce(20*time.Millisecond))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	version("..2026_01_01_00_01_00.2", reloadYAML("127.0.0.1:0", "b", b, keep, 1))
	if err := os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the swapped ConfigMap to be in force", func() bool {
		resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{})
		return err == nil && string(resp.GetPayload().GetBody()) == "b"
	})
	// The new table is in force a moment before the reload's bookkeeping
	// is done.
	eventually(t, "the reload to be counted", func() bool {
		st := g.ReloadStats()
		return st.Reloads >= 1
	})
	if st := g.ReloadStats(); st.Reloads != 1 || st.Failures != 0 {
		t.Errorf("reload stats %+v, want one successful reload", st)
	}
}

// renameYAML is a config of two routes to the TestService whose names
// change with gen and whose order flips on odd gens: "pinned-<gen>" (x-pin:
// keep, to backend keep) and "main-<gen>" (to backend a).
func renameYAML(a, keep string, gen int) string {
	pinned := fmt.Sprintf(`  - name: pinned-%d
    match:
      service: "grpc.testing.TestService"
      metadata: [{ name: "x-pin", exact: "keep" }]
    backend: keep
`, gen)
	main := fmt.Sprintf(`  - name: main-%d
    match:
      service: "grpc.testing.TestService"
      metadata: [{ name: "x-pin", absent: true }]
    backend: a
`, gen)
	routes := pinned + main
	if gen%2 == 1 {
		routes = main + pinned
	}
	return fmt.Sprintf(`listeners:
  - name: edge
    address: "127.0.0.1:0"
admin:
  address: "127.0.0.1:0"
backends:
  - name: keep
    endpoints: [%q]
  - name: a
    endpoints: [%q]
routes:
%s`, keep, a, routes)
}

// TestReloadRenamesRoutesUnderLoad swaps in 200 configs that rename and
// reorder the routes while unary calls (native gRPC, on both routes) run
// without pause. The auth and quota layers and the director each need the
// call's route; they must agree on it even when a reload lands while the
// call passes through them, so no call may fail.
func TestReloadRenamesRoutesUnderLoad(t *testing.T) {
	a, _ := startTagged(t, "a")
	keep, _ := startTagged(t, "keep")
	g := startGateway(t, renameYAML(a, keep, 0))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var (
		calls, failed atomic.Int64
		firstErr      atomic.Value
		stop          = make(chan struct{})
		wg            sync.WaitGroup
	)
	for i := range 4 {
		wg.Go(func() {
			cctx, want := ctx, "a"
			if i%2 == 0 {
				cctx, want = metadata.AppendToOutgoingContext(ctx, "x-pin", "keep"), "keep"
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := tc.UnaryCall(cctx, &testpb.SimpleRequest{})
				if got := string(resp.GetPayload().GetBody()); err != nil || got != want {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("served by %q (%v), want %q", got, err, want))
				}
				calls.Add(1)
			}
		})
	}
	for gen := 1; gen <= 200; gen++ {
		next, err := config.Parse("next.yaml", []byte(renameYAML(a, keep, gen)))
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Reload(ctx, next); err != nil {
			t.Fatalf("reload %d: %v", gen, err)
		}
		for start := calls.Load(); calls.Load() < start+2; {
			runtime.Gosched() // a few calls on every table
		}
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d unary calls failed across 200 reloads; first: %v", n, calls.Load(), firstErr.Load())
	}
	t.Logf("%d unary calls across 200 reloads", calls.Load())
}

// TestReloadChecksEffectiveConfig reloads configs that pass the loader on
// their own but not once the sections that need a restart keep their
// running values: a route requiring an API key set that the reload adds,
// a quota policy whose route the reload renames, and an audit capture
// whose route the reload renames. Each is refused with
// the file, the field and the reason, and the configuration in force keeps
// serving.
func TestReloadChecksEffectiveConfig(t *testing.T) {
	backend := startBackend(t)
	sum := sha256.Sum256([]byte("k-1"))
	base := fmt.Sprintf(`listeners: [{name: edge, address: "127.0.0.1:0"}]
backends: [{name: b, endpoints: [%q]}]
quota:
  policies: [{name: tiny, routes: [limited], rate: {requests: 1000, per: "1s"}}]
audit: {file: %q, capture: [{route: guarded, fields: ["response_size"]}]}
`, backend, filepath.Join(t.TempDir(), "audit.jsonl"))
	routes := `routes:
  - name: guarded
    match: {method: "/grpc.testing.TestService/UnaryCall"}
    backend: b
  - name: limited
    match: {method: "/grpc.testing.TestService/EmptyCall"}
    backend: b
`
	g, path := startFileGateway(t, base+routes)
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, c := range []struct {
		name, yaml, want string
	}{
		{
			"new authenticator",
			base + fmt.Sprintf("authentication:\n  api_keys: [{name: partners, header: x-api-key, keys: [{id: acme, sha256: %q}]}]\n", hex.EncodeToString(sum[:])) +
				routes + "    auth: {require: [partners]}\n",
			`gatehouse.yaml: routes[1].auth.require[0]: authenticator "partners" is new and authentication changes need a restart`,
		},
		{
			"quota route renamed",
			strings.ReplaceAll(base+routes, "limited", "limited-v2"),
			`gatehouse.yaml: quota.policies[0].routes[0]: route "limited" is not in the reloaded routes, and quota policies need a restart to change`,
		},
		{
			// No check of its own: the loader's, run again on the mix.
			"audit route renamed",
			strings.ReplaceAll(base+routes, "guarded", "guarded-v2"),
			`gatehouse.yaml: audit.capture[0].route: unknown route "guarded"`,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := config.Parse(path, []byte(c.yaml)); err != nil {
				t.Fatalf("the file alone must load: %v", err)
			}
			writeConfig(t, path, c.yaml, true)
			err := g.ReloadFile(ctx)
			var rerr *edge.ReloadError
			if !errors.As(err, &rerr) || len(rerr.Lines) != 1 || rerr.Lines[0] != c.want {
				t.Fatalf("ReloadFile = %v\nwant the one line %s", err, c.want)
			}
			if _, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
				t.Errorf("the route in force must serve without a key: %v", err)
			}
			if got := g.Router().Table().Routes()[1].Name; got != "limited" {
				t.Errorf("route in force %q, want limited", got)
			}
		})
	}
	// "none" names no authenticator: a route may become public on purpose
	// on a reload.
	t.Run("route requires none", func(t *testing.T) {
		yaml := strings.Replace(base+routes, "    backend: b\n", "    backend: b\n    auth: {require: [none]}\n", 1)
		writeConfig(t, path, yaml, true)
		if err := g.ReloadFile(ctx); err != nil {
			t.Fatalf("ReloadFile: %v", err)
		}
		if got := g.Config().GetRoutes()[0].GetAuth().GetRequire(); len(got) != 1 || got[0] != "none" {
			t.Errorf("route guarded requires %q in force, want [none]", got)
		}
	})
}
