package library

import (
	"google.golang.org/grpc"

	"github.com/gatehouse-dev/gatehouse/examples/internal/exampleserver"
	libraryv1 "github.com/gatehouse-dev/gatehouse/gen/examples/library/v1"
)

// NewGRPCServer returns a *grpc.Server, not yet serving, with srv registered
// as libraryv1.LibraryService, the standard health service reporting SERVING
// for the server as a whole ("") and for "examples.library.v1.LibraryService",
// and server reflection.
//
// Every request is validated against its protovalidate rules; an invalid one
// fails with codes.InvalidArgument and a buf.validate.Violations detail. The
// validation interceptors run after (inside) any interceptors given in opts.
func NewGRPCServer(srv *Server, opts ...grpc.ServerOption) *grpc.Server {
	return exampleserver.New(&libraryv1.LibraryService_ServiceDesc, srv, opts...)
}
