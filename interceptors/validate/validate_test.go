package validate_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/gatehouse-dev/gatehouse/interceptors/internal/itest"
	pkg "github.com/gatehouse-dev/gatehouse/interceptors/validate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echoRequestType builds, at test time, the type of
//
//	package gatehouse.test;
//	message EchoRequest {
//	  string name = 1 [(buf.validate.field).string.min_len = 3];
//	  int32 count = 2 [(buf.validate.field).int32 = {gte: 0, lte: 10}];
//	}
//
// without registering it anywhere global.
func echoRequestType(t testing.TB) protoreflect.MessageType {
	t.Helper()
	typ, err := newEchoRequestType()
	if err != nil {
		t.Fatal(err)
	}
	return typ
}

func newEchoRequestType() (protoreflect.MessageType, error) {
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, rules *validate.FieldRules) *descriptorpb.FieldDescriptorProto {
		opts := &descriptorpb.FieldOptions{}
		proto.SetExtension(opts, validate.E_Field, rules)
		return &descriptorpb.FieldDescriptorProto{
			Name:     proto.String(name),
			JsonName: proto.String(name),
			Number:   proto.Int32(num),
			Type:     typ.Enum(),
			Label:    descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
			Options:  opts,
		}
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("gatehouse/test/echo.proto"),
		Package:    proto.String("gatehouse.test"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"buf/validate/validate.proto"},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("EchoRequest"),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("name", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, validate.FieldRules_builder{
					String: validate.StringRules_builder{MinLen: proto.Uint64(3)}.Build(),
				}.Build()),
				field("count", 2, descriptorpb.FieldDescriptorProto_TYPE_INT32, validate.FieldRules_builder{
					Int32: validate.Int32Rules_builder{Gte: proto.Int32(0), Lte: proto.Int32(10)}.Build(),
				}.Build()),
			},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		return nil, err
	}
	return dynamicpb.NewMessageType(fd.Messages().ByName("EchoRequest")), nil
}

const (
	service   = "gatehouse.test.Echo"
	unaryM    = "/" + service + "/Unary"
	bidiM     = "/" + service + "/Bidi"
	uncheckM  = "/" + service + "/Unchecked" // same handler, type unknown to the gateway
	uncheckSM = "/" + service + "/UncheckedBidi"
)

// registerEcho registers a service of typ-typed requests that echoes them.
// Its handlers decode into dynamicpb messages, so the interceptors see
// proto.Message requests, like the gateway's own services.
func registerEcho(s *grpc.Server, typ protoreflect.MessageType) {
	unary := func(name string) grpc.MethodDesc {
		return grpc.MethodDesc{
			MethodName: name,
			Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
				in := typ.New().Interface()
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(_ context.Context, req any) (any, error) { return req, nil }
				if ic == nil {
					return h(ctx, in)
				}
				return ic(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/" + service + "/" + name}, h)
			},
		}
	}
	bidi := func(name string) grpc.StreamDesc {
		return grpc.StreamDesc{
			StreamName:    name,
			ServerStreams: true,
			ClientStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				for {
					in := typ.New().Interface()
					if err := ss.RecvMsg(in); errors.Is(err, io.EOF) {
						return nil
					} else if err != nil {
						return err
					}
					if err := ss.SendMsg(in); err != nil {
						return err
					}
				}
			},
		}
	}
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: service,
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{unary("Unary"), unary("Unchecked")},
		Streams:     []grpc.StreamDesc{bidi("Bidi"), bidi("UncheckedBidi")},
	}, struct{}{})
}

