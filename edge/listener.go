package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/gatehouse-dev/gatehouse/config"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/grpc/test/bufconn"
)

// maxHeaderFields bounds the header fields of one request (or gRPC call),
// whatever their total size: more are refused with 431 (shared listeners)
// or RESOURCE_EXHAUSTED before any handler runs (grpc listeners).
const maxHeaderFields = 100

// restBodyTimeoutFactor times the read-header timeout is how long a REST
// request body may take to arrive in full; a slower one is answered 408 and
// its connection closed.
const restBodyTimeoutFactor = 3

// Listener protocols, as written in config.
const (
	protocolShared = "shared"
	protocolGRPC   = "grpc"
)

// grpcConnectionsHTTP is the listener's grpc_connections value that leaves
// every connection to the HTTP server (no split).
const grpcConnectionsHTTP = "http"

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
	split   *h2cSplit // unless grpc_connections is "http": gRPC clients' connections for grpc
	inproc  *bufconn.Listener
	conn    *grpc.ClientConn // in-process client of grpc, for REST
	rest    http.Handler
	browser *browser // CORS, gRPC-Web, browser streams, WebSocket; then rest (browser.go)
}

// grpcServerOptions turns listener limits into grpc.Server options. The
// keepalive and connection-timeout options apply on the native transport
// only (grpc listeners, and gRPC clients' connections that a plaintext
// shared listener hands to it); net/http enforces the shared listener's
// limits on the others.
func grpcServerOptions(l config.Limits) []grpc.ServerOption {
	return []grpc.ServerOption{
		// Calls run on a pool of long-lived goroutines whose stacks are
		// already grown, instead of a new goroutine each (whose stack grows
		// and is copied on every call through the interceptor chain). A
		// call that finds every worker busy gets a new goroutine, so the
		// pool is sized for many calls in flight per CPU (the proxy waits
		// on its backend most of a call's life): at 4 per CPU, 50 calls in
		// flight spent 8% of the gateway's CPU growing stacks.
		grpc.NumStreamWorkers(uint32(64 * runtime.GOMAXPROCS(0))),
		grpc.MaxRecvMsgSize(l.MaxMessageBytes),
		grpc.MaxSendMsgSize(l.MaxMessageBytes),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(uint32(l.MaxHeaderBytes)),
		grpc.ConnectionTimeout(l.ReadHeaderTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             l.KeepaliveMinPing,
			PermitWithoutStream: l.KeepalivePermitWithoutCalls,
		}),
		grpc.InTapHandle(limitHeaderFields),
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
			// A client that stops reading (a PING or SETTINGS flood that
			// never takes its answers) is closed once nothing could be
			// written to it for the ping timeout.
			WriteByteTimeout: l.KeepaliveTimeout,
		},
	}
}

// isGRPC reports whether r is a gRPC call (HTTP/2 with an application/grpc
// content type), as opposed to REST.
func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && isGRPCContentType(r.Header.Get("Content-Type")) // h2csplit.go
}

// ServeHTTP routes a shared listener's requests: gRPC to the grpc.Server,
// everything else to the REST handler.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if n := headerFields(r.Header); n > maxHeaderFields {
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		http.Error(w, fmt.Sprintf("gatehouse: %d header fields, more than %d", n, maxHeaderFields), http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	if isGRPC(r) {
		bw := newBatchWriter(w) // flushbatch.go
		s.grpc.ServeHTTP(bw, r)
		bw.finish()
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
	if s.split != nil {
		go func() { _ = s.grpc.Serve(s.split.native) }() // ends when the split closes
	}
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
	if s.split != nil && s.split.h2 != nil {
		s.split.waitServed(ctx) // TLS HTTP/2 connections net/http does not track
	}
	waitOrForce(ctx, s.grpc.GracefulStop, s.grpc.Stop) // h2csplit.go
	if s.conn != nil {
		_ = s.conn.Close()
	}
}

// stop closes the server at once; for a server that never served its
// listener (a failed Start).
func (s *server) stop() {
	if s.split != nil {
		_ = s.split.Close()
		s.split.closeServed()
	}
	s.grpc.Stop()
	if s.conn != nil {
		_ = s.conn.Close()
	}
}

// headerFields counts the fields of a header, a repeated name once per value.
func headerFields(h http.Header) int {
	n := 0
	for _, v := range h {
		n += max(len(v), 1)
	}
	return n
}

// limitHeaderFields is the grpc listeners' tap: it refuses a call with more
// than maxHeaderFields header fields before a stream handler starts.
func limitHeaderFields(ctx context.Context, info *tap.Info) (context.Context, error) {
	n := 0
	for _, v := range info.Header {
		n += max(len(v), 1)
	}
	if n > maxHeaderFields {
		return ctx, status.Errorf(codes.ResourceExhausted, "gatehouse: %d header fields, more than %d", n, maxHeaderFields)
	}
	return ctx, nil
}

// bodyDeadline bounds how long a REST request body may take to arrive: d
// from the moment the handler starts. A body still arriving then fails the
// handler's read, and the answer becomes 408 with the connection closed,
// whatever the handler made of the failed read. The deadline is lifted as
// soon as the body has been read to its end, so that a long response (a
// server stream) is not cut; requests without a body are untouched.
func bodyDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d <= 0 || r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
			h.ServeHTTP(w, r) // not supported by this writer: no deadline
			return
		}
		body := &deadlineBody{rc: r.Body, ctl: rc}
		// A shallow copy: net/http inspects its own request's Body after the
		// handler (to half-close a connection whose body it left unread).
		r = r.WithContext(r.Context())
		r.Body = body
		tw := &timeoutWriter{ResponseWriter: w, body: body}
		h.ServeHTTP(tw, r)
		if body.timedOut.Load() {
			tw.writeTimeout() // when the handler answered nothing
			return
		}
		_ = rc.SetReadDeadline(time.Time{})
	})
}

// deadlineBody is a request body read under a deadline.
type deadlineBody struct {
	rc       io.ReadCloser
	ctl      *http.ResponseController
	timedOut atomic.Bool
	done     atomic.Bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		if b.done.CompareAndSwap(false, true) {
			_ = b.ctl.SetReadDeadline(time.Time{})
		}
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		b.timedOut.Store(true)
	}
	return n, err
}

func (b *deadlineBody) Close() error { return b.rc.Close() }

// timeoutWriter turns the answer to a request whose body timed out into
// 408; other answers pass unchanged.
type timeoutWriter struct {
	http.ResponseWriter
	body     *deadlineBody
	wrote    bool // the handler wrote a header
	replaced bool // the answer is 408; the handler's writes are dropped
}

func (w *timeoutWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	if w.body.timedOut.Load() {
		w.replaced = true
		w.sendTimeout()
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *timeoutWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// Flush keeps streamed REST answers flowing (grpc-gateway asserts
// http.Flusher).
func (w *timeoutWriter) Flush() {
	if !w.replaced {
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
}

func (w *timeoutWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writeTimeout answers 408 if the handler wrote nothing.
func (w *timeoutWriter) writeTimeout() {
	if !w.wrote {
		w.wrote, w.replaced = true, true
		w.sendTimeout()
	}
}

func (w *timeoutWriter) sendTimeout() {
	h := w.ResponseWriter.Header()
	for k := range h {
		delete(h, k)
	}
	h.Set("Connection", "close")
	h.Set("Content-Type", "application/json")
	w.ResponseWriter.WriteHeader(http.StatusRequestTimeout)
	_, _ = io.WriteString(w.ResponseWriter, `{"code":4,"message":"gatehouse: request body not received in time"}`)
}

var _ http.Flusher = (*timeoutWriter)(nil)
