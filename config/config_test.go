package config_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse-dev/gatehouse/config"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
)

var update = flag.Bool("update", false, "rewrite the testdata/*.golden files")

// linePattern is the shape of every line of a config.Error:
// FILE: PATH: reason, where PATH is a field path, "line N" or "(root)".
var linePattern = regexp.MustCompile(`^[^\s:]+: ` +
	`(\(root\)|line [1-9][0-9]*|` +
	`(?:[A-Za-z_][A-Za-z0-9_]*|\["(?:[^"\\]|\\.)*"\])(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[0-9]+\]|\["(?:[^"\\]|\\.)*"\])*` +
	`): \S[^\n]*$`)

// checkShape fails t unless err is nil or a *config.Error whose every line
// has the FILE: PATH: reason shape, with FILE the given base name.
func checkShape(t testing.TB, file string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error is %T, not *config.Error: %v", err, err)
	}
	if len(cerr.Errors) == 0 {
		t.Fatalf("*config.Error with no errors")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(cerr.Errors) {
		t.Fatalf("%d lines for %d errors:\n%s", len(lines), len(cerr.Errors), err)
	}
	for i, l := range lines {
		if !linePattern.MatchString(l) {
			t.Errorf("line %d has the wrong shape: %q", i+1, l)
		}
		if !strings.HasPrefix(l, file+": ") {
			t.Errorf("line %d does not start with %q: %q", i+1, file+": ", l)
		}
		if got := cerr.Errors[i].Error(); got != l {
			t.Errorf("line %d is %q, but Errors[%d].Error() is %q", i+1, l, i, got)
		}
	}
}

// TestGolden parses each testdata/*.yaml and *.json file and compares the
// error text (or "ok") with the sibling .golden file.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, file := range files {
		ext := filepath.Ext(file)
		if ext != ".yaml" && ext != ".json" {
			continue
		}
		n++
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Parse(file, data)
			checkShape(t, filepath.Base(file), err)
			got := "ok\n"
			if err != nil {
				got = err.Error() + "\n"
				if cfg != nil {
					t.Errorf("Parse returned a config and an error")
				}
			} else if cfg == nil {
				t.Errorf("Parse returned neither a config nor an error")
			}
			golden := strings.TrimSuffix(file, ext) + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Parse(%s):\ngot:\n%s\nwant:\n%s", file, got, want)
			}
		})
	}
	if n < 15 {
		t.Errorf("only %d golden cases", n)
	}
}

// TestExamples loads every examples/*.yaml and requires no errors.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no examples/*.yaml")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			if _, err := config.Load(file); err != nil {
				t.Errorf("Load(%s):\n%v", file, err)
			}
		})
	}
}

// TestLoadExample loads examples/gatehouse.yaml and checks what it holds.
func TestLoadExample(t *testing.T) {
	got, err := config.Load("../examples/gatehouse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want configv1.Config
	const text = `
listeners { name: "edge" address: "127.0.0.1:8080" }
admin { address: "127.0.0.1:9901" }
backends { name: "orders" endpoints: "127.0.0.1:9001" endpoints: "127.0.0.1:9002" }
backends { name: "orders-canary" endpoints: "127.0.0.1:9003" }
routes {
  name: "orders-canary"
  match {
    service: "shop.orders.v1.Orders"
    metadata { name: "x-track" exact: "canary" }
  }
  backend: "orders-canary"
}
routes {
  name: "orders"
  match { service: "shop.orders.v1.Orders" }
  backend: "orders"
}`
	if err := prototext.Unmarshal([]byte(text), &want); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, &want) {
		t.Errorf("Load(examples/gatehouse.yaml):\ngot:  %v\nwant: %v", got, &want)
	}
	if lim := config.ListenerLimits(got.GetListeners()[0]); lim != config.DefaultLimits() {
		t.Errorf("ListenerLimits = %+v, want the defaults %+v", lim, config.DefaultLimits())
	}
}

// TestLoadMissingFile checks that a file that cannot be read gives the
// os error, not a *config.Error.
func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want an error that is os.ErrNotExist", err)
	}
	var cerr *config.Error
	if errors.As(err, &cerr) {
		t.Errorf("Load(missing) gave a *config.Error: %v", err)
	}
}

