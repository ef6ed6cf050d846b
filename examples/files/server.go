package files

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	filesv1 "github.com/gatehouse-dev/gatehouse/gen/examples/files/v1"
)

// NewGRPCServer returns a *grpc.Server, not yet serving, with srv registered
// as filesv1.FileService, the standard health service reporting SERVING for
// "" and "examples.files.v1.FileService", and server reflection. Messages
// are bounded by grpc-go's defaults (4 MiB received) unless opts say
// otherwise.
func NewGRPCServer(srv *Server, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(opts...)
	filesv1.RegisterFileServiceServer(s, srv)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(filesv1.FileService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s
}
