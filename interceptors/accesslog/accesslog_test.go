package accesslog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse-dev/gatehouse/interceptors/accesslog"
	"github.com/gatehouse-dev/gatehouse/interceptors/internal/itest"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the JSON lines logged so far.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(s.b.String()), "\n") {
		if line == "" {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// router stands for the gateway's router: it records the route in callinfo.
func router(ctx context.Context) {
	callinfo.From(ctx).SetRoute("echo-route", "echo-backend")
}

func payload(n int) *testpb.Payload {
	return &testpb.Payload{Body: bytes.Repeat([]byte("x"), n)}
}

func TestAccessLog(t *testing.T) {
	unaryReq := &testpb.SimpleRequest{Payload: payload(100)}
	unaryResp := &testpb.SimpleResponse{Payload: payload(100)}
	streamReqs := []*testpb.StreamingOutputCallRequest{
		{Payload: payload(10)}, {Payload: payload(200)}, {Payload: payload(3000)},
	}
	var streamIn, streamOut int
	for _, r := range streamReqs {
		streamIn += proto.Size(r)
		streamOut += proto.Size(&testpb.StreamingOutputCallResponse{Payload: r.Payload})
	}
	notFound := &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound)}}
	denied := &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.PermissionDenied)}}
	failing := &testpb.StreamingOutputCallRequest{
		ResponseStatus: &testpb.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "no"},
	}

	tests := []struct {
		name     string
		proxied  bool
		panic    bool
		call     func(ctx context.Context, c testgrpc.TestServiceClient) error
		method   string
		code     string
		recv     int
		sent     int
		routeSet bool
	}{
		{
			name: "unary ok",
			call: func(ctx context.Context, c testgrpc.TestServiceClient) error {
				_, err := c.UnaryCall(ctx, unaryReq)
				return err
			},
			method: "/grpc.testing.TestService/UnaryCall", code: "OK",
			recv: proto.Size(unaryReq), sent: proto.Size(unaryResp), routeSet: true,
		},
		{
			name: "unary error",
			call: func(ctx context.Context, c testgrpc.TestServiceClient) error {
				_, err := c.UnaryCall(ctx, notFound)
				return err
			},
			method: "/grpc.testing.TestService/UnaryCall", code: "NotFound",
			recv: proto.Size(notFound), sent: 0, routeSet: true,
		},
		{
			name:  "unary panic",
			panic: true,
			call: func(ctx context.Context, c testgrpc.TestServiceClient) error {
				_, err := c.EmptyCall(ctx, &testpb.Empty{})
				return err
			},
			method: "/grpc.testing.TestService/EmptyCall", code: "Internal", routeSet: true,
		},
		{
			name: "stream ok",
			call: func(ctx context.Context, c testgrpc.TestServiceClient) error {
				return duplex(ctx, c, streamReqs)
			},
			method: "/grpc.testing.TestService/FullDuplexCall", code: "OK",
			recv: streamIn, sent: streamOut, routeSet: true,
		},
		{
			name: "stream error",
			call: func(ctx context.Context, c testgrpc.TestServiceClient) error {
				return duplex(ctx, c, append(streamReqs[:1:1], failing))
			},
			method: "/grpc.testing.TestService/FullDuplexCall", code: "FailedPrecondition",
			recv: proto.Size(streamReqs[0]) + proto.Size(failing), sent: proto.Size(&testpb.StreamingOutputCallResponse{Payload: streamReqs[0].Payload}),
			routeSet: true,
		},
		{
			name:  "stream panic",
			panic: true,
			call: func(ctx context.Context, c testgrpc.TestServiceClient) error {
				return duplex(ctx, c, streamReqs)
			},
			method: "/grpc.testing.TestService/FullDuplexCall", code: "Internal", routeSet: true,
		},
		{
			name:    "proxied raw frames",
			proxied: true,
			call: func(ctx context.Context, c testgrpc.TestServiceClient) error {
				return duplex(ctx, c, streamReqs)
			},
			method: "/grpc.testing.TestService/FullDuplexCall", code: "OK",
			recv: streamIn, sent: streamOut, routeSet: true,
		},
		{
			name:    "proxied unary as raw frames",
			proxied: true,
			call: func(ctx context.Context, c testgrpc.TestServiceClient) error {
				_, err := c.UnaryCall(ctx, unaryReq)
				return err
			},
			method: "/grpc.testing.TestService/UnaryCall", code: "OK",
			recv: proto.Size(unaryReq), sent: proto.Size(unaryResp), routeSet: true,
		},
		{
			name:    "proxied backend error",
			proxied: true,
			call: func(ctx context.Context, c testgrpc.TestServiceClient) error {
				_, err := c.UnaryCall(ctx, denied)
				return err
			},
			method: "/grpc.testing.TestService/UnaryCall", code: "PermissionDenied",
			recv: proto.Size(denied), routeSet: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf syncBuffer
			logger := slog.New(slog.NewJSONHandler(&buf, nil))
			opts := []grpc.ServerOption{
				grpc.ChainUnaryInterceptor(
					recoverUnary,
					accesslog.UnaryServerInterceptor(logger),
					func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
						router(ctx)
						return h(ctx, req)
					},
				),
				grpc.ChainStreamInterceptor(
					recoverStream,
					accesslog.StreamServerInterceptor(logger),
					func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
						router(ss.Context())
						return h(srv, ss)
					},
				),
			}
			var client testgrpc.TestServiceClient
			if tt.proxied {
				bcc := itest.Serve(t, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, &itest.Service{}) })
				client = testgrpc.NewTestServiceClient(itest.ServeProxy(t, bcc, opts...))
			} else {
				_, client = itest.ServeTestService(t, opts...)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "x-request-id", "rid-42")
			if tt.panic {
				ctx = metadata.AppendToOutgoingContext(ctx, itest.PanicKey, "boom")
			}
			err := tt.call(ctx, client)
			if got := status.Code(err).String(); got != tt.code {
				t.Fatalf("client got %v, want code %s", err, tt.code)
			}

			lines := buf.lines(t)
			if len(lines) != 1 {
				t.Fatalf("logged %d lines, want 1: %v", len(lines), lines)
			}
			line := lines[0]
			want := map[string]any{
				"level":          "INFO",
				"msg":            accesslog.Message,
				"grpc.method":    tt.method,
				"grpc.code":      tt.code,
				"bytes_received": float64(tt.recv),
				"bytes_sent":     float64(tt.sent),
				"request_id":     "rid-42",
			}
			if tt.routeSet {
				want["route"], want["backend"] = "echo-route", "echo-backend"
			}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("%s = %v (%T), want %v", k, line[k], line[k], v)
				}
			}
			if d, ok := line["duration_ms"].(float64); !ok || d < 0 {
				t.Errorf("duration_ms = %v", line["duration_ms"])
			}
			if p, _ := line["peer"].(string); !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("peer = %q, want 127.0.0.1:port", p)
			}
			if ua, _ := line["user_agent"].(string); !strings.Contains(ua, "grpc-go/") {
				t.Errorf("user_agent = %q, want grpc-go/...", ua)
			}
		})
	}
}

