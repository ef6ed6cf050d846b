package requestid_test

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/gatehouse-dev/gatehouse/interceptors/requestid"
)

// The client's sane id is kept and echoed in the response header; an insane
// one is replaced by a fresh id.
func Example() {
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(requestid.UnaryServerInterceptor(
			requestid.WithGenerator(func() string { return "minted" }),
		)),
		grpc.ChainStreamInterceptor(requestid.StreamServerInterceptor()),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
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
	client := healthpb.NewHealthClient(cc)

	for _, sent := range []string{"abc-123", "<script>"} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), requestid.Key, sent)
		var hdr metadata.MD
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr)); err != nil {
			panic(err)
		}
		fmt.Printf("sent %s, got %s\n", sent, hdr.Get(requestid.Key)[0])
	}
	// Output:
	// sent abc-123, got abc-123
	// sent <script>, got minted
}
