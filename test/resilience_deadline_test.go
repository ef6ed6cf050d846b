package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// slowGreeter answers SayHello only when the call ends, and reports how it
// ended and the deadline it had.
type slowGreeter struct {
	greeterv1.UnimplementedGreeterServiceServer
	ended chan error
	dl    chan time.Time
}

func (g slowGreeter) SayHello(ctx context.Context, _ *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	dl, _ := ctx.Deadline()
	g.dl <- dl
	<-ctx.Done()
	g.ended <- ctx.Err()
	return nil, ctx.Err()
}

// TestRESTDeadlineSlowBackend: a REST call to a slow backend ends at the
// route's deadline with 504 Gateway Timeout and a google.rpc.Status body
// (code DEADLINE_EXCEEDED); the backend got the deadline and saw its call
// end.
func TestRESTDeadlineSlowBackend(t *testing.T) {
	sg := slowGreeter{ended: make(chan error, 1), dl: make(chan time.Time, 1)}
	backend := startBackend(t, func(s *grpc.Server) { greeterv1.RegisterGreeterServiceServer(s, sg) })
	g := startGateway(t, fmt.Sprintf(`
listeners:
  - { name: edge, address: "127.0.0.1:0" }
backends: [{ name: greeter, endpoints: [%q] }]
routes:
  - name: greeter
    match: { service: "examples.greeter.v1.GreeterService" }
    backend: greeter
    timeout: { default: "150ms" }
`, backend), edge.WithREST(demo.REST()...))

	began := time.Now()
	code, body, hdr := httpDo(t, "POST", "http://"+g.Addr("edge").String()+"/v1/greeter:sayHello", `{"name":"x"}`, "Content-Type", "application/json")
	if code != 504 {
		t.Errorf("REST call to a slow backend: %d %s, want 504", code, body)
	}
	var st status.Status
	if err := unmarshalJSON(body, &st); err != nil {
		t.Fatalf("body %q is not a google.rpc.Status: %v", body, err)
	}
	if codes.Code(st.GetCode()) != codes.DeadlineExceeded || st.GetMessage() == "" {
		t.Errorf("body %s, want a google.rpc.Status with code DEADLINE_EXCEEDED (4) and a message", body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	select {
	case dl := <-sg.dl:
		if want := began.Add(150 * time.Millisecond); dl.IsZero() || dl.After(want.Add(50*time.Millisecond)) {
			t.Errorf("backend deadline %v, want no later than about %v", dl, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call never reached the backend")
	}
	select {
	case err := <-sg.ended:
		if err == nil {
			t.Error("the backend's call ended without an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the backend never saw its call end")
	}
}
