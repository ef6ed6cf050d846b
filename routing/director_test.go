package routing

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

const testTimeout = 10 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func payload(n int) *testpb.Payload {
	return &testpb.Payload{Type: testpb.PayloadType_COMPRESSABLE, Body: bytes.Repeat([]byte{'g'}, n)}
}

func TestCallKinds(t *testing.T) {
	client := proxiedClient(t, startBackend(t, nil))
	tests := []struct {
		name string
		call func(ctx context.Context) error
	}{{
		name: "unary",
		call: func(ctx context.Context) error {
			resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 42, Payload: payload(7)})
			if err != nil {
				return err
			}
			if got := len(resp.GetPayload().GetBody()); got != 42 {
				return errors.New("unary: wrong response size")
			}
			return nil
		},
	}, {
		name: "server streaming",
		call: func(ctx context.Context) error {
			sizes := []int32{1, 10, 1000, 100000}
			req := &testpb.StreamingOutputCallRequest{}
			for _, s := range sizes {
				req.ResponseParameters = append(req.ResponseParameters, &testpb.ResponseParameters{Size: s})
			}
			stream, err := client.StreamingOutputCall(ctx, req)
			if err != nil {
				return err
			}
			for i := 0; ; i++ {
				resp, err := stream.Recv()
				if err == io.EOF {
					if i != len(sizes) {
						return errors.New("server streaming: too few responses")
					}
					return nil
				}
				if err != nil {
					return err
				}
				if got := int32(len(resp.GetPayload().GetBody())); i >= len(sizes) || got != sizes[i] {
					return errors.New("server streaming: wrong response")
				}
			}
		},
	}, {
		name: "client streaming",
		call: func(ctx context.Context) error {
			stream, err := client.StreamingInputCall(ctx)
			if err != nil {
				return err
			}
			sum := 0
			for _, n := range []int{27182, 8, 1828, 45904} {
				sum += n
				if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: payload(n)}); err != nil {
					return err
				}
			}
			resp, err := stream.CloseAndRecv()
			if err != nil {
				return err
			}
			if int(resp.GetAggregatedPayloadSize()) != sum {
				return errors.New("client streaming: wrong aggregate")
			}
			return nil
		},
	}, {
		name: "bidi streaming",
		call: func(ctx context.Context) error {
			stream, err := client.FullDuplexCall(ctx)
			if err != nil {
				return err
			}
			for _, n := range []int32{31415, 9, 2653, 58979} {
				if err := stream.Send(&testpb.StreamingOutputCallRequest{
					ResponseParameters: []*testpb.ResponseParameters{{Size: n}},
					Payload:            payload(int(n)),
				}); err != nil {
					return err
				}
				resp, err := stream.Recv()
				if err != nil {
					return err
				}
				if int32(len(resp.GetPayload().GetBody())) != n {
					return errors.New("bidi: wrong response size")
				}
			}
			if err := stream.CloseSend(); err != nil {
				return err
			}
			if _, err := stream.Recv(); err != io.EOF {
				return errors.New("bidi: want io.EOF after CloseSend")
			}
			return nil
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(testContext(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMessageSizeLimit(t *testing.T) {
	client := proxiedClient(t, startBackend(t, nil))
	tests := []struct {
		name string
		size int
		want codes.Code
	}{
		{"3MiB passes", 3 << 20, codes.OK},
		{"5MiB refused", 5 << 20, codes.ResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.UnaryCall(testContext(t), &testpb.SimpleRequest{
				ResponseSize: int32(min(tt.size, 3<<20)),
				Payload:      payload(tt.size),
			})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("UnaryCall(%d bytes) = %v, want code %v", tt.size, err, tt.want)
			}
			if err == nil && len(resp.GetPayload().GetBody()) != 3<<20 {
				t.Fatalf("response body = %d bytes, want %d", len(resp.GetPayload().GetBody()), 3<<20)
			}
		})
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	client := proxiedClient(t, startBackend(t, nil))
	const initial, trailing = "x-grpc-test-echo-initial", "x-grpc-test-echo-trailing-bin"
	trailingValue := string([]byte{0xab, 0xab, 0xab})

	check := func(t *testing.T, header, trailer metadata.MD) {
		t.Helper()
		if got := header.Get(initial); len(got) != 1 || got[0] != "test_initial_metadata_value" {
			t.Errorf("header[%s] = %q, want the echoed value once", initial, got)
		}
		if got := trailer.Get(trailing); len(got) != 1 || got[0] != trailingValue {
			t.Errorf("trailer[%s] = %q, want the echoed value once", trailing, got)
		}
	}
	md := metadata.Pairs(initial, "test_initial_metadata_value", trailing, trailingValue)

	t.Run("unary", func(t *testing.T) {
		var header, trailer metadata.MD
		ctx := metadata.NewOutgoingContext(testContext(t), md)
		if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 1}, grpc.Header(&header), grpc.Trailer(&trailer)); err != nil {
			t.Fatal(err)
		}
		check(t, header, trailer)
	})
	t.Run("bidi", func(t *testing.T) {
		ctx := metadata.NewOutgoingContext(testContext(t), md)
		stream, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		stream.CloseSend()
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("Recv after CloseSend = %v, want io.EOF", err)
		}
		header, err := stream.Header()
		if err != nil {
			t.Fatal(err)
		}
		check(t, header, stream.Trailer())
	})
}

