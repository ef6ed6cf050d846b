// Command grpcproxy is the benchmark's reference for what grpc-go itself
// costs as a proxy (target "grpc-floor", see bench/README.md): the smallest
// transparent gRPC proxy built on grpc-go, with none of Gatehouse.
//
// It serves every method with grpc.UnknownServiceHandler, passes messages
// through as raw bytes with routing.Codec (as Gatehouse's director does),
// copies headers and trailers, and sends everything to one backend over one
// grpc.ClientConn with the static flow-control windows Gatehouse's backend
// connections use. No interceptors, no routing, no metadata policy, no
// stats handler, no limits beyond grpc-go's defaults: whatever Gatehouse
// costs beyond this is its own work; what this costs is grpc-go's, on two
// HTTP/2 hops.
//
// It prints its address on standard output once bound, and serves until
// SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/gatehouse-dev/gatehouse/routing"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	backend := flag.String("backend", "", "the backend's address (host:port)")
	flag.Parse()
	if err := run(*listen, *backend); err != nil {
		fmt.Fprintln(os.Stderr, "grpcproxy:", err)
		os.Exit(1)
	}
}

func run(listen, backend string) error {
	if backend == "" {
		return fmt.Errorf("-backend is required")
	}
	cc, err := grpc.NewClient("passthrough:///"+backend,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<20),
		grpc.WithInitialConnWindowSize(8<<20),
	)
	if err != nil {
		return err
	}
	defer cc.Close()
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	p := &proxy{cc: cc, codec: routing.NewCodec()}
	srv := grpc.NewServer(
		grpc.ForceServerCodecV2(p.codec),
		grpc.UnknownServiceHandler(p.handle),
	)
	fmt.Println(lis.Addr().String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		srv.Stop()
	}()
	return srv.Serve(lis)
}

type proxy struct {
	cc    *grpc.ClientConn
	codec *routing.Codec
}

var streamDesc = grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

func (p *proxy) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	md, _ := metadata.FromIncomingContext(ctx)
	delete(md, ":authority")
	cs, err := p.cc.NewStream(metadata.NewOutgoingContext(ctx, md), &streamDesc, method, grpc.ForceCodecV2(p.codec))
	if err != nil {
		return err
	}
	go func() {
		var f routing.Frame
		defer f.Free()
		for {
			if err := ss.RecvMsg(&f); err != nil {
				if err == io.EOF {
					_ = cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := cs.SendMsg(&f); err != nil {
				return
			}
		}
	}()
	var f routing.Frame
	defer f.Free()
	if h, err := cs.Header(); err == nil && h != nil {
		_ = ss.SetHeader(h)
	}
	for {
		if err := cs.RecvMsg(&f); err != nil {
			ss.SetTrailer(cs.Trailer())
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(&f); err != nil {
			return err
		}
	}
}
