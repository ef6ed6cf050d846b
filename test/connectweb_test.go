package test

// Issue 4, item 1: the grpc-web and Connect-Web browser clients work against
// Gatehouse unchanged. TestGRPCWebClientLibraries runs the real libraries
// (@connectrpc/connect-web's createGrpcWebTransport and the official
// grpc-web runtime in its binary and text formats), pinned in
// test/testdata/connectweb/package-lock.json, from Node against a gateway in
// front of the example greeter; see test/testdata/connectweb/client.mjs.
// Node and the libraries must be installed (npm ci, see connectWebFix): the
// test fails, never skips, without them.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/examples/greeter"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// connectWebDir holds client.mjs, its package.json and package-lock.json.
const connectWebDir = "testdata/connectweb"

// connectWebFix is how to install what TestGRPCWebClientLibraries needs.
const connectWebFix = "npm ci --prefix test/testdata/connectweb --no-audit --no-fund (from the repository root; needs node >= 20 and npm)"

// webMessage is one greeter message as the client script reports it.
type webMessage struct {
	Message string `json:"message"`
	Index   int32  `json:"index"`
}

// webError is a failed call as the client script reports it: Connect-Web
// gives the code's name and raw detail types, grpc-web the numeric code and
// the detail types decoded from grpc-status-details-bin.
type webError struct {
	Code           any               `json:"code"` // "InvalidArgument" (Connect-Web) or 3 (grpc-web)
	StatusCode     *int              `json:"statusCode"`
	RawMessage     string            `json:"rawMessage"`
	Message        string            `json:"message"`
	RawDetailTypes []string          `json:"rawDetailTypes"`
	DetailTypes    []string          `json:"detailTypes"`
	BadRequests    []json.RawMessage `json:"badRequests"`
	ErrorInfos     []json.RawMessage `json:"errorInfos"`
	Messages       []webMessage      `json:"messages"`
}

// webRun is what one library saw.
type webRun struct {
	Unary struct {
		Message       string    `json:"message"`
		ServedBy      string    `json:"servedBy"`
		RequestIDSeen *string   `json:"requestIdSeen"`
		Error         *webError `json:"error"`
	} `json:"unary"`
	Stream struct {
		Messages      []webMessage `json:"messages"`
		RequestIDSeen *string      `json:"requestIdSeen"`
		Error         *webError    `json:"error"`
	} `json:"stream"`
	Invalid   webError `json:"invalid"`
	MidStream webError `json:"midStream"`
	// Wire has the content types of every HTTP exchange the library made.
	Wire []struct{ Request, Response string } `json:"wire"`
}

// requireConnectWeb fails the test, with the fix, when node or the
// installed client libraries are missing.
func requireConnectWeb(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (%v): install Node.js >= 20, then run %s", err, connectWebFix)
	}
	for _, pkg := range []string{"@connectrpc/connect", "@connectrpc/connect-web", "@bufbuild/protobuf", "grpc-web", "xhr2"} {
		if _, err := os.Stat(filepath.Join(connectWebDir, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("the browser client libraries are not installed (%v): run %s", err, connectWebFix)
		}
	}
	return node
}

func TestGRPCWebClientLibraries(t *testing.T) {
	node := requireConnectWeb(t)

	// The real example greeter (examples/greeter, as its binary serves it),
	// and the test greeter that fails mid-stream (failingGreeter, in
	// browser_test.go) for calls that carry x-test-backend: failing.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := greeter.NewGRPCServer(greeter.New("example"))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	failing := startBackend(t, func(s *grpc.Server) {
		greeterv1.RegisterGreeterServiceServer(s, failingGreeter{greeter.New("failing")})
	})
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends:
  - { name: example, endpoints: ["%s"] }
  - { name: failing, endpoints: ["%s"] }
routes:
  - name: failing
    match: { service: "examples.greeter.v1.GreeterService", metadata: [{ name: x-test-backend, exact: failing }] }
    backend: failing
  - { name: greeter, match: { service: "examples.greeter.v1.GreeterService" }, backend: example }