// statusBackend answers every UnaryCall with a fixed status, sending a header
// first, and every StreamingOutputCall with the header and the status but no
// message.
type statusBackend struct {
	testgrpc.UnimplementedTestServiceServer
	st     *status.Status
	header metadata.MD // sent before the status, unless nil
}

func (b *statusBackend) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if b.header != nil {
		if err := grpc.SendHeader(ctx, b.header); err != nil {
			return nil, err
		}
	}
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t"))
	return nil, b.st.Err()
}

func (b *statusBackend) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	if b.header != nil {
		if err := stream.SendHeader(b.header); err != nil {
			return err
		}
	}
	stream.SetTrailer(metadata.Pairs("x-trailer", "t"))
	return b.st.Err()
}

func TestStatusRoundTrip(t *testing.T) {
	withDetails, err := status.New(codes.FailedPrecondition, "bucket \"b\" is locked: ünïcode % ok").WithDetails(
		&errdetails.ErrorInfo{Reason: "LOCKED", Domain: "gatehouse.dev", Metadata: map[string]string{"bucket": "b"}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "name", Description: "empty"}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		st   *status.Status
	}{
		{"details", withDetails},
		{"code and message", status.New(codes.NotFound, "no such thing")},
		{"ok without messages", status.New(codes.OK, "")},
		{"deadline from backend", status.New(codes.DeadlineExceeded, "backend gave up")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backend := &statusBackend{st: tt.st}
			client := proxiedClient(t, startBackend(t, backend))
			ctx := testContext(t)

			// Unary; an OK unary call needs a response, so skip it.
			if tt.st.Code() != codes.OK {
				var trailer metadata.MD
				_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Trailer(&trailer))
				if got := status.Convert(err); !proto.Equal(got.Proto(), tt.st.Proto()) {
					t.Errorf("UnaryCall status = %v, want %v", got.Proto(), tt.st.Proto())
				}
				if got := trailer.Get("x-trailer"); len(got) != 1 {
					t.Errorf("trailer x-trailer = %q, want [t]", got)
				}
			}

			stream, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			if tt.st.Code() == codes.OK {
				if err != io.EOF {
					t.Fatalf("Recv = %v, want io.EOF", err)
				}
				return
			}
			if got := status.Convert(err); !proto.Equal(got.Proto(), tt.st.Proto()) {
				t.Errorf("stream status = %v, want %v", got.Proto(), tt.st.Proto())
			}
		})
	}
}

