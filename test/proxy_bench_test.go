package test

import (
	"context"
	"fmt"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// BenchmarkGatewayProxy measures a proxied call through the whole gateway
// assembly (listener, interceptor chain as shipped, router, director,
// pool) in one process with its client and backend, on both kinds of
// listener. allocs/op counts the three together; compare it with the
// direct variant, which is client and backend alone. For CPU per call
// against nginx, use the bench harness (bench/). Run with:
//
//	go test ./test/ -run '^$' -bench GatewayProxy -benchmem
func BenchmarkGatewayProxy(b *testing.B) {
	backend := startBackend(b)
	g := startGatewayB(b, fmt.Sprintf(`
listeners:
  - { name: grpc, address: "127.0.0.1:0", protocol: grpc }
  - { name: shared, address: "127.0.0.1:0" }
backends: [{ name: testsvc, endpoints: [%q] }]
routes: [{ name: testsvc, match: { service: "grpc.testing.TestService" }, backend: testsvc }]
`, backend))
	targets := []struct{ name, addr string }{
		{"direct", backend},
		{"grpc", g.Addr("grpc").String()},
		{"shared", g.Addr("shared").String()},
	}
	unary := &testpb.SimpleRequest{ResponseSize: 64, Payload: &testpb.Payload{Body: make([]byte, 64)}}
	params := make([]*testpb.ResponseParameters, 100)
	for i := range params {
		params[i] = &testpb.ResponseParameters{Size: 64}
	}
	stream := &testpb.StreamingOutputCallRequest{ResponseParameters: params}
	for _, tt := range targets {
		cc, err := grpc.NewClient(tt.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cc.Close() })
		tc := testgrpc.NewTestServiceClient(cc)
		ctx := context.Background()
		b.Run("unary64B/"+tt.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := tc.UnaryCall(ctx, unary); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("stream100x64B/"+tt.name, func(b *testing.B) {
			for b.Loop() {
				st, err := tc.StreamingOutputCall(ctx, stream)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for {
					if _, err := st.Recv(); err == io.EOF {
						break
					} else if err != nil {
						b.Fatal(err)
					}
					n++
				}
				if n != len(params) {
					b.Fatalf("%d messages, want %d", n, len(params))
				}
			}
		})
	}
}