// recoverUnary and recoverStream stand for the recovery interceptor, which
// this package does not import.
func recoverUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (_ any, err error) {
	defer func() {
		if recover() != nil {
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return h(ctx, req)
}

func recoverStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if recover() != nil {
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return h(srv, ss)
}

func duplex(ctx context.Context, c testgrpc.TestServiceClient, reqs []*testpb.StreamingOutputCallRequest) error {
	s, err := c.FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	for _, r := range reqs {
		if err := s.Send(r); err != nil {
			break // the status comes from Recv.
		}
		if _, err := s.Recv(); err != nil {
			return err
		}
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// pipeAddr is a non-TCP address, like an in-process connection's.
type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// TestPeer checks the choice of peer address. It calls the interceptor
// directly: loopback tests only ever have TCP peers.
func TestPeer(t *testing.T) {
	tcp := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 4242}
	tests := []struct {
		name string
		addr net.Addr
		xff  []string
		want string
	}{
		{name: "tcp wins over xff", addr: tcp, xff: []string{"1.2.3.4"}, want: "10.0.0.1:4242"},
		{name: "in-process takes last xff hop", addr: pipeAddr{}, xff: []string{"1.1.1.1, 2.2.2.2", "3.3.3.3 , 4.4.4.4 "}, want: "4.4.4.4"},
		{name: "in-process single xff", addr: pipeAddr{}, xff: []string{"5.5.5.5"}, want: "5.5.5.5"},
		{name: "in-process without xff", addr: pipeAddr{}, want: "pipe"},
		{name: "in-process empty xff", addr: pipeAddr{}, xff: []string{" "}, want: "pipe"},
		{name: "unix socket with xff", addr: &net.UnixAddr{Name: "/run/g.sock", Net: "unix"}, xff: []string{"6.6.6.6"}, want: "6.6.6.6"},
		{name: "no peer", want: ""},
		{name: "no peer with xff", xff: []string{"7.7.7.7"}, want: "7.7.7.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf syncBuffer
			ic := accesslog.UnaryServerInterceptor(slog.New(slog.NewJSONHandler(&buf, nil)))
			ctx := context.Background()
			if tt.addr != nil {
				ctx = peer.NewContext(ctx, &peer.Peer{Addr: tt.addr})
			}
			md := metadata.MD{}
			for _, v := range tt.xff {
				md.Append("x-forwarded-for", v)
			}
			ctx = metadata.NewIncomingContext(ctx, md)
			_, err := ic(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/s/m"}, func(context.Context, any) (any, error) { return nil, nil })
			if err != nil {
				t.Fatal(err)
			}
			if got := buf.lines(t)[0]["peer"]; got != tt.want {
				t.Errorf("peer = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		opts      []accesslog.Option
		minLevel  slog.Level
		err       error
		wantLines int
		want      map[string]any
	}{
		{
			name:      "clock",
			opts:      []accesslog.Option{accesslog.WithNow(steps(t0, 1500*time.Microsecond))},
			wantLines: 1,
			want:      map[string]any{"duration_ms": 1.5},
		},
		{
			name:      "level by code",
			opts:      []accesslog.Option{accesslog.WithLevel(errorsOnly)},
			minLevel:  slog.LevelWarn,
			err:       status.Error(codes.Internal, "x"),
			wantLines: 1,
			want:      map[string]any{"level": "ERROR", "grpc.code": "Internal"},
		},
		{
			name:      "disabled level logs nothing",
			opts:      []accesslog.Option{accesslog.WithLevel(errorsOnly)},
			minLevel:  slog.LevelWarn,
			wantLines: 0,
		},
		{
			name:      "context error",
			err:       context.DeadlineExceeded,
			wantLines: 1,
			want:      map[string]any{"grpc.code": "DeadlineExceeded"},
		},
		{
			name:      "plain error",
			err:       io.ErrUnexpectedEOF,
			wantLines: 1,
			want:      map[string]any{"grpc.code": "Unknown"},
		},
		{
			name:      "request id func",
			opts:      []accesslog.Option{accesslog.WithRequestID(func(context.Context) string { return "from-ctx" })},
			wantLines: 1,
			want:      map[string]any{"request_id": "from-ctx"},
		},
		{
			name:      "nil options keep defaults",
			opts:      []accesslog.Option{accesslog.WithNow(nil), accesslog.WithLevel(nil), accesslog.WithRequestID(nil)},
			wantLines: 1,
			want:      map[string]any{"level": "INFO", "request_id": "md-id"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf syncBuffer
			logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: tt.minLevel}))
			ic := accesslog.UnaryServerInterceptor(logger, tt.opts...)
			ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-request-id", "md-id"))
			_, _ = ic(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/s/m"}, func(context.Context, any) (any, error) { return nil, tt.err })
			lines := buf.lines(t)
			if len(lines) != tt.wantLines {
				t.Fatalf("logged %d lines, want %d", len(lines), tt.wantLines)
			}
			for k, v := range tt.want {
				if lines[0][k] != v {
					t.Errorf("%s = %v, want %v", k, lines[0][k], v)
				}
			}
		})
	}
}

func TestNilLogger(t *testing.T) {
	ic := accesslog.UnaryServerInterceptor(nil)
	resp, err := ic(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/s/m"}, func(context.Context, any) (any, error) { return "ok", nil })
	if resp != "ok" || err != nil {
		t.Fatalf("got %v, %v", resp, err)
	}
}

func errorsOnly(c codes.Code) slog.Level {
	if c == codes.Internal || c == codes.Unknown {
		return slog.LevelError
	}
	return slog.LevelDebug
}

// steps returns a clock that starts at t0 and advances by step per reading.
func steps(t0 time.Time, step time.Duration) func() time.Time {
	var mu sync.Mutex
	now := t0.Add(-step)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(step)
		return now
	}
}
