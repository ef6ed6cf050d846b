package quota_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	iquota "github.com/gatehouse-dev/gatehouse/interceptors/quota"
	"github.com/gatehouse-dev/gatehouse/quota"
)

// Two calls a minute per tenant: the third is refused, and every answer
// says what is left.
func Example() {
	l, err := quota.New([]quota.Policy{{
		Name: "per-tenant",
		Key:  `metadata["x-tenant"]`,
		Rate: &quota.Rate{Requests: 2, Per: time.Minute, Burst: 2},
	}}, nil, 1)
	if err != nil {
		panic(err)
	}
	// The gateway names the route from its route table; here every call
	// takes the route "api".
	route := iquota.WithRoute(func(context.Context, string, metadata.MD) string { return "api" })
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(iquota.UnaryServerInterceptor(l, route)),
		grpc.ChainStreamInterceptor(iquota.StreamServerInterceptor(l, route)),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer cc.Close()

	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-tenant", "acme")
	for range 3 {
		var hdr metadata.MD
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
		fmt.Println(status.Code(err), hdr.Get("ratelimit"))
	}
	// Output:
	// OK ["per-tenant";r=1;t=30]
	// OK ["per-tenant";r=0;t=60]
	// ResourceExhausted ["per-tenant";r=0;t=30]
}