func TestValidate(t *testing.T) {
	typ := echoRequestType(t)
	msg := func(name string, count int32) proto.Message {
		m := typ.New()
		m.Set(typ.Descriptor().Fields().ByName("name"), protoreflect.ValueOfString(name))
		m.Set(typ.Descriptor().Fields().ByName("count"), protoreflect.ValueOfInt32(count))
		return m.Interface()
	}
	marshal := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	known := func(method string) (protoreflect.MessageType, bool) {
		if method == unaryM || method == bidiM {
			return typ, true
		}
		return nil, false
	}

	type violation struct{ field, desc string }
	tests := []struct {
		name     string
		method   string
		stream   bool
		req      []byte      // a marshalled request, or raw garbage
		wantCode codes.Code  // through the proxy, on raw frames
		ownCode  codes.Code  // on the service's own server, on proto.Message
		wantMsg  []string    // substrings of the status message
		wantBR   []violation // the BadRequest detail
	}{
		{name: "valid", method: unaryM, req: marshal(msg("alice", 3)), wantCode: codes.OK, ownCode: codes.OK},
		{
			name: "one violation", method: unaryM, req: marshal(msg("al", 3)),
			wantCode: codes.InvalidArgument, ownCode: codes.InvalidArgument,
			wantMsg: []string{"name: must be at least 3 characters"},
			wantBR:  []violation{{"name", "must be at least 3 characters"}},
		},
		{
			name: "two violations", method: unaryM, req: marshal(msg("", 11)),
			wantCode: codes.InvalidArgument, ownCode: codes.InvalidArgument,
			wantMsg: []string{"name: ", "count: must be greater than or equal to 0 and less than or equal to 10"},
			wantBR: []violation{
				{"name", "must be at least 3 characters"},
				{"count", "must be greater than or equal to 0 and less than or equal to 10"},
			},
		},
		{name: "garbage", method: unaryM, req: []byte{0xff, 0xff, 0xff}, wantCode: codes.InvalidArgument, ownCode: codes.Internal},
		{name: "unknown method passes", method: uncheckM, req: marshal(msg("", 99)), wantCode: codes.OK, ownCode: codes.InvalidArgument},
		{name: "stream valid", method: bidiM, stream: true, req: marshal(msg("bob", 0)), wantCode: codes.OK, ownCode: codes.OK},
		{
			name: "stream violation", method: bidiM, stream: true, req: marshal(msg("bo", 0)),
			wantCode: codes.InvalidArgument, ownCode: codes.InvalidArgument,
			wantMsg: []string{"name: must be at least 3 characters"},
			wantBR:  []violation{{"name", "must be at least 3 characters"}},
		},
		{name: "stream garbage", method: bidiM, stream: true, req: []byte{0x0a, 0x05, 'a'}, wantCode: codes.InvalidArgument, ownCode: codes.Internal},
		{name: "stream unknown method passes", method: uncheckSM, stream: true, req: marshal(msg("", -1)), wantCode: codes.OK, ownCode: codes.InvalidArgument},
	}

	servers := []struct {
		name string
		// proxied: the interceptor runs on a transparent proxy, whose
		// messages are raw frames; else on the service's own server, whose
		// messages are proto.Message.
		proxied bool
	}{{name: "own service"}, {name: "proxied", proxied: true}}

	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			v, err := protovalidate.New()
			if err != nil {
				t.Fatal(err)
			}
			opts := []grpc.ServerOption{
				grpc.UnaryInterceptor(pkg.UnaryServerInterceptor(v, pkg.WithRequestTypes(known))),
				grpc.StreamInterceptor(pkg.StreamServerInterceptor(v, pkg.WithRequestTypes(known))),
			}
			var cc *grpc.ClientConn
			if srv.proxied {
				backend := itest.Serve(t, func(s *grpc.Server) { registerEcho(s, typ) })
				cc = itest.ServeProxy(t, backend, opts...)
			} else {
				cc = itest.Serve(t, func(s *grpc.Server) { registerEcho(s, typ) }, opts...)
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					want := tt.wantCode
					if !srv.proxied {
						// The own service's codec rejects garbage before any
						// interceptor runs (Internal), and every
						// proto.Message is validated, whatever the method.
						want = tt.ownCode
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					var (
						got []byte
						err error
					)
					if tt.stream {
						got, err = bidi(ctx, cc, tt.method, tt.req)
					} else {
						out := new(itest.Frame)
						err = cc.Invoke(ctx, tt.method, itest.NewFrame(tt.req), out, grpc.ForceCodec(itest.Codec{}))
						got = out.Bytes()
					}
					st := status.Convert(err)
					if st.Code() != want {
						t.Fatalf("code = %v (%v), want %v", st.Code(), err, want)
					}
					if want == codes.OK {
						g, w := typ.New().Interface(), typ.New().Interface()
						if err := proto.Unmarshal(got, g); err != nil {
							t.Fatal(err)
						}
						if err := proto.Unmarshal(tt.req, w); err != nil {
							t.Fatal(err)
						}
						if !proto.Equal(g, w) {
							t.Errorf("echo = %v, want %v", g, w)
						}
						return
					}
					if want != codes.InvalidArgument {
						return
					}
					for _, s := range tt.wantMsg {
						if !strings.Contains(st.Message(), s) {
							t.Errorf("message %q does not contain %q", st.Message(), s)
						}
					}
					if tt.wantBR == nil {
						return
					}
					var br *errdetails.BadRequest
					for _, d := range st.Details() {
						if b, ok := d.(*errdetails.BadRequest); ok {
							br = b
						}
					}
					if br == nil {
						t.Fatalf("no BadRequest detail in %v", st.Details())
					}
					var gotBR []violation
					for _, fv := range br.GetFieldViolations() {
						gotBR = append(gotBR, violation{fv.GetField(), fv.GetDescription()})
					}
					if len(gotBR) != len(tt.wantBR) {
						t.Fatalf("violations = %v, want %v", gotBR, tt.wantBR)
					}
					for i := range gotBR {
						if gotBR[i] != tt.wantBR[i] {
							t.Errorf("violation %d = %v, want %v", i, gotBR[i], tt.wantBR[i])
						}
					}
				})
			}
		})
	}
}

