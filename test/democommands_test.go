package test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemoCommandsWork runs every command `gatehouse demo` prints, with the
// real grpcurl and curl, against the running demo, and checks what each
// answers. grpcurl and curl must be on PATH (.ci/run installs grpcurl with
// `go install`); the test fails, not skips, when they are missing.
func TestDemoCommandsWork(t *testing.T) {
	for _, tool := range []string{"grpcurl", "curl", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not on PATH: install it (go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3; apt-get install -y curl)", tool)
		}
	}
	d := startDemo(t)
	waitReady(t, d)
	// What the answer of each command must contain, in the order Commands
	// prints them.
	want := []string{
		`"message": "Hello, Ada!"`,
		`"message": "Hello, Ada!"`,
		`"message": "Hello #3, Ada!"`,
		"examples.library.v1.LibraryService",
		`"message":"Hello, Ada!"`,
		"The Go Programming Language",
		`"title":"Dune"`,
		`"id":"b1"`,
		`google.rpc.BadRequest`,
		`no route for GET /v1/nothing-here`,
		`"greeter-canary"`,
		`"reachable":true`,
		`"status":"SERVING"`,
		`"name": "greeter-canary"`,
	}
	var cmds []string
	for _, c := range d.Commands() {
		if !strings.HasPrefix(c, "#") {
			cmds = append(cmds, c)
		}
	}
	if len(cmds) != len(want) {
		t.Fatalf("the demo prints %d commands, the test expects %d: update both together", len(cmds), len(want))
	}
	for i, c := range cmds {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, "sh", "-c", c).CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("%s\n%v\n%s", c, err, out)
			continue
		}
		if !strings.Contains(string(out), want[i]) {
			t.Errorf("%s\nanswered:\n%s\nwant it to contain %s", c, out, want[i])
		}
	}
}
