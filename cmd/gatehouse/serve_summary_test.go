package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestServeAnnouncesTheSummary runs `gatehouse serve` and reads its start
// summary from stderr: not a terminal, so it comes as a "serving" log
// record listing the bound listeners, the backend and the route.
func TestServeAnnouncesTheSummary(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("shares the serve helpers, which signal the process")
	}
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildGatehouse(t)
	_, backend := startSlowBackend(t, 0)
	p := startServing(t, bin, "shared", backend, 5*time.Second)

	type serving struct {
		Msg       string   `json:"msg"`
		Listeners []string `json:"listeners"`
		Backends  []string `json:"backends"`
		Routes    []string `json:"routes"`
	}
	var got *serving
	for deadline := time.Now().Add(10 * time.Second); got == nil; time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			var s serving
			if json.Unmarshal([]byte(line), &s) == nil && s.Msg == "serving" {
				got = &s
			}
		}
		if got == nil && time.Now().After(deadline) {
			t.Fatalf("no start summary on stderr:\n%s", p.stderr)
		}
	}
	want := serving{
		Msg:       "serving",
		Listeners: []string{fmt.Sprintf("edge %s shared plaintext", p.edge), fmt.Sprintf("admin %s admin plaintext", p.admin)},
		Backends:  []string{"testsvc 1 endpoint plaintext"},
		Routes:    []string{"testsvc -> testsvc"},
	}
	if got.Msg != want.Msg || !slices.Equal(got.Listeners, want.Listeners) || !slices.Equal(got.Backends, want.Backends) || !slices.Equal(got.Routes, want.Routes) {
		t.Errorf("start summary %+v\nwant %+v", *got, want)
	}
}