func TestZeroMessageResponseHeaders(t *testing.T) {
	tests := []struct {
		name       string
		st         *status.Status
		header     metadata.MD
		wantHeader bool
	}{
		{"ok with header", status.New(codes.OK, ""), metadata.Pairs("x-h", "v1", "x-h", "v2", "x-bin", "\x00\x01"), true},
		{"error with header", status.New(codes.Aborted, "conflict"), metadata.Pairs("x-h", "v1", "x-h", "v2", "x-bin", "\x00\x01"), true},
		{"trailers only", status.New(codes.Aborted, "conflict"), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := proxiedClient(t, startBackend(t, &statusBackend{st: tt.st, header: tt.header}))
			stream, err := client.StreamingOutputCall(testContext(t), &testpb.StreamingOutputCallRequest{})
			if err != nil {
				t.Fatal(err)
			}
			header, err := stream.Header()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); status.Code(err) != tt.st.Code() && !(tt.st.Code() == codes.OK && err == io.EOF) {
				t.Fatalf("Recv = %v, want %v", err, tt.st.Code())
			}
			if tt.wantHeader {
				for k, want := range tt.header {
					if got := header.Get(k); !equalStrings(got, want) {
						t.Errorf("header[%s] = %q, want %q", k, got, want)
					}
				}
			} else if got := header.Get("x-h"); len(got) != 0 {
				t.Errorf("header[x-h] = %q, want none", got)
			}
			if got := stream.Trailer().Get("x-trailer"); len(got) != 1 {
				t.Errorf("trailer x-trailer = %q, want [t]", got)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBackendDown(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there any more
	client := proxiedClient(t, addr)
	ctx := testContext(t)
	if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("UnaryCall = %v, want UNAVAILABLE", err)
	}
	stream, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("FullDuplexCall Recv = %v, want UNAVAILABLE", err)
	}
}

func TestResolverErrorUnchanged(t *testing.T) {
	want := status.New(codes.Unimplemented, "no route for /grpc.testing.TestService/UnaryCall")
	d := NewDirector(ResolverFunc(func(context.Context, string, metadata.MD) (Target, error) {
		return Target{}, want.Err()
	}))
	client := testgrpc.NewTestServiceClient(dial(t, startServer(t, newGatewayServer(d), nil)))
	_, err := client.UnaryCall(testContext(t), &testpb.SimpleRequest{})
	if got := status.Convert(err); !proto.Equal(got.Proto(), want.Proto()) {
		t.Fatalf("UnaryCall status = %v, want %v", got.Proto(), want.Proto())
	}
}

// blockingBackend holds every FullDuplexCall open until its context ends and
// reports that end on done, and the deadline the call arrived with (the
// zero time for none) on started.
type blockingBackend struct {
	testgrpc.UnimplementedTestServiceServer
	started chan time.Time
	done    chan error
}

func (b *blockingBackend) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	dl, _ := stream.Context().Deadline()
	b.started <- dl
	<-stream.Context().Done()
	b.done <- stream.Context().Err()
	return stream.Context().Err()
}

func TestCancellationPropagates(t *testing.T) {
	tests := []struct {
		name     string
		timeout  time.Duration // 0: the client cancels
		wantCode codes.Code
	}{
		{"client cancel", 0, codes.Canceled},
		{"client deadline", 200 * time.Millisecond, codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backend := &blockingBackend{started: make(chan time.Time, 1), done: make(chan error, 1)}
			client := proxiedClient(t, startBackend(t, backend))
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			if tt.timeout > 0 {
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			stream, err := client.FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var backendDeadline time.Time
			select {
			case backendDeadline = <-backend.started:
			case <-time.After(testTimeout):
				t.Fatal("the call never reached the backend")
			}
			// The backend's deadline is the client's, carried as a
			// relative grpc-timeout over two hops: never earlier than the
			// client's by more than rounding, and later only by the time
			// the call took to reach the backend.
			// (The client-cancel case has testContext's deadline, 10s.)
			clientDeadline, _ := ctx.Deadline()
			if backendDeadline.IsZero() {
				t.Error("the backend saw no deadline, want the client's")
			} else if d := backendDeadline.Sub(clientDeadline); d < -time.Millisecond || d > 50*time.Millisecond {
				t.Errorf("backend deadline %v after the client's, want within [-1ms, 50ms]", d)
			}
			if tt.timeout == 0 {
				cancel()
			}
			if _, err := stream.Recv(); status.Code(err) != tt.wantCode {
				t.Errorf("Recv = %v, want %v", err, tt.wantCode)
			}
			select {
			case err := <-backend.done:
				if err == nil {
					t.Error("backend context ended without an error")
				}
			case <-time.After(testTimeout):
				t.Fatal("the backend never saw the cancellation")
			}
		})
	}
}

