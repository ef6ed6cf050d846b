// Package interceptors_test checks that the interceptors work together in
// the documented order (recovery → requestid → accesslog → validate →
// router), in front of a transparent proxy whose messages are raw frames.
package interceptors_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	bufvalidate "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/gatehouse-dev/gatehouse/interceptors/accesslog"
	"github.com/gatehouse-dev/gatehouse/interceptors/internal/itest"
	"github.com/gatehouse-dev/gatehouse/interceptors/recovery"
	"github.com/gatehouse-dev/gatehouse/interceptors/requestid"
	"github.com/gatehouse-dev/gatehouse/interceptors/validate"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// checkType is what the gateway would know of FullDuplexCall's request:
//
//	message Check {
//	  bytes payload = 3 [(buf.validate.field).bytes.max_len = 16];
//	}
//
// Field 3 is StreamingOutputCallRequest.payload, read as its encoded bytes.
func checkType(t *testing.T) protoreflect.MessageType {
	t.Helper()
	opts := &descriptorpb.FieldOptions{}
	proto.SetExtension(opts, bufvalidate.E_Field, bufvalidate.FieldRules_builder{
		Bytes: bufvalidate.BytesRules_builder{MaxLen: proto.Uint64(16)}.Build(),
	}.Build())
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:       proto.String("gatehouse/test/check.proto"),
		Package:    proto.String("gatehouse.test"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"buf/validate/validate.proto"},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Check"),
			Field: []*descriptorpb.FieldDescriptorProto{{
				Name: proto.String("payload"), JsonName: proto.String("payload"), Number: proto.Int32(3),
				Type:    descriptorpb.FieldDescriptorProto_TYPE_BYTES.Enum(),
				Label:   descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
				Options: opts,
			}},
		}},
	}, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return dynamicpb.NewMessageType(fd.Messages().ByName("Check"))
}

func TestChainOverProxy(t *testing.T) {
	tests := []struct {
		name      string
		md        []string
		req       *testpb.StreamingOutputCallRequest
		wantCode  codes.Code
		wantRoute bool
	}{
		{name: "ok", md: []string{"x-request-id", "client-id-1"}, req: &testpb.StreamingOutputCallRequest{}, wantCode: codes.OK, wantRoute: true},
		{name: "backend error", req: &testpb.StreamingOutputCallRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.Aborted)}}, wantCode: codes.Aborted, wantRoute: true},
		{name: "invalid request", req: &testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: bytes.Repeat([]byte("x"), 64)}}, wantCode: codes.InvalidArgument},
		{name: "panic in director", md: []string{"x-director-panic", "1"}, req: &testpb.StreamingOutputCallRequest{}, wantCode: codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs, panics syncBuffer
			logger := slog.New(slog.NewJSONHandler(&logs, nil))
			v, err := protovalidate.New()
			if err != nil {
				t.Fatal(err)
			}
			check := checkType(t)
			types := func(method string) (protoreflect.MessageType, bool) {
				if method == "/grpc.testing.TestService/FullDuplexCall" {
					return check, true
				}
				return nil, false
			}
			router := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				if len(metadata.ValueFromIncomingContext(ss.Context(), "x-director-panic")) > 0 {
					panic("director exploded")
				}
				callinfo.From(ss.Context()).SetRoute("testing", "interop")
				return h(srv, ss)
			}
			backend := &itest.Service{}
			bcc := itest.Serve(t, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, backend) })
			cc := itest.ServeProxy(t, bcc, grpc.ChainStreamInterceptor(
				recovery.StreamServerInterceptor(recovery.WithLogger(slog.New(slog.NewJSONHandler(&panics, nil)))),
				requestid.StreamServerInterceptor(),
				accesslog.StreamServerInterceptor(logger, accesslog.WithRequestID(requestid.FromContext)),
				validate.StreamServerInterceptor(v, validate.WithRequestTypes(types)),
				router,
			))

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, tt.md...)
			s, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_ = s.Send(tt.req)
			_ = s.CloseSend()
			for err == nil {
				_, err = s.Recv()
			}
			if err == io.EOF {
				err = nil
			}
			if status.Code(err) != tt.wantCode {
				t.Fatalf("err = %v, want %v", err, tt.wantCode)
			}
			hdr, _ := s.Header()
			id := hdr.Get("x-request-id")
			if len(id) != 1 {
				t.Fatalf("x-request-id header = %q", id)
			}
			if len(tt.md) > 0 && tt.md[0] == "x-request-id" && id[0] != tt.md[1] {
				t.Errorf("request id %q, want the client's %q", id[0], tt.md[1])
			}

			if tt.wantCode == codes.Internal {
				if !strings.Contains(panics.String(), "director exploded") {
					t.Errorf("panic not logged: %s", panics.String())
				}
			}
			var line map[string]any
			if err := json.Unmarshal([]byte(logs.String()), &line); err != nil {
				t.Fatalf("access log %q: %v", logs.String(), err)
			}
			if line["request_id"] != id[0] || line["grpc.code"] != tt.wantCode.String() {
				t.Errorf("access log = %v, want request_id %s, code %v", line, id[0], tt.wantCode)
			}
			if tt.wantRoute && (line["route"] != "testing" || line["backend"] != "interop") {
				t.Errorf("access log route = %v/%v", line["route"], line["backend"])
			}
			if tt.wantCode == codes.OK || tt.wantCode == codes.Aborted {
				if got := metadata.ValueFromIncomingContext(backend.Last(), "x-request-id"); len(got) != 1 || got[0] != id[0] {
					t.Errorf("backend saw x-request-id %q, want %q", got, id[0])
				}
			}
			if tt.wantCode == codes.InvalidArgument && !strings.Contains(status.Convert(err).Message(), "payload: must be at most 16 bytes") {
				t.Errorf("message = %q", status.Convert(err).Message())
			}
		})
	}
}
