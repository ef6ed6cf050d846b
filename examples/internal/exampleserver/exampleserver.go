// Package exampleserver builds the grpc.Server every example backend runs:
// the service, protovalidate on every request, the standard health service
// and server reflection.
package exampleserver

import (
	"buf.build/go/protovalidate"
	grpcprotovalidate "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// New returns a *grpc.Server, not yet serving, with impl registered as
// desc, a health service reporting SERVING for "" and for desc's service,
// and server reflection.
//
// Every request is validated against its protovalidate rules; an invalid one
// fails with codes.InvalidArgument and a buf.validate.Violations detail. The
// validation interceptors run after (inside) any interceptors given in opts.
// Validation uses protovalidate.GlobalValidator, shared by every server in the
// process.
func New(desc *grpc.ServiceDesc, impl any, opts ...grpc.ServerOption) *grpc.Server {
	v := protovalidate.GlobalValidator
	all := make([]grpc.ServerOption, 0, len(opts)+2)
	all = append(all, opts...)
	all = append(all,
		grpc.ChainUnaryInterceptor(grpcprotovalidate.UnaryServerInterceptor(v)),
		grpc.ChainStreamInterceptor(grpcprotovalidate.StreamServerInterceptor(v)),
	)
	s := grpc.NewServer(all...)
	s.RegisterService(desc, impl)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s
}
