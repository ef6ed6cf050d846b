package greeter

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
)

// Metadata keys of the request-id echo.
const (
	// RequestIDKey is the inbound metadata key the server reads.
	RequestIDKey = "x-request-id"
	// RequestIDSeenKey is the response header that carries back every
	// RequestIDKey value the server received. It is absent when the request
	// carried none.
	RequestIDSeenKey = "x-request-id-seen"
)

// Server is the example greeter. It holds no mutable state and is safe for
// concurrent use. Create it with New.
type Server struct {
	greeterv1.UnimplementedGreeterServiceServer

	servedBy string
}

var _ greeterv1.GreeterServiceServer = (*Server)(nil)

// New returns a Server that reports servedBy (typically its listen address)
// in every SayHelloResponse.
func New(servedBy string) *Server {
	return &Server{servedBy: servedBy}
}

// SayHello answers "Hello, <name>!" and the instance that served it.
func (s *Server) SayHello(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	if md, ok := seenHeader(ctx); ok {
		if err := grpc.SetHeader(ctx, md); err != nil {
			return nil, err
		}
	}
	return &greeterv1.SayHelloResponse{
		Message:  fmt.Sprintf("Hello, %s!", req.GetName()),
		ServedBy: s.servedBy,
	}, nil
}

// StreamHellos sends count messages "Hello #i, <name>!", i from 1. It checks
// the stream's context before every message and returns the matching status
// (Canceled or DeadlineExceeded) once the caller has gone.
func (s *Server) StreamHellos(req *greeterv1.StreamHellosRequest, stream grpc.ServerStreamingServer[greeterv1.StreamHellosResponse]) error {
	ctx := stream.Context()
	if md, ok := seenHeader(ctx); ok {
		if err := stream.SetHeader(md); err != nil {
			return err
		}
	}
	for i := int32(1); i <= req.GetCount(); i++ {
		if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		err := stream.Send(&greeterv1.StreamHellosResponse{
			Message: fmt.Sprintf("Hello #%d, %s!", i, req.GetName()),
			Index:   i,
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// seenHeader returns the response header echoing the inbound request ids,
// and false when there are none.
func seenHeader(ctx context.Context) (metadata.MD, bool) {
	ids := metadata.ValueFromIncomingContext(ctx, RequestIDKey)
	if len(ids) == 0 {
		return nil, false
	}
	return metadata.MD{RequestIDSeenKey: ids}, true
}
