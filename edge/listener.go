package edge

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"strings"

	"github.com/gatehouse-dev/gatehouse/config"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/test/bufconn"
)

// Listener protocols, as written in config.
const (
	protocolShared = "shared"
	protocolGRPC   = "grpc"
)

// server is one bound address: a grpc.Server and, for shared listeners, the
// HTTP server in front of it and the in-process connection that carries
// transcoded REST calls into the grpc.Server.
type server struct {
	name     string
	protocol string
	lis      net.Listener
	grpc     *grpc.Server

	// Shared listeners only.
	http    *http.Server
	inproc  *bufconn.Listener
	conn    *grpc.ClientConn // in-process client of grpc, for REST
	rest    http.Handler
	browser *browser // CORS, gRPC-Web, browser streams, WebSocket; then rest (browser.go)
}

// grpcServerOptions turns listener limits into grpc.Server options. The
// keepalive and connection-timeout options apply on the native transport
// only; the shared listener enforces its limits in net/http.
func grpcServerOptions(l config.Limits) []grpc.ServerOption {
	return []grpc.ServerOption{
		// Calls run on a pool of long-lived goroutines whose stacks are
		// already grown, instead of a new goroutine each (whose stack grows
		// and is copied on every call through the interceptor chain).
		grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0))),
		grpc.MaxRecvMsgSize(l.MaxMessageBytes),
		grpc.MaxSendMsgSize(l.MaxMessageBytes),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(uint32(l.MaxHeaderBytes)),
		grpc.ConnectionTimeout(l.ReadHeaderTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             l.KeepaliveMinPing,
			PermitWithoutStream: l.KeepalivePermitWithoutCalls,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: l.IdleTimeout,
			Time:              l.KeepalivePing,
			Timeout:           l.KeepaliveTimeout,
		}),
	}
}

// newHTTPServer returns the HTTP server of a shared listener: HTTP/1.1 and
// unencrypted HTTP/2 (prior knowledge, as gRPC clients speak it) with the
// listener's limits.
func newHTTPServer(h http.Handler, l config.Limits) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         &protocols,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: int(l.MaxConcurrentStreams),
			SendPingTimeout:      l.KeepalivePing,
			PingTimeout:          l.KeepaliveTimeout,
		},
	}
}

// isGRPC reports whether r is a gRPC call (HTTP/2 with an application/grpc
// content type), as opposed to REST.
func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") && !isGRPCWeb(r)
}

// ServeHTTP routes a shared listener's requests: gRPC to the grpc.Server,
// everything else to the REST handler.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isGRPC(r) {
		s.grpc.ServeHTTP(w, r)
		return
	}
	if s.browser != nil {
		s.browser.ServeHTTP(w, r) // hands REST on to s.rest
		return
	}
	s.rest.ServeHTTP(w, r)
}

// dialInProcess starts serving s.grpc on an in-memory listener and returns a
// client connection to it. REST calls use it so that they enter the same
// grpc.Server, and therefore the same interceptor chain, as native calls.
func (s *server) dialInProcess(maxMsg int) error {
	s.inproc = bufconn.Listen(1 << 20)
	go func() { _ = s.grpc.Serve(s.inproc) }()
	conn, err := grpc.NewClient("passthrough:///gatehouse-inprocess",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return s.inproc.DialContext(ctx)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg)),
	)
	if err != nil {
		return err
	}
	s.conn = conn
	return nil
}

// serve runs the server on its bound listener until it is shut down. It
// returns nil after a shutdown.
func (s *server) serve() error {
	var err error
	if s.http != nil {
		err = s.http.Serve(s.lis)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
	} else {
		err = s.grpc.Serve(s.lis)
		if errors.Is(err, grpc.ErrServerStopped) {
			err = nil
		}
	}
	return err
}

// shutdown stops accepting, lets in-flight calls finish until ctx ends, then
// closes what is left.
func (s *server) shutdown(ctx context.Context) {
	if s.http != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			_ = s.http.Close()
		}
	}
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
	if s.conn != nil {
		_ = s.conn.Close()
	}
}

// stop closes the server at once; for a server that never served its
// listener (a failed Start).
func (s *server) stop() {
	s.grpc.Stop()
	if s.conn != nil {
		_ = s.conn.Close()
	}
}
