package main

import (
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"sigs.k8s.io/yaml"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/examples/greeter"
	"github.com/gatehouse-dev/gatehouse/examples/library"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
)

// serveOnLoopback serves s on a free loopback port until the test ends and
// returns its address.
func serveOnLoopback(t *testing.T, s *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().String()
}

// runInitGolden runs `gatehouse init` with the backends (name=addr), puts
// placeholders for their addresses, compares stdout and stderr with golden
// files, and checks that the config loads.
func runInitGolden(t *testing.T, name string, backends [][2]string, extra ...string) {
	t.Helper()
	args := []string{"init"}
	var repl []string
	for i, b := range backends {
		args = append(args, "--backend", b[0]+"="+b[1])
		repl = append(repl, b[1], fmt.Sprintf("127.0.0.1:%d", 10001+i))
	}
	args = append(args, extra...)
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit status %d\n%s", code, &stderr)
	}
	out := stdout.String()
	if _, err := config.Parse("init.yaml", []byte(out)); err != nil {
		t.Errorf("the config written does not load:\n%v\n%s", err, out)
	}
	r := strings.NewReplacer(repl...)
	// The .yaml goldens are example configs too: config/jsonschema checks
	// them against the schema and the loader.
	golden(t, filepath.Join("init", name+".yaml"), r.Replace(out))
	golden(t, filepath.Join("init", name+".stderr.golden"), r.Replace(stderr.String()))
}

func TestInitWithReflection(t *testing.T) {
	g := serveOnLoopback(t, greeter.NewGRPCServer(greeter.New("test")))
	l := serveOnLoopback(t, library.NewGRPCServer(library.New()))
	runInitGolden(t, "reflection", [][2]string{{"greeter", g}, {"library", l}})
}

func TestInitWithoutReflection(t *testing.T) {
	plain := grpc.NewServer()
	greeterv1.RegisterGreeterServiceServer(plain, greeter.New("test"))
	addr := serveOnLoopback(t, plain)
	// A closed port: nothing answers at all.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	runInitGolden(t, "no_reflection", [][2]string{{"legacy", addr}, {"gone", closed}}, "--timeout", "2s")
}

func TestInitWritesFile(t *testing.T) {
	g := serveOnLoopback(t, greeter.NewGRPCServer(greeter.New("test")))
	path := filepath.Join(t.TempDir(), "gatehouse.yaml")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"init", "--backend", "greeter=" + g, "-o", path, "--listen", "127.0.0.1:18080"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit status %d\n%s", code, &stderr)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.GetListeners()[0].GetAddress(); got != "127.0.0.1:18080" {
		t.Errorf("listener address %q", got)
	}
	if stdout.Len() != 0 || !strings.Contains(stderr.String(), "wrote "+path) {
		t.Errorf("stdout %q, stderr %q", &stdout, &stderr)
	}
	// It does not overwrite without --force.
	stderr.Reset()
	if code := run([]string{"init", "--backend", "greeter=" + g, "-o", path}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "--force") {
		t.Errorf("overwrite: exit status %d, stderr %q", code, &stderr)
	}
	if code := run([]string{"init", "--backend", "greeter=" + g, "-o", path, "--force"}, &stdout, &stderr); code != 0 {
		t.Errorf("--force: exit status %d", code)
	}
}

func TestInitFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"init"}, "at least one --backend"},
		{[]string{"init", "--backend", "orders"}, "want name=host:port"},
		{[]string{"init", "--backend", "Orders=127.0.0.1:1"}, `backend name "Orders"`},
		{[]string{"init", "--backend", "orders=127.0.0.1"}, `endpoint "127.0.0.1": want host:port`},
		{[]string{"init", "--backend", "a=127.0.0.1:1", "--backend", "a=127.0.0.1:2"}, `backend "a" given twice`},
		{[]string{"init", "--backend", "a=127.0.0.1:1", "extra"}, `unexpected argument "extra"`},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tt.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: exit status %d, stderr %q, want 2 and %q", tt.args, code, &stderr, tt.want)
		}
	}
}

// configMapData returns data["gatehouse.yaml"] of a ConfigMap manifest.
func configMapData(t *testing.T, manifest []byte) []byte {
	t.Helper()
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(manifest, &cm); err != nil {
		t.Fatal(err)
	}
	return []byte(cm.Data["gatehouse.yaml"])
}