`, lis.Addr(), failing))

	// greeter.proto with its imports (buf/validate/validate.proto, ...),
	// google/rpc/error_details.proto and google/rpc/status.proto, from the
	// compiled-in descriptors (writeDescriptorSet is in
	// shelf_backend_test.go).
	descriptors := writeDescriptorSet(t,
		greeterv1.File_examples_greeter_v1_greeter_proto.Path(),
		errdetails.File_google_rpc_error_details_proto.Path(),
		spb.File_google_rpc_status_proto.Path(),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs", "http://"+g.Addr("edge").String(), descriptors)
	cmd.Dir = connectWebDir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node client.mjs: %v\nstderr:\n%s\nstdout:\n%s\n(if a module is missing, run %s)", err, stderr.String(), stdout.String(), connectWebFix)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("client.mjs summary:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
	})
	var summary map[string]webRun
	dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&summary); err != nil || len(summary) != 3 {
		t.Fatalf("client.mjs output: %v\n%s", err, stdout.String())
	}

	for _, tt := range []struct {
		name     string // key in the summary
		reqIDs   [2]string
		reqCT    string // the request content type: the library's mode
		respCT   string
		invalid  any // the code as the library reports it
		aborted  any
		detailed func(e webError) []string // the detail types the library decoded
		// statusBin: the script decoded grpc-status-details-bin itself
		// (grpc-web leaves it in the trailers) and reports its code.
		statusBin bool
	}{
		{
			name:     "connectWeb",
			reqIDs:   [2]string{"cw-1", "cw-2"},
			reqCT:    "application/grpc-web+proto",
			respCT:   "application/grpc-web+proto",
			invalid:  "InvalidArgument",
			aborted:  "Aborted",
			detailed: func(e webError) []string { return e.RawDetailTypes },
		},
		{
			name:      "grpcWebBinary",
			reqIDs:    [2]string{"gw-1", "gw-2"},
			reqCT:     "application/grpc-web+proto",
			respCT:    "application/grpc-web+proto",
			invalid:   float64(3),
			aborted:   float64(10),
			detailed:  func(e webError) []string { return e.DetailTypes },
			statusBin: true,
		},
		{
			name:      "grpcWebText",
			reqIDs:    [2]string{"gw-1", "gw-2"},
			reqCT:     "application/grpc-web-text",
			respCT:    "application/grpc-web-text+proto",
			invalid:   float64(3),
			aborted:   float64(10),
			detailed:  func(e webError) []string { return e.DetailTypes },
			statusBin: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			run, ok := summary[tt.name]
			if !ok {
				t.Fatalf("no %q in the summary:\n%s", tt.name, stdout.String())
			}

			// Four calls, each in the library's mode.
			if len(run.Wire) != 4 {
				t.Errorf("%d HTTP exchanges, want 4: %+v", len(run.Wire), run.Wire)
			}
			for i, w := range run.Wire {
				if w.Request != tt.reqCT || w.Response != tt.respCT {
					t.Errorf("exchange %d: content types %q -> %q, want %q -> %q", i, w.Request, w.Response, tt.reqCT, tt.respCT)
				}
			}

			// Unary, with a custom request header the backend saw.
			u := run.Unary
			if u.Error != nil {
				t.Fatalf("unary failed: %+v", *u.Error)
			}
			if u.Message != "Hello, Ada!" || u.ServedBy != "example" {
				t.Errorf("unary = %q from %q, want %q from %q", u.Message, u.ServedBy, "Hello, Ada!", "example")
			}
			if u.RequestIDSeen == nil || *u.RequestIDSeen != tt.reqIDs[0] {
				t.Errorf("unary %s = %v, want %q", greeter.RequestIDSeenKey, deref(u.RequestIDSeen), tt.reqIDs[0])
			}

			// Server stream: every message, in order.
			s := run.Stream
			if s.Error != nil {
				t.Fatalf("stream failed after %d messages: %+v", len(s.Messages), *s.Error)
			}
			if len(s.Messages) != 25 {
				t.Fatalf("stream: %d messages, want 25", len(s.Messages))
			}
			for i, m := range s.Messages {
				want := webMessage{Message: fmt.Sprintf("Hello #%d, Bo!", i+1), Index: int32(i + 1)}
				if m != want {
					t.Errorf("stream message %d = %+v, want %+v", i, m, want)
				}
			}
			if s.RequestIDSeen == nil || *s.RequestIDSeen != tt.reqIDs[1] {
				t.Errorf("stream %s = %v, want %q", greeter.RequestIDSeenKey, deref(s.RequestIDSeen), tt.reqIDs[1])
			}

			// A trailers-only refusal by the gateway's validate interceptor,
			// with a google.rpc.BadRequest detail.
			inv := run.Invalid
			if inv.Code != tt.invalid {
				t.Errorf("invalid: code %v (%+v), want %v", inv.Code, inv, tt.invalid)
			}
			if msg := inv.RawMessage + inv.Message; !strings.Contains(msg, "name") {
				t.Errorf("invalid: message %q does not name the field", msg)
			}
			if got := tt.detailed(inv); len(got) != 1 || got[0] != "google.rpc.BadRequest" {
				t.Errorf("invalid: detail types %q, want [google.rpc.BadRequest]", got)
			}
			var bad struct {
				FieldViolations []struct{ Field, Description string }
			}
			if len(inv.BadRequests) != 1 {
				t.Fatalf("invalid: BadRequests %s, want one", inv.BadRequests)
			}
			if err := json.Unmarshal(inv.BadRequests[0], &bad); err != nil || len(bad.FieldViolations) != 1 ||
				bad.FieldViolations[0].Field != "name" || !strings.Contains(bad.FieldViolations[0].Description, "at least 1") {
				t.Errorf("invalid: BadRequest %s (%v), want one violation on field name", inv.BadRequests[0], err)
			}

			// An error mid-stream: the messages before it, then the code,
			// message and google.rpc.ErrorInfo from the trailer frame.
			ms := run.MidStream
			if ms.Code != tt.aborted {
				t.Errorf("mid-stream: code %v (%+v), want %v", ms.Code, ms, tt.aborted)
			}
			if msg := ms.RawMessage + ms.Message; msg != "greeter broke: ünïcode 100%" {
				t.Errorf("mid-stream: message %q, want %q", msg, "greeter broke: ünïcode 100%")
			}
			if len(ms.Messages) != 5 {
				t.Errorf("mid-stream: %d messages before the error, want 5", len(ms.Messages))
			}
			for i, m := range ms.Messages {
				if want := (webMessage{Message: "partial", Index: int32(i + 1)}); m != want {
					t.Errorf("mid-stream message %d = %+v, want %+v", i, m, want)
				}
			}
			if got := tt.detailed(ms); len(got) != 1 || got[0] != "google.rpc.ErrorInfo" {
				t.Errorf("mid-stream: detail types %q, want [google.rpc.ErrorInfo]", got)
			}
			var info struct{ Reason, Domain string }
			if len(ms.ErrorInfos) != 1 {
				t.Fatalf("mid-stream: ErrorInfos %s, want one", ms.ErrorInfos)
			}
			if err := json.Unmarshal(ms.ErrorInfos[0], &info); err != nil || info.Reason != "BROKEN" || info.Domain != "test" {
				t.Errorf("mid-stream: ErrorInfo %s (%v), want reason BROKEN, domain test", ms.ErrorInfos[0], err)
			}
			for _, c := range []struct {
				call string
				got  *int
				want int
			}{{"invalid", inv.StatusCode, 3}, {"mid-stream", ms.StatusCode, 10}} {
				if tt.statusBin && (c.got == nil || *c.got != c.want) {
					t.Errorf("%s: grpc-status-details-bin code %s, want %d", c.call, derefInt(c.got), c.want)
				}
			}
		})
	}
}

// derefInt shows a reported number, or that it was absent.
func derefInt(n *int) string {
	if n == nil {
		return "<absent>"
	}
	return strconv.Itoa(*n)
}

// deref shows a reported header value, or that it was absent.
func deref(s *string) string {
	if s == nil {
		return "<absent>"
	}
	return fmt.Sprintf("%q", *s)
}