// mdBackend records the metadata each UnaryCall arrives with.
type mdBackend struct {
	testgrpc.UnimplementedTestServiceServer
	got chan metadata.MD
}

func (b *mdBackend) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	b.got <- md
	return &testpb.SimpleResponse{}, nil
}

func TestRequestMetadataForwarding(t *testing.T) {
	backend := &mdBackend{got: make(chan metadata.MD, 1)}
	backendAddr := startBackend(t, backend)
	const stripped = "x-gatehouse-subject"
	opts := []Option{WithStripKeys(strings.ToUpper(stripped))}

	sent := metadata.Pairs(
		"x-custom", "kept",
		"x-custom-bin", "\x00\xff",
		"x-forwarded-for", "203.0.113.7",
		"keep-alive", "timeout=5",
		"proxy-connection", "keep-alive",
		"upgrade", "h2c",
		"x-gatehouse-subject", "admin", // a client must never set identity headers
	)
	tests := []struct {
		name    string
		client  testgrpc.TestServiceClient
		wantXFF string
	}{
		{"tcp peer replaces the client's word", proxiedClient(t, backendAddr, opts...), "127.0.0.1"},
		{"in-process keeps the last hop", testgrpc.NewTestServiceClient(startBufconnGateway(t, backendAddr, opts...)), "203.0.113.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := metadata.NewOutgoingContext(testContext(t), sent)
			ctx, in := callinfo.With(ctx)
			_ = in // the director sets the route on the server side's context, not this one
			if _, err := tt.client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
				t.Fatal(err)
			}
			got := <-backend.got
			if v := got.Get("x-custom"); !equalStrings(v, []string{"kept"}) {
				t.Errorf("x-custom = %q, want [kept]", v)
			}
			if v := got.Get("x-custom-bin"); !equalStrings(v, []string{"\x00\xff"}) {
				t.Errorf("x-custom-bin = %q, want it unchanged", v)
			}
			if v := got.Get("x-forwarded-for"); !equalStrings(v, []string{tt.wantXFF}) {
				t.Errorf("x-forwarded-for = %q, want [%s]", v, tt.wantXFF)
			}
			for _, k := range []string{"keep-alive", "proxy-connection", "upgrade", stripped} {
				if v := got.Get(k); len(v) != 0 {
					t.Errorf("%s = %q reached the backend", k, v)
				}
			}
			// The backend's user-agent is the gateway's, not the client's.
			if ua := got.Get("user-agent"); len(ua) != 1 {
				t.Errorf("user-agent = %q, want exactly one", ua)
			}
		})
	}
}

func TestCallInfoRoute(t *testing.T) {
	backendAddr := startBackend(t, nil)
	d := NewDirector(staticResolver(dial(t, backendAddr)))
	got := make(chan [2]string, 1)
	record := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, in := callinfo.With(ss.Context())
		err := handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
		route, backend := in.Route()
		got <- [2]string{route, backend}
		return err
	}
	s := newGatewayServer(d, grpc.StreamInterceptor(record))
	client := testgrpc.NewTestServiceClient(dial(t, startServer(t, s, nil)))
	if _, err := client.EmptyCall(testContext(t), &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r != [2]string{"all", "backend"} {
		t.Fatalf("callinfo route = %q, want [all backend]", r)
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// earlyBackend answers StreamingInputCall after the first message, without
// reading the rest of the client's stream.
type earlyBackend struct {
	testgrpc.UnimplementedTestServiceServer
}

func (earlyBackend) StreamingInputCall(stream testgrpc.TestService_StreamingInputCallServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: 1})
}

