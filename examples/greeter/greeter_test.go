package greeter_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	validatepb "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-dev/gatehouse/examples/greeter"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start serves a greeter on 127.0.0.1:0 and returns a client connection to it
// and its address, the instance's served_by. Cleanup stops both.
func start(t *testing.T, opts ...grpc.ServerOption) (*grpc.ClientConn, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	s := greeter.NewGRPCServer(greeter.New(addr), opts...)
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A fixed 64 KiB window (no BDP growth), so that a long stream
		// cannot finish before the client reads it.
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	if err != nil {
		s.Stop()
		<-done
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return conn, addr
}

func ctxTimeout(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantViolation checks that err is InvalidArgument with a protovalidate
// violation on field.
func wantViolation(t *testing.T, err error, field string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("code = %v (%v), want InvalidArgument", st.Code(), err)
	}
	for _, d := range st.Details() {
		v, ok := d.(*validatepb.Violations)
		if !ok {
			continue
		}
		for _, viol := range v.GetViolations() {
			if protovalidate.FieldPathString(viol.GetField()) == field {
				return
			}
		}
	}
	t.Fatalf("no violation on %q in %v", field, st.Details())
}

func TestSayHello(t *testing.T) {
	conn, addr := start(t)
	client := greeterv1.NewGreeterServiceClient(conn)
	tests := []struct {
		name      string
		req       *greeterv1.SayHelloRequest
		wantMsg   string
		wantField string // non-empty: want InvalidArgument on this field
	}{
		{name: "ok", req: &greeterv1.SayHelloRequest{Name: "Ada"}, wantMsg: "Hello, Ada!"},
		{name: "unicode", req: &greeterv1.SayHelloRequest{Name: "Gödel"}, wantMsg: "Hello, Gödel!"},
		{name: "empty name", req: &greeterv1.SayHelloRequest{}, wantField: "name"},
		{name: "name too long", req: &greeterv1.SayHelloRequest{Name: strings.Repeat("x", 101)}, wantField: "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.SayHello(ctxTimeout(t), tt.req)
			if tt.wantField != "" {
				wantViolation(t, err, tt.wantField)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetMessage() != tt.wantMsg || resp.GetServedBy() != addr {
				t.Errorf("got (%q, %q), want (%q, %q)", resp.GetMessage(), resp.GetServedBy(), tt.wantMsg, addr)
			}
		})
	}
}

func TestRequestIDEcho(t *testing.T) {
	conn, _ := start(t)
	client := greeterv1.NewGreeterServiceClient(conn)
	tests := []struct {
		name string
		ids  []string
	}{
		{name: "none"},
		{name: "one", ids: []string{"req-1"}},
		{name: "two", ids: []string{"req-1", "req-2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxTimeout(t)
			for _, id := range tt.ids {
				ctx = metadata.AppendToOutgoingContext(ctx, greeter.RequestIDKey, id)
			}

			var header metadata.MD
			if _, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"}, grpc.Header(&header)); err != nil {
				t.Fatal(err)
			}
			if got := header.Get(greeter.RequestIDSeenKey); !slices.Equal(got, tt.ids) {
				t.Errorf("unary %s = %q, want %q", greeter.RequestIDSeenKey, got, tt.ids)
			}

			stream, err := client.StreamHellos(ctx, &greeterv1.StreamHellosRequest{Name: "Ada", Count: 1})
			if err != nil {
				t.Fatal(err)
			}
			header, err = stream.Header()
			if err != nil {
				t.Fatal(err)
			}
			if got := header.Get(greeter.RequestIDSeenKey); !slices.Equal(got, tt.ids) {
				t.Errorf("stream %s = %q, want %q", greeter.RequestIDSeenKey, got, tt.ids)
			}
			if _, err := recvAll(stream); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func recvAll(stream grpc.ServerStreamingClient[greeterv1.StreamHellosResponse]) ([]*greeterv1.StreamHellosResponse, error) {
	var out []*greeterv1.StreamHellosResponse
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

func TestStreamHellos(t *testing.T) {
	conn, _ := start(t)
	client := greeterv1.NewGreeterServiceClient(conn)
	tests := []struct {
		name      string
		req       *greeterv1.StreamHellosRequest
		wantN     int
		wantField string
	}{
		{name: "one", req: &greeterv1.StreamHellosRequest{Name: "Ada", Count: 1}, wantN: 1},
		{name: "three", req: &greeterv1.StreamHellosRequest{Name: "Ada", Count: 3}, wantN: 3},
		{name: "max", req: &greeterv1.StreamHellosRequest{Name: "Ada", Count: 1000}, wantN: 1000},
		{name: "zero count", req: &greeterv1.StreamHellosRequest{Name: "Ada"}, wantField: "count"},
		{name: "count too big", req: &greeterv1.StreamHellosRequest{Name: "Ada", Count: 1001}, wantField: "count"},
		{name: "empty name", req: &greeterv1.StreamHellosRequest{Count: 1}, wantField: "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := client.StreamHellos(ctxTimeout(t), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := recvAll(stream)
			if tt.wantField != "" {
				wantViolation(t, err, tt.wantField)
				if len(got) != 0 {
					t.Errorf("got %d messages before the error, want 0", len(got))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.wantN {
				t.Fatalf("got %d messages, want %d", len(got), tt.wantN)
			}
			for i, m := range got {
				want := fmt.Sprintf("Hello #%d, Ada!", i+1)
				if m.GetMessage() != want || int(m.GetIndex()) != i+1 {
					t.Fatalf("message %d = (%q, %d), want (%q, %d)", i, m.GetMessage(), m.GetIndex(), want, i+1)
				}
			}
		})
	}
}

func TestStreamHellosClientCancel(t *testing.T) {
	conn, _ := start(t)
	client := greeterv1.NewGreeterServiceClient(conn)
	ctx, cancel := context.WithCancel(ctxTimeout(t))
	defer cancel()
	// 1000 messages of over 100 bytes exceed the client's fixed 64 KiB
	// flow-control window (see start), so the server cannot have finished
	// the stream before the cancel (with short messages it sometimes had,
	// and Recv saw OK).
	stream, err := client.StreamHellos(ctx, &greeterv1.StreamHellosRequest{Name: strings.Repeat("A", 100), Count: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	_, err = recvAll(stream)
	if status.Code(err) != codes.Canceled {
		t.Fatalf("after cancel: %v, want Canceled", err)
	}
}

// fakeStream is a server stream that cancels its context after cancelAfter
// messages.
type fakeStream struct {
	grpc.ServerStream // nil: calling other methods panics

	ctx         context.Context
	cancel      context.CancelFunc
	cancelAfter int
	sent        []*greeterv1.StreamHellosResponse
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) Send(m *greeterv1.StreamHellosResponse) error {
	f.sent = append(f.sent, m)
	if len(f.sent) == f.cancelAfter {
		f.cancel()
	}
	return nil
}

// TestStreamHellosStopsOnCancel checks the handler itself notices its
// context ending between messages, which a loopback test cannot pin down.
func TestStreamHellosStopsOnCancel(t *testing.T) {
	tests := []struct {
		name        string
		newCtx      func() (context.Context, context.CancelFunc)
		cancelAfter int
		wantSent    int
		wantCode    codes.Code
	}{
		{
			name:        "canceled after two",
			newCtx:      func() (context.Context, context.CancelFunc) { return context.WithCancel(t.Context()) },
			cancelAfter: 2, wantSent: 2, wantCode: codes.Canceled,
		},
		{
			name: "deadline before first",
			newCtx: func() (context.Context, context.CancelFunc) {
				return context.WithDeadline(t.Context(), time.Unix(0, 0))
			},
			wantSent: 0, wantCode: codes.DeadlineExceeded,
		},
		{
			name:        "never canceled",
			newCtx:      func() (context.Context, context.CancelFunc) { return context.WithCancel(t.Context()) },
			cancelAfter: -1, wantSent: 5, wantCode: codes.OK,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.newCtx()
			defer cancel()
			fs := &fakeStream{ctx: ctx, cancel: cancel, cancelAfter: tt.cancelAfter}
			err := greeter.New("fake").StreamHellos(&greeterv1.StreamHellosRequest{Name: "Ada", Count: 5}, fs)
			if status.Code(err) != tt.wantCode {
				t.Errorf("err = %v, want code %v", err, tt.wantCode)
			}
			if len(fs.sent) != tt.wantSent {
				t.Errorf("sent %d, want %d", len(fs.sent), tt.wantSent)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	conn, _ := start(t)
	client := healthpb.NewHealthClient(conn)
	tests := []struct {
		service  string
		wantCode codes.Code
	}{
		{service: "", wantCode: codes.OK},
		{service: greeterv1.GreeterService_ServiceDesc.ServiceName, wantCode: codes.OK},
		{service: "no.such.Service", wantCode: codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			resp, err := client.Check(ctxTimeout(t), &healthpb.HealthCheckRequest{Service: tt.service})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("Check: %v, want %v", err, tt.wantCode)
			}
			if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("status = %v, want SERVING", resp.GetStatus())
			}
		})
	}
}

func TestReflection(t *testing.T) {
	conn, _ := start(t)
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctxTimeout(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		got = append(got, s.GetName())
	}
	for _, want := range []string{
		greeterv1.GreeterService_ServiceDesc.ServiceName,
		healthpb.Health_ServiceDesc.ServiceName,
		reflectionpb.ServerReflection_ServiceDesc.ServiceName,
	} {
		if !slices.Contains(got, want) {
			t.Errorf("services %q lack %q", got, want)
		}
	}
}

// TestOptsRunOutside checks that interceptors passed to NewGRPCServer run
// before validation: they see invalid requests too.
func TestOptsRunOutside(t *testing.T) {
	seen := make(chan string, 4)
	conn, _ := start(t,
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			seen <- info.FullMethod
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			seen <- info.FullMethod
			return h(srv, ss)
		}),
	)
	client := greeterv1.NewGreeterServiceClient(conn)
	ctx := ctxTimeout(t)
	_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{})
	wantViolation(t, err, "name")
	stream, err := client.StreamHellos(ctx, &greeterv1.StreamHellosRequest{Name: "Ada"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = recvAll(stream)
	wantViolation(t, err, "count")
	if got := []string{<-seen, <-seen}; !slices.Equal(got, []string{
		greeterv1.GreeterService_SayHello_FullMethodName,
		greeterv1.GreeterService_StreamHellos_FullMethodName,
	}) {
		t.Errorf("interceptors saw %q", got)
	}
}