// TestErrorsAs checks that errors.As finds both the *Error and a
// FieldError, and that FILE is the base name.
func TestErrorsAs(t *testing.T) {
	_, err := config.Parse("/etc/gatehouse/gatehouse.yaml", []byte("listeners: []\nbogus: 1\n"))
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("errors.As(*config.Error) failed for %v", err)
	}
	want := []config.FieldError{
		{File: "gatehouse.yaml", Line: 1, Path: "listeners", Reason: "must contain at least 1 item(s)"},
		{File: "gatehouse.yaml", Line: 2, Path: "bogus", Reason: `unknown field "bogus"`},
	}
	if len(cerr.Errors) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(cerr.Errors), len(want), err)
	}
	for i := range want {
		if cerr.Errors[i] != want[i] {
			t.Errorf("Errors[%d] = %+v, want %+v", i, cerr.Errors[i], want[i])
		}
	}
	var fe config.FieldError
	if !errors.As(err, &fe) || fe != want[0] {
		t.Errorf("errors.As(FieldError) = %+v, want %+v", fe, want[0])
	}
}

// TestListenerLimits checks that set limits override the defaults and
// unset ones keep them.
func TestListenerLimits(t *testing.T) {
	cfg, err := config.Parse("limits.yaml", []byte(`
listeners:
  - name: edge
    address: "127.0.0.1:8080"
    limits:
      max_concurrent_streams: 7
      max_header_bytes: 2048
      idle_timeout: 90s
      keepalive: { permit_without_calls: true, ping_timeout: 5s, min_ping_interval: 0s }
shutdown_grace: 0s
`))
	if err != nil {
		t.Fatal(err)
	}
	want := config.DefaultLimits()
	want.MaxConcurrentStreams = 7
	want.MaxHeaderBytes = 2048
	want.IdleTimeout = 90 * time.Second
	want.KeepalivePermitWithoutCalls = true
	want.KeepaliveTimeout = 5 * time.Second
	want.KeepaliveMinPing = 0
	if got := config.ListenerLimits(cfg.GetListeners()[0]); got != want {
		t.Errorf("ListenerLimits:\ngot  %+v\nwant %+v", got, want)
	}
	if got := config.ShutdownGrace(cfg); got != 0 {
		t.Errorf("ShutdownGrace = %v, want 0 (set explicitly)", got)
	}
}

// TestDefaults checks the defaults against the values config.proto
// documents, and that nil messages are safe.
func TestDefaults(t *testing.T) {
	want := config.Limits{
		MaxConcurrentStreams:        100,
		MaxMessageBytes:             4194304,
		MaxHeaderBytes:              16384,
		ReadHeaderTimeout:           10 * time.Second,
		IdleTimeout:                 5 * time.Minute,
		KeepaliveMinPing:            10 * time.Second,
		KeepalivePermitWithoutCalls: false,
		KeepalivePing:               2 * time.Hour,
		KeepaliveTimeout:            20 * time.Second,
		MaxConcurrentCalls:          10000,
	}
	if got := config.ListenerLimits(nil); got != want {
		t.Errorf("ListenerLimits(nil):\ngot  %+v\nwant %+v", got, want)
	}
	if got := config.ShutdownGrace(nil); got != 30*time.Second {
		t.Errorf("ShutdownGrace(nil) = %v, want 30s", got)
	}
	if got := config.ListenerProtocol(nil); got != config.ProtocolShared {
		t.Errorf("ListenerProtocol(nil) = %q, want %q", got, config.ProtocolShared)
	}
	if got := config.ListenerProtocol(&configv1.Listener{Protocol: "grpc"}); got != config.ProtocolGRPC {
		t.Errorf("ListenerProtocol(grpc) = %q, want %q", got, config.ProtocolGRPC)
	}
	if got := config.LogLevel(nil); got != "info" {
		t.Errorf("LogLevel(nil) = %q, want info", got)
	}
}

// FuzzParse checks that Parse never panics and that every error has the
// FILE: PATH: reason shape. The seed corpus is every testdata file plus
// the examples; plain go test replays it.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	jsons, _ := filepath.Glob("testdata/*.json")
	examples, _ := filepath.Glob("../examples/*.yaml")
	for _, file := range append(append(seeds, jsons...), examples...) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("listeners: [{name: a, address: ':1', limits: {max_concurrent_streams: 1e400}}]"))
	f.Add([]byte("{\"a\\nb: c\": 1, \"\": 2}"))
	f.Add([]byte("&a [*a]"))
	f.Add([]byte("? [a]\n: b\n"))
	f.Add([]byte("listeners: [{name: a, address: ':1'}]\n---\nbogus: 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse("fuzz.yaml", data)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", cfg, err)
		}
		checkShape(t, "fuzz.yaml", err)
	})
}
