// Package demo runs `gatehouse demo`: the gateway in front of example
// backends from proto/examples/, on a built-in config, with commands to try
// it. The end-to-end tests start the very same assembly.
package demo

import (
	"context"
	_ "embed"
	"fmt"
	"net"
	"strings"
	"text/template"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/greeter"
	"github.com/gatehouse-dev/gatehouse/examples/library"
	filesv1 "github.com/gatehouse-dev/gatehouse/gen/examples/files/v1"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	libraryv1 "github.com/gatehouse-dev/gatehouse/gen/examples/library/v1"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
)

// configTemplate is the demo's built-in config. Backend endpoints are filled
// in once the example backends have bound their free ports.
//
//go:embed demo.yaml.tmpl
var configTemplate string

// Addresses are where the demo listens.
type Addresses struct {
	// Edge is the client listener (gRPC and REST), e.g. "127.0.0.1:8080".
	Edge string
	// Admin is the admin listener, e.g. "127.0.0.1:9901".
	Admin string
}

// Demo is a running demo: the gateway and its example backends.
type Demo struct {
	// Gateway is the running gateway.
	Gateway *edge.Gateway
	// Config is the demo config as loaded, YAML.
	Config string

	backends []*grpc.Server
	lis      []net.Listener
}

// REST returns the REST registrars for the compiled-in example services,
// whose protos carry google.api.http annotations. `gatehouse serve` uses
// them too, so that a config routing to these services gets their REST
// routes.
func REST() []edge.RESTRegistrar {
	return []edge.RESTRegistrar{
		func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
			return greeterv1.RegisterGreeterServiceHandlerClient(ctx, mux, greeterv1.NewGreeterServiceClient(conn))
		},
		func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
			return libraryv1.RegisterLibraryServiceHandlerClient(ctx, mux, libraryv1.NewLibraryServiceClient(conn))
		},
		func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
			return filesv1.RegisterFileServiceHandlerClient(ctx, mux, filesv1.NewFileServiceClient(conn))
		},
	}
}

// Start starts three greeter instances (two behind the "greeter" backend,
// one as "greeter-canary", picked by the metadata x-track: canary) and a
// library backend on free loopback ports, then the gateway on addrs.
func Start(ctx context.Context, addrs Addresses, opts ...edge.Option) (*Demo, error) {
	d := &Demo{}
	ok := false
	defer func() {
		if !ok {
			d.stopBackends()
		}
	}()
	start := func(newServer func(addr string) *grpc.Server) (string, error) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		s := newServer(lis.Addr().String())
		d.backends = append(d.backends, s)
		d.lis = append(d.lis, lis)
		go func() { _ = s.Serve(lis) }()
		return lis.Addr().String(), nil
	}
	newGreeter := func(addr string) *grpc.Server { return greeter.NewGRPCServer(greeter.New(addr)) }
	vars := map[string]string{"Edge": addrs.Edge, "Admin": addrs.Admin}
	for _, name := range []string{"GreeterA", "GreeterB", "Canary"} {
		addr, err := start(newGreeter)
		if err != nil {
			return nil, err
		}
		vars[name] = addr
	}
	lib := library.New()
	lib.Seed()
	addr, err := start(func(string) *grpc.Server { return library.NewGRPCServer(lib) })
	if err != nil {
		return nil, err
	}
	vars["Library"] = addr

	var b strings.Builder
	if err := template.Must(template.New("demo").Parse(configTemplate)).Execute(&b, vars); err != nil {
		return nil, err
	}
	d.Config = b.String()
	cfg, err := config.Parse("demo.yaml", []byte(d.Config))
	if err != nil {
		return nil, err
	}
	g, err := edge.New(cfg, append([]edge.Option{edge.WithREST(REST()...)}, opts...)...)
	if err != nil {
		return nil, err
	}
	if err := g.Start(ctx); err != nil {
		return nil, err
	}
	d.Gateway = g
	ok = true
	return d, nil
}

// Shutdown drains the gateway, then stops the backends.
func (d *Demo) Shutdown(ctx context.Context) error {
	var err error
	if d.Gateway != nil {
		err = d.Gateway.Shutdown(ctx)
	}
	d.stopBackends()
	return err
}

func (d *Demo) stopBackends() {
	for _, s := range d.backends {
		s.Stop()
	}
	d.backends = nil
}

// Commands returns ready-to-paste grpcurl and curl commands that work against
// the running demo, each with a comment saying what it shows.
func (d *Demo) Commands() []string {
	edgeAddr := d.Gateway.Addr("edge").String()
	admin := d.Gateway.Addr("admin").String()
	return []string{
		"# gRPC, round-robin over two greeter instances (watch servedBy):",
		fmt.Sprintf(`grpcurl -plaintext -d '{"name":"Ada"}' %s examples.greeter.v1.GreeterService/SayHello`, edgeAddr),
		"# the same call, routed by metadata to the canary backend:",
		fmt.Sprintf(`grpcurl -plaintext -H 'x-track: canary' -d '{"name":"Ada"}' %s examples.greeter.v1.GreeterService/SayHello`, edgeAddr),
		"# a server stream, proxied frame by frame:",
		fmt.Sprintf(`grpcurl -plaintext -d '{"name":"Ada","count":3}' %s examples.greeter.v1.GreeterService/StreamHellos`, edgeAddr),
		"# the services the gateway routes, by server reflection:",
		fmt.Sprintf(`grpcurl -plaintext %s list`, edgeAddr),
		"# REST/JSON, transcoded at the edge from the protos' google.api.http annotations:",
		fmt.Sprintf(`curl -s -X POST http://%s/v1/greeter:sayHello -d '{"name":"Ada"}'`, edgeAddr),
		fmt.Sprintf(`curl -s http://%s/v1/books`, edgeAddr),
		fmt.Sprintf(`curl -s -X POST http://%s/v1/books -d '{"title":"Dune","author":"Frank Herbert","year":1965}'`, edgeAddr),
		fmt.Sprintf(`curl -s http://%s/v1/books/b1`, edgeAddr),
		"# validation at the edge (protovalidate rules in the proto): 400 with the violations:",
		fmt.Sprintf(`curl -s -X POST http://%s/v1/books -d '{"title":"","author":"Nobody","year":1200}'`, edgeAddr),
		"# no route: 404 for REST, UNIMPLEMENTED for gRPC:",
		fmt.Sprintf(`curl -s http://%s/v1/nothing-here`, edgeAddr),
		"# the admin API (gRPC and REST) and readiness:",
		fmt.Sprintf(`curl -s http://%s/v1/routes`, admin),
		fmt.Sprintf(`curl -s http://%s/v1/backends`, admin),
		fmt.Sprintf(`curl -s http://%s/readyz`, admin),
		fmt.Sprintf(`grpcurl -plaintext %s gatehouse.admin.v1.AdminService/ListRoutes`, admin),
	}
}
