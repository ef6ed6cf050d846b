package routing

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"
)

const gatewayMaxRecv = 4 << 20

// testing.TB helpers that build the three parties of a proxied call over
// real loopback: a backend, the gateway (codec + director) and a client.

// startServer serves s on 127.0.0.1:0 (or on lis when given) until the test
// ends and returns the address.
func startServer(tb testing.TB, s *grpc.Server, lis net.Listener) string {
	tb.Helper()
	if lis == nil {
		var err error
		lis, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	tb.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis.Addr().String()
}

// startBackend serves the given TestService (the interop server when nil).
func startBackend(tb testing.TB, impl testgrpc.TestServiceServer) string {
	tb.Helper()
	if impl == nil {
		impl = interop.NewTestServer()
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, impl)
	return startServer(tb, s, nil)
}

// dial returns a client connection to addr, closed when the test ends.
func dial(tb testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// staticResolver routes every call to one backend connection.
func staticResolver(conn grpc.ClientConnInterface) Resolver {
	return ResolverFunc(func(context.Context, string, metadata.MD) (Target, error) {
		return Target{Route: "all", Backend: "backend", Conn: conn}, nil
	})
}

// newGatewayServer returns the gateway's server: the Frame codec, the
// director as unknown-service handler and a 4 MiB receive limit.
func newGatewayServer(d *Director, opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{
		grpc.ForceServerCodecV2(NewCodec()),
		grpc.UnknownServiceHandler(d.Handler),
		grpc.MaxRecvMsgSize(gatewayMaxRecv),
	}, opts...)
	return grpc.NewServer(opts...)
}

// startGateway serves a director over TCP in front of backendAddr and returns
// the gateway's address.
func startGateway(tb testing.TB, backendAddr string, opts ...Option) string {
	tb.Helper()
	d := NewDirector(staticResolver(dial(tb, backendAddr)), opts...)
	return startServer(tb, newGatewayServer(d), nil)
}

// proxiedClient returns a TestService client that reaches backendAddr through
// a gateway.
func proxiedClient(tb testing.TB, backendAddr string, opts ...Option) testgrpc.TestServiceClient {
	tb.Helper()
	return testgrpc.NewTestServiceClient(dial(tb, startGateway(tb, backendAddr, opts...)))
}

// startBufconnGateway serves a director over an in-process listener, like the
// REST path reaches it, and returns a client connection to it.
func startBufconnGateway(tb testing.TB, backendAddr string, opts ...Option) *grpc.ClientConn {
	tb.Helper()
	lis := bufconn.Listen(1 << 20)
	d := NewDirector(staticResolver(dial(tb, backendAddr)), opts...)
	startServer(tb, newGatewayServer(d), lis)
	return dial(tb, "bufnet", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return lis.DialContext(ctx)
	}))
}
