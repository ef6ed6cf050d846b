// Package itest holds test fixtures shared by the interceptor packages: a
// real grpc TestService (from grpc's interop protos) served on 127.0.0.1:0,
// and a minimal transparent proxy whose messages are raw frames, shaped like
// the gateway's director. It is imported by tests only.
package itest

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Metadata keys that steer the TestService.
const (
	// PanicKey makes a handler panic with the key's value.
	PanicKey = "x-test-panic"
	// HeaderKey makes a handler send a response header "x-handler" with the
	// key's value, after the interceptors have run.
	HeaderKey = "x-test-header"
)

// Service is a grpc_testing.TestService. Every call records its context so
// tests can inspect what the handler saw.
type Service struct {
	testgrpc.UnimplementedTestServiceServer

	mu   sync.Mutex
	ctxs []context.Context
}

// Contexts returns the contexts of the calls the service has handled.
func (s *Service) Contexts() []context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]context.Context(nil), s.ctxs...)
}

// Last returns the context of the last call handled.
func (s *Service) Last() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ctxs) == 0 {
		return nil
	}
	return s.ctxs[len(s.ctxs)-1]
}

func (s *Service) enter(ctx context.Context, setHeader func(metadata.MD) error) {
	s.mu.Lock()
	s.ctxs = append(s.ctxs, ctx)
	s.mu.Unlock()
	if v := metadata.ValueFromIncomingContext(ctx, PanicKey); len(v) > 0 {
		panic(v[0])
	}
	if v := metadata.ValueFromIncomingContext(ctx, HeaderKey); len(v) > 0 {
		_ = setHeader(metadata.Pairs("x-handler", v[0]))
	}
}

// EmptyCall answers an empty message.
func (s *Service) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	s.enter(ctx, func(md metadata.MD) error { return grpc.SendHeader(ctx, md) })
	return &testpb.Empty{}, nil
}

// UnaryCall echoes the request payload, or answers the requested status.
func (s *Service) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s.enter(ctx, func(md metadata.MD) error { return grpc.SendHeader(ctx, md) })
	if st := in.GetResponseStatus(); st != nil && st.GetCode() != 0 {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return &testpb.SimpleResponse{Payload: in.GetPayload()}, nil
}

// FullDuplexCall echoes every request's payload, or answers the requested
// status when a request carries one.
func (s *Service) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	s.enter(stream.Context(), stream.SendHeader)
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if st := in.GetResponseStatus(); st != nil && st.GetCode() != 0 {
			return status.Error(codes.Code(st.GetCode()), st.GetMessage())
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: in.GetPayload()}); err != nil {
			return err
		}
	}
}

// Serve starts a grpc server with opts on 127.0.0.1:0, registering the
// services with register, and returns a client connection to it. Both are
// closed when the test ends.
func Serve(t testing.TB, register func(*grpc.Server), opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		srv.Stop()
		<-done
	})
	return cc
}

// ServeTestService serves a new Service with opts and returns it with a
// client of it.
func ServeTestService(t testing.TB, opts ...grpc.ServerOption) (*Service, testgrpc.TestServiceClient) {
	t.Helper()
	svc := &Service{}
	cc := Serve(t, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, svc) }, opts...)
	return svc, testgrpc.NewTestServiceClient(cc)
}

// Frame is a raw message as a transparent proxy sees it: the undecoded bytes
// of one gRPC message.
type Frame struct {
	b []byte
}

// Len returns the size of the frame in bytes.
func (f *Frame) Len() int { return len(f.b) }

// DecodeInto unmarshals the frame into m.
func (f *Frame) DecodeInto(m proto.Message) error { return proto.Unmarshal(f.b, m) }

// Codec marshals *Frame as its bytes and anything else as protobuf.
type Codec struct{}

// Marshal implements encoding.Codec.
func (Codec) Marshal(v any) ([]byte, error) {
	if f, ok := v.(*Frame); ok {
		return f.b, nil
	}
	return proto.Marshal(v.(proto.Message))
}

// Unmarshal implements encoding.Codec. It copies data, which grpc may reuse.
func (Codec) Unmarshal(data []byte, v any) error {
	if f, ok := v.(*Frame); ok {
		f.b = append([]byte(nil), data...)
		return nil
	}
	return proto.Unmarshal(data, v.(proto.Message))
}

// Name implements encoding.Codec.
func (Codec) Name() string { return "proto" }

var _ encoding.Codec = Codec{}

// ServeProxy starts a transparent proxy in front of backend: a grpc server
// with no services whose UnknownServiceHandler forwards every call as raw
// frames, with the incoming metadata as outgoing metadata, the way the
// gateway's director does. opts add server options (interceptors). It
// returns a client connection to the proxy.
func ServeProxy(t testing.TB, backend grpc.ClientConnInterface, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	opts = append(opts,
		grpc.ForceServerCodec(Codec{}),
		grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
			return proxy(backend, ss)
		}),
	)
	return Serve(t, func(*grpc.Server) {}, opts...)
}

func proxy(backend grpc.ClientConnInterface, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range in {
		if strings.HasPrefix(k, ":") || k == "content-type" || k == "user-agent" || strings.HasPrefix(k, "grpc-") || k == "te" {
			continue
		}
		out[k] = v
	}
	cs, err := backend.NewStream(metadata.NewOutgoingContext(ctx, out),
		&grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(Codec{}))
	if err != nil {
		return err
	}
	c2s := make(chan error, 1)
	go func() {
		for {
			f := new(Frame)
			if err := ss.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					err = cs.CloseSend()
				}
				c2s <- err
				return
			}
			if err := cs.SendMsg(f); err != nil {
				c2s <- nil // the backend's status arrives on the s2c side.
				return
			}
		}
	}()
	s2c := make(chan error, 1)
	go func() {
		hdr, err := cs.Header()
		if err != nil {
			s2c <- err
			return
		}
		if err := ss.SendHeader(hdr); err != nil {
			s2c <- err
			return
		}
		for {
			f := new(Frame)
			if err := cs.RecvMsg(f); err != nil {
				ss.SetTrailer(cs.Trailer())
				if errors.Is(err, io.EOF) {
					err = nil
				}
				s2c <- err
				return
			}
			if err := ss.SendMsg(f); err != nil {
				s2c <- err
				return
			}
		}
	}()
	for {
		select {
		case err := <-c2s:
			if err != nil {
				cancel()
				<-s2c
				return err
			}
			c2s = nil
		case err := <-s2c:
			return err
		}
	}
}

// NewFrame returns a frame holding b.
func NewFrame(b []byte) *Frame { return &Frame{b: b} }

// Bytes returns the frame's bytes.
func (f *Frame) Bytes() []byte { return f.b }
