package library

import (
	"buf.build/go/protovalidate"
	grpcprotovalidate "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

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
// Validation uses protovalidate.GlobalValidator, shared by every server in the
// process.
func NewGRPCServer(srv *Server, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(withValidation(opts)...)
	libraryv1.RegisterLibraryServiceServer(s, srv)
	registerHealthAndReflection(s, libraryv1.LibraryService_ServiceDesc.ServiceName)
	return s
}

// withValidation returns a copy of opts with the protovalidate interceptors
// chained last, so they run innermost.
func withValidation(opts []grpc.ServerOption) []grpc.ServerOption {
	v := protovalidate.GlobalValidator
	out := make([]grpc.ServerOption, 0, len(opts)+2)
	out = append(out, opts...)
	return append(out,
		grpc.ChainUnaryInterceptor(grpcprotovalidate.UnaryServerInterceptor(v)),
		grpc.ChainStreamInterceptor(grpcprotovalidate.StreamServerInterceptor(v)),
	)
}

// registerHealthAndReflection registers a health service reporting SERVING
// for "" and service, and server reflection.
func registerHealthAndReflection(s *grpc.Server, service string) {
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
}
