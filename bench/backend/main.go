// Command backend is the upstream of the Gatehouse benchmark (see
// bench/README.md). It serves, on two loopback ports:
//
//   - grpc.testing.TestService: UnaryCall answers with a payload of
//     response_size bytes, StreamingOutputCall sends one message per
//     response_parameters entry, FullDuplexCall answers every request with
//     one message (ping-pong);
//   - examples.greeter.v1.GreeterService: the example greeter, so that the
//     gateway's compiled-in REST routes have a backend.
//
// Once both ports are bound it prints one JSON line on standard output,
// {"test":"127.0.0.1:N","greeter":"127.0.0.1:M"}, and serves until SIGTERM
// or SIGINT.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/gatehouse-dev/gatehouse/examples/greeter"
)

func main() {
	testAddr := flag.String("test", "127.0.0.1:0", "address of the TestService listener")
	greeterAddr := flag.String("greeter", "127.0.0.1:0", "address of the greeter listener")
	flag.Parse()
	if err := run(*testAddr, *greeterAddr, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

func run(testAddr, greeterAddr string, stdout io.Writer) error {
	tl, err := net.Listen("tcp", testAddr)
	if err != nil {
		return err
	}
	gl, err := net.Listen("tcp", greeterAddr)
	if err != nil {
		return err
	}
	ts := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(ts, newTestServer())
	gs := greeter.NewGRPCServer(greeter.New(gl.Addr().String()))

	errc := make(chan error, 2)
	go func() { errc <- ts.Serve(tl) }()
	go func() { errc <- gs.Serve(gl) }()

	line, _ := json.Marshal(map[string]string{"test": tl.Addr().String(), "greeter": gl.Addr().String()})
	fmt.Fprintf(stdout, "%s\n", line)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		ts.Stop()
		gs.Stop()
		return nil
	case err := <-errc:
		ts.Stop()
		gs.Stop()
		return err
	}
}

// testServer implements the three TestService methods the benchmark uses,
// as cheaply as it can: payloads are shared, zero-filled slices.
type testServer struct {
	testgrpc.UnimplementedTestServiceServer

	mu       sync.RWMutex
	payloads map[int32]*testgrpc.Payload
}

func newTestServer() *testServer {
	return &testServer{payloads: make(map[int32]*testgrpc.Payload)}
}

// payload returns a shared payload of n bytes. Callers must not modify it;
// grpc marshals a copy onto the wire.
func (s *testServer) payload(n int32) *testgrpc.Payload {
	s.mu.RLock()
	p, ok := s.payloads[n]
	s.mu.RUnlock()
	if ok {
		return p
	}
	p = &testgrpc.Payload{Body: make([]byte, n)}
	s.mu.Lock()
	s.payloads[n] = p
	s.mu.Unlock()
	return p
}

func (s *testServer) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Payload: s.payload(req.GetResponseSize())}, nil
}

func (s *testServer) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	for _, p := range req.GetResponseParameters() {
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: s.payload(p.GetSize())}); err != nil {
			return err
		}
	}
	return nil
}

func (s *testServer) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		for _, p := range req.GetResponseParameters() {
			if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: s.payload(p.GetSize())}); err != nil {
				return err
			}
		}
	}
}
