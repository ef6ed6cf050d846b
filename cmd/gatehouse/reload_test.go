package main

import (
	"context"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	adminv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/admin/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestServeReloadsConfig runs the real binary and reloads its config file
// the two ways an operator does without the admin API: SIGHUP (the file
// unchanged: a reload all the same) and an edit the watcher sees (an
// invalid one: refused, each error on its own log line, the config in force
// kept).
func TestServeReloadsConfig(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGHUP on Windows")
	}
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildGatehouse(t)
	_, backend := startSlowBackend(t, 0)
	p := startServing(t, bin, "shared", backend, 5*time.Second)
	path := p.cmd.Args[len(p.cmd.Args)-1]

	cc, err := grpc.NewClient(p.admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	admin := adminv1.NewAdminServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	waitConfig := func(what string, cond func(*adminv1.GetConfigResponse) bool) *adminv1.GetConfigResponse {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			resp, err := admin.GetConfig(ctx, &adminv1.GetConfigRequest{})
			if err == nil && cond(resp) {
				return resp
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (last: %v, %v)\nstderr:\n%s", what, resp, err, p.stderr)
			}
		}
	}

	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitConfig("the SIGHUP reload", func(r *adminv1.GetConfigResponse) bool {
		return r.GetReloads() == 1 && r.GetReloadFailures() == 0 && r.GetSource() == path
	})

	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(good), "backend: testsvc", "backend: nowhere", 1) + "surprise: 1\n"
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	r := waitConfig("the watcher to refuse the invalid file", func(r *adminv1.GetConfigResponse) bool {
		return r.GetReloadFailures() == 1
	})
	if len(r.GetLastErrors()) != 2 {
		t.Errorf("last_errors %q, want 2", r.GetLastErrors())
	}
	if !p.waitServing(t) {
		t.Fatal("the config in force stopped serving after a refused reload")
	}

	var sighup, reloaded, refused bool
	var errorLines []string
	for _, l := range jsonLines(t, "stderr", p.stderr.String()) {
		switch l["msg"] {
		case "SIGHUP: reloading the config file":
			sighup = true
		case "config reloaded":
			reloaded = true
		case "config reload: error":
			errorLines = append(errorLines, l["error"].(string))
		case "config reload refused; the configuration in force keeps serving":
			refused = true
		}
	}
	if !sighup || !reloaded || !refused {
		t.Errorf("log lines: SIGHUP %v, reloaded %v, refused %v\n%s", sighup, reloaded, refused, p.stderr)
	}
	want := []string{`gatehouse.yaml: routes[0].backend: unknown backend "nowhere"`, `gatehouse.yaml: surprise: unknown field "surprise"`}
	if strings.Join(errorLines, "\n") != strings.Join(want, "\n") {
		t.Errorf("error log lines:\n%s\nwant:\n%s", strings.Join(errorLines, "\n"), strings.Join(want, "\n"))
	}
}
