package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/config"
)

// These tests check flags and rendering only; they start nothing.

func TestParseFlags(t *testing.T) {
	f, err := parseFlags([]string{"-rounds", "3", "-duration", "2s", "-targets", "direct,nginx", "-loads", "unary-64B-c1,rest-sayhello-c1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f.rounds != 3 || f.duration != 2*time.Second || len(f.targets) != 2 || len(f.loads) != 2 {
		t.Errorf("parsed %+v", f)
	}
	if got := targetsFor(f.loads[1], f.targets); len(got) != 1 || got[0] != targetDirect {
		t.Errorf("REST targets = %v, want [direct]", got)
	}
	def, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(def.targets) != len(allTargets) || len(def.loads) != len(allLoads) {
		t.Errorf("defaults: %d targets, %d loads", len(def.targets), len(def.loads))
	}
	env, err := parseFlags([]string{"-targets", "grpc-floor,nginx", "-loads", "rest-sayhello-c1", "-gatehouse-env", "GOMAXPROCS=1, GOGC=400"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(env.gatehouseEnv, []string{"GOMAXPROCS=1", "GOGC=400"}) {
		t.Errorf("gatehouseEnv = %q", env.gatehouseEnv)
	}
	if got := targetsFor(env.loads[0], env.targets); len(got) != 0 {
		t.Errorf("REST targets of grpc-floor,nginx = %v, want none (neither transcodes)", got)
	}
	for _, bad := range [][]string{{"-targets", "envoy"}, {"-loads", "nope"}, {"-rounds", "0"}, {"extra"}, {"-gatehouse-env", "GOMAXPROCS"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded", bad)
		}
	}
}

func TestGatehouseConfigLoads(t *testing.T) {
	b, err := renderGatehouse(gatehouseConfig{GRPC: "127.0.0.1:1", Shared: "127.0.0.1:2", SharedHTTP: "127.0.0.1:5", Test: "127.0.0.1:3", Greeter: "127.0.0.1:4"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(path); err != nil {
		t.Fatalf("rendered config does not load: %v\n%s", err, b)
	}
}

func TestNginxConfig(t *testing.T) {
	for _, on := range []bool{false, true} {
		b, err := renderNginx(nginxConfig{Dir: "/tmp/x", Listen: "127.0.0.1:5", Upstream: "127.0.0.1:6", HTTP2On: on})
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, want := range []string{"worker_processes 1;", "access_log off;", "keepalive 32;", "grpc_pass grpc://backend;", "server 127.0.0.1:6;", "pid /tmp/x/nginx.pid;"} {
			if !strings.Contains(s, want) {
				t.Errorf("HTTP2On=%v: no %q in\n%s", on, want, s)
			}
		}
		if got := strings.Contains(s, "http2 on;"); got != on {
			t.Errorf("HTTP2On=%v: has \"http2 on;\" = %v", on, got)
		}
	}
	for v, want := range map[string]bool{"nginx version: nginx/1.22.1": false, "nginx version: nginx/1.25.1": true, "nginx/1.27.0": true, "nginx/1.25.0": false} {
		if got, err := nginxHasHTTP2On(v); err != nil || got != want {
			t.Errorf("nginxHasHTTP2On(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
}

func TestParseStatTicks(t *testing.T) {
	stat := "1234 (a (b) c) S 1 1 1 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 8 0 100 0 0"
	if got, err := parseStatTicks([]byte(stat)); err != nil || got != 22 {
		t.Errorf("parseStatTicks = %d, %v; want 22", got, err)
	}
}

func TestSpread(t *testing.T) {
	s := spreadOf([]float64{3, 1, 2, 10})
	if s.Median != 2.5 || s.Min != 1 || s.Max != 10 {
		t.Errorf("spreadOf = %+v", s)
	}
}
