package accesslog_test

import (
	"context"
	"log/slog"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/gatehouse-dev/gatehouse/interceptors/accesslog"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

// One JSON line per call. Inner layers record the route and backend through
// callinfo. (Attributes that change from run to run are dropped here.)
func Example() {
	logger := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case slog.TimeKey, "duration_ms", "peer", "user_agent":
				return slog.Attr{}
			}
			return a
		},
	}))
	// router stands for the gateway's router, installed inside the access log.
	router := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		callinfo.From(ctx).SetRoute("health", "local")
		return h(ctx, req)
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(accesslog.UnaryServerInterceptor(logger), router),
		grpc.ChainStreamInterceptor(accesslog.StreamServerInterceptor(logger)),
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

	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-request-id", "req-1")
	_, _ = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	// Output:
	// {"level":"INFO","msg":"grpc call","grpc.method":"/grpc.health.v1.Health/Check","route":"health","backend":"local","grpc.code":"NotFound","upstream_duration_ms":0,"bytes_received":6,"bytes_sent":0,"request_id":"req-1","principal":""}
}
