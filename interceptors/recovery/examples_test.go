package recovery_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-dev/gatehouse/interceptors/recovery"
)

// panickyHealth is a health service whose Check panics.
type panickyHealth struct {
	*health.Server
}

func (panickyHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	panic("secret: connection string postgres://admin:hunter2@db")
}

// A panicking handler answers codes.Internal with a generic message; the
// panic value and stack go only to the logger.
func Example() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(recovery.WithLogger(logger))),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(recovery.WithLogger(logger))),
	)
	healthpb.RegisterHealthServer(srv, panickyHealth{health.NewServer()})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer cc.Close()
	_, err = healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	st := status.Convert(err)
	fmt.Println(st.Code(), st.Message())
	// Output: Internal internal error
}