// bidi sends req on a new stream of method and returns the first reply.
func bidi(ctx context.Context, cc *grpc.ClientConn, method string, req []byte) ([]byte, error) {
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(itest.Codec{}))
	if err != nil {
		return nil, err
	}
	if err := s.SendMsg(itest.NewFrame(req)); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	out := new(itest.Frame)
	if err := s.RecvMsg(out); err != nil {
		return nil, err
	}
	b := out.Bytes()
	if err := s.RecvMsg(new(itest.Frame)); !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

// decodeCounter is a raw frame that counts its decodes.
type decodeCounter struct {
	b []byte
	n *atomic.Int32
}

func (d *decodeCounter) DecodeInto(m proto.Message) error {
	d.n.Add(1)
	return proto.Unmarshal(d.b, m)
}

// recvStream delivers one decodeCounter.
type recvStream struct {
	grpc.ServerStream
	frame *decodeCounter
}

func (s *recvStream) RecvMsg(m any) error {
	*m.(*decodeCounter) = *s.frame
	return nil
}

// TestLookupAndDecodeCost checks that lookup runs once per call and that
// frames of unknown methods are never decoded. It drives the interceptor
// directly, to count.
func TestLookupAndDecodeCost(t *testing.T) {
	typ := echoRequestType(t)
	valid, _ := proto.Marshal(func() proto.Message {
		m := typ.New()
		m.Set(typ.Descriptor().Fields().ByName("name"), protoreflect.ValueOfString("alice"))
		return m.Interface()
	}())
	tests := []struct {
		method      string
		wantDecodes int32
	}{
		{method: bidiM, wantDecodes: 3},
		{method: uncheckSM, wantDecodes: 0},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			var lookups, decodes atomic.Int32
			ic := pkg.StreamServerInterceptor(nil, pkg.WithRequestTypes(func(m string) (protoreflect.MessageType, bool) {
				lookups.Add(1)
				return typ, m == bidiM
			}))
			ss := &recvStream{frame: &decodeCounter{b: valid, n: &decodes}}
			err := ic(nil, ss, &grpc.StreamServerInfo{FullMethod: tt.method}, func(_ any, s grpc.ServerStream) error {
				for range 3 {
					if err := s.RecvMsg(&decodeCounter{}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if lookups.Load() != 1 {
				t.Errorf("lookups = %d, want 1", lookups.Load())
			}
			if decodes.Load() != tt.wantDecodes {
				t.Errorf("decodes = %d, want %d", decodes.Load(), tt.wantDecodes)
			}
		})
	}
}

// TestMaxViolations checks that a request with many bad items reports at
// most MaxViolations of them.
func TestMaxViolations(t *testing.T) {
	// A list of strings whose items must be at least 3 long.
	opts := &descriptorpb.FieldOptions{}
	proto.SetExtension(opts, validate.E_Field, validate.FieldRules_builder{
		Repeated: validate.RepeatedRules_builder{
			Items: validate.FieldRules_builder{String: validate.StringRules_builder{MinLen: proto.Uint64(3)}.Build()}.Build(),
		}.Build(),
	}.Build())
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:       proto.String("gatehouse/test/list.proto"),
		Package:    proto.String("gatehouse.test"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"buf/validate/validate.proto"},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("List"),
			Field: []*descriptorpb.FieldDescriptorProto{{
				Name: proto.String("items"), JsonName: proto.String("items"), Number: proto.Int32(1),
				Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Label: descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum(),
				Options: opts,
			}},
		}},
	}, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	typ := dynamicpb.NewMessageType(fd.Messages().ByName("List"))
	m := typ.New()
	list := m.Mutable(typ.Descriptor().Fields().ByName("items")).List()
	for range pkg.MaxViolations + 5 {
		list.Append(protoreflect.ValueOfString("x"))
	}
	ic := pkg.UnaryServerInterceptor(nil)
	_, err = ic(context.Background(), m.Interface(), &grpc.UnaryServerInfo{FullMethod: "/s/m"}, func(context.Context, any) (any, error) {
		t.Fatal("handler called")
		return nil, nil
	})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("code = %v", st.Code())
	}
	if !strings.Contains(st.Message(), "items[19]: ") || strings.Contains(st.Message(), "items[20]") || !strings.HasSuffix(st.Message(), "and 5 more") {
		t.Errorf("message = %q", st.Message())
	}
	if n := len(st.Details()[0].(*errdetails.BadRequest).GetFieldViolations()); n != pkg.MaxViolations {
		t.Errorf("BadRequest has %d violations, want %d", n, pkg.MaxViolations)
	}
}

// TestNonProtoPassesUnary checks that requests that are neither
// proto.Message nor Decoder pass.
func TestNonProtoPasses(t *testing.T) {
	ic := pkg.UnaryServerInterceptor(nil)
	resp, err := ic(context.Background(), "not a message", &grpc.UnaryServerInfo{FullMethod: "/s/m"}, func(_ context.Context, req any) (any, error) { return req, nil })
	if err != nil || resp != "not a message" {
		t.Fatalf("got %v, %v", resp, err)
	}
}