// TestBackendEndsWhileClientSends checks that a backend that ends a call
// while the client is still sending ends it for the client too, and that
// the request pump does not outlive the call (goleak in TestMain).
func TestBackendEndsWhileClientSends(t *testing.T) {
	client := proxiedClient(t, startBackend(t, earlyBackend{}))
	ctx := testContext(t)
	stream, err := client.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: payload(1)}); err != nil {
		t.Fatal(err)
	}
	// Keep sending until the end of the call reaches the client.
	for i := 0; i < 1000; i++ {
		if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: payload(1)}); err != nil {
			break
		}
	}
	resp := new(testpb.StreamingInputCallResponse)
	if err := stream.RecvMsg(resp); err != nil {
		t.Fatalf("RecvMsg = %v, want the backend's response", err)
	}
	if resp.GetAggregatedPayloadSize() != 1 {
		t.Fatalf("response = %v, want aggregated size 1", resp)
	}
}

// slowFirstBackend sends its headers, waits, then sends one message.
type slowFirstBackend struct {
	testgrpc.UnimplementedTestServiceServer
	wait time.Duration
}

func (b slowFirstBackend) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	if err := stream.SendHeader(metadata.Pairs("x-early", "yes")); err != nil {
		return err
	}
	time.Sleep(b.wait)
	return stream.Send(&testpb.StreamingOutputCallResponse{Payload: payload(3)})
}

// The director holds a backend's headers back for the first message to
// carry them (one write), but a client whose stream sends headers and then
// nothing for a while still gets the headers long before the message.
func TestHeadersBeforeASlowFirstMessage(t *testing.T) {
	const wait = 2 * time.Second
	client := proxiedClient(t, startBackend(t, slowFirstBackend{wait: wait}))
	start := time.Now()
	stream, err := client.StreamingOutputCall(testContext(t), &testpb.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	header, err := stream.Header()
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > wait/2 {
		t.Errorf("headers took %v, want them well before the first message (%v)", took, wait)
	}
	if got := header.Get("x-early"); len(got) != 1 || got[0] != "yes" {
		t.Errorf("header x-early = %q", got)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("Recv = %v, want EOF", err)
	}
}

// hedgeBackend runs UnaryCall attempts as the test says: the n-th attempt
// (from 1) calls behave(ctx, n). It reports each attempt's arrival and how
// its context ended.
type hedgeBackend struct {
	testgrpc.UnimplementedTestServiceServer
	behave  func(ctx context.Context, n int32) (string, error)
	n       atomic.Int32
	arrived chan int32
	ended   chan error // ctx.Err() of each attempt once it returns
}

func (b *hedgeBackend) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	n := b.n.Add(1)
	b.arrived <- n
	body, err := b.behave(ctx, n)
	b.ended <- ctx.Err()
	if err != nil {
		return nil, err
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte(body)}}, nil
}

