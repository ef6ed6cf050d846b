package greeter

import (
	"google.golang.org/grpc"

	"github.com/gatehouse-dev/gatehouse/examples/internal/exampleserver"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
)

// NewGRPCServer returns a *grpc.Server, not yet serving, with srv registered
// as greeterv1.GreeterService, the standard health service reporting SERVING
// for the server as a whole ("") and for "examples.greeter.v1.GreeterService",
// and server reflection.
//
// Every request is validated against its protovalidate rules; an invalid one
// fails with codes.InvalidArgument and a buf.validate.Violations detail. The
// validation interceptors run after (inside) any interceptors given in opts.
func NewGRPCServer(srv *Server, opts ...grpc.ServerOption) *grpc.Server {
	return exampleserver.New(&greeterv1.GreeterService_ServiceDesc, srv, opts...)
}