// TestHedgingManualClock drives the hedge delay with a manual clock: no
// second attempt before the delay has passed on the clock, one once it has
// (or at once when the first fails with a retryable code); the first
// answer wins and the other attempt is cancelled.
func TestHedgingManualClock(t *testing.T) {
	const delay = 50 * time.Millisecond
	release := make(chan struct{}) // lets attempt 1 of "first answers after the hedge" answer
	hang := func(ctx context.Context) (string, error) { <-ctx.Done(); return "", ctx.Err() }
	tests := []struct {
		name   string
		behave func(ctx context.Context, n int32) (string, error)
		// drive moves the clock (and the backend) once attempt 1 is in.
		drive     func(t *testing.T, c *manualClock, b *hedgeBackend)
		want      string // the answer the client gets
		attempts  int32
		cancelled bool // the loser saw its context cancelled
	}{
		{
			name: "first answers before the delay: no hedge",
			behave: func(context.Context, int32) (string, error) {
				return "1", nil
			},
			want: "1", attempts: 1,
		},
		{
			name: "hedge after the delay: the second answers first",
			behave: func(ctx context.Context, n int32) (string, error) {
				if n == 1 {
					return hang(ctx)
				}
				return "2", nil
			},
			drive: func(t *testing.T, c *manualClock, b *hedgeBackend) {
				waitLive(t, c, 1)
				c.advance(delay - time.Millisecond)
				if c.live() != 1 {
					t.Fatal("the hedge fired before its delay")
				}
				c.advance(time.Millisecond)
			},
			want: "2", attempts: 2, cancelled: true,
		},
		{
			name: "hedge after the delay: the first answers first",
			behave: func(ctx context.Context, n int32) (string, error) {
				if n == 1 {
					<-release
					return "1", nil
				}
				return hang(ctx)
			},
			drive: func(t *testing.T, c *manualClock, b *hedgeBackend) {
				waitLive(t, c, 1)
				c.advance(delay)
				select {
				case <-b.arrived: // the hedge is in: let the first answer
				case <-time.After(testTimeout):
					t.Fatal("no hedge after the delay")
				}
				close(release)
			},
			want: "1", attempts: 2, cancelled: true,
		},
		{
			name: "first fails retryable: the second at once",
			behave: func(_ context.Context, n int32) (string, error) {
				if n == 1 {
					return "", status.Error(codes.Unavailable, "first fails")
				}
				return "2", nil
			},
			want: "2", attempts: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &hedgeBackend{behave: tt.behave, arrived: make(chan int32, 2), ended: make(chan error, 2)}
			conn := dial(t, startBackend(t, b))
			route := &configv1.Route{Retry: &configv1.Retry{Attempts: 2, HedgeDelay: durationpb.New(delay)}}
			c := &manualClock{now: time.Unix(1e9, 0)}
			d := NewDirector(ResolverFunc(func(context.Context, string, metadata.MD) (Target, error) {
				return Target{Route: "hedged", Backend: "b", Conn: conn, Config: route}, nil
			}), WithClock(c))
			client := testgrpc.NewTestServiceClient(dial(t, startServer(t, newGatewayServer(d), nil)))

			type result struct {
				body string
				err  error
			}
			res := make(chan result, 1)
			go func() {
				resp, err := client.UnaryCall(testContext(t), &testpb.SimpleRequest{})
				res <- result{string(resp.GetPayload().GetBody()), err}
			}()
			select {
			case <-b.arrived:
			case <-time.After(testTimeout):
				t.Fatal("the first attempt never arrived")
			}
			if tt.drive != nil {
				tt.drive(t, c, b)
			}
			r := <-res
			if r.err != nil || r.body != tt.want {
				t.Fatalf("hedged call = %q, %v; want %q", r.body, r.err, tt.want)
			}
			// Every attempt has ended (the loser cancelled) when the
			// handler returns: wait for the backend to report them all.
			cancelled := false
			for range b.n.Load() {
				select {
				case err := <-b.ended:
					cancelled = cancelled || errors.Is(err, context.Canceled)
				case <-time.After(testTimeout):
					t.Fatal("an attempt never ended: the loser was not cancelled")
				}
			}
			if n := b.n.Load(); n != tt.attempts {
				t.Errorf("backend got %d attempts, want %d", n, tt.attempts)
			}
			if cancelled != tt.cancelled {
				t.Errorf("loser cancelled = %v, want %v", cancelled, tt.cancelled)
			}
			if n := c.live(); n != 0 {
				t.Errorf("%d hedge timers left running after the call", n)
			}
			c.advance(time.Hour) // a stopped timer starts nothing
			if n := b.n.Load(); n != tt.attempts {
				t.Errorf("backend got %d attempts after the call, want %d", n, tt.attempts)
			}
		})
	}
}

// waitLive waits until c has n live timers: the director arms its hedge
// timer after the first attempt has started.
func waitLive(t *testing.T, c *manualClock, n int) {
	t.Helper()
	for deadline := time.Now().Add(testTimeout); c.live() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d live timers, want %d", c.live(), n)
		}
	}
}
