package validate_test

import (
	"sync/atomic"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	pkg "github.com/gatehouse-dev/gatehouse/interceptors/validate"
)

// rulesFile builds, at test time, without registering anything globally:
//
//	message Plain    { string a = 1; Plain child = 2; repeated Plain list = 3; map<string, Plain> m = 4; }
//	message Inner    { string s = 1 [(buf.validate.field).string.min_len = 3]; }
//	message Outer    { Plain p = 1; Inner inner = 2; }       // a rule two levels down
//	message Deep     { Outer outer = 1; }                     // three levels down
//	message MapOf    { map<string, Inner> m = 1; }            // a rule in map values
//	message ListOf   { repeated Inner items = 1; }
//	message OneofReq { oneof o { option (buf.validate.oneof).required = true; string x = 1; } }
//	message MsgCEL   { option (buf.validate.message).cel = {...}; string x = 1; }
//	message Opaque   { string x = 1 [/* an option the reader cannot resolve */]; }
func rulesFile(t *testing.T) protoreflect.FileDescriptor {
	t.Helper()
	optional := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	repeated := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	msg := descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
	field := func(name string, num int32, label *descriptorpb.FieldDescriptorProto_Label, typ *descriptorpb.FieldDescriptorProto_Type, typeName string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), JsonName: proto.String(name), Number: proto.Int32(num), Label: label, Type: typ}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	mapEntry := func(name, valueType string) *descriptorpb.DescriptorProto {
		return &descriptorpb.DescriptorProto{
			Name:    proto.String(name),
			Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
			Field: []*descriptorpb.FieldDescriptorProto{
				field("key", 1, optional, str, ""),
				field("value", 2, optional, msg, valueType),
			},
		}
	}

	minLen := &descriptorpb.FieldOptions{}
	proto.SetExtension(minLen, validate.E_Field, validate.FieldRules_builder{
		String: validate.StringRules_builder{MinLen: proto.Uint64(3)}.Build(),
	}.Build())
	inner := field("s", 1, optional, str, "")
	inner.Options = minLen

	oneofOpts := &descriptorpb.OneofOptions{}
	proto.SetExtension(oneofOpts, validate.E_Oneof, validate.OneofRules_builder{Required: proto.Bool(true)}.Build())
	oneofField := field("x", 1, optional, str, "")
	oneofField.OneofIndex = proto.Int32(0)

	celOpts := &descriptorpb.MessageOptions{}
	proto.SetExtension(celOpts, validate.E_Message, validate.MessageRules_builder{
		Cel: []*validate.Rule{validate.Rule_builder{Id: proto.String("x_set"), Message: proto.String("x must be 3 long"), Expression: proto.String("this.x.size() >= 3")}.Build()},
	}.Build())

	// Field option 99999, which nothing here defines: it stays an
	// unknown field of the options.
	opaqueOpts := &descriptorpb.FieldOptions{}
	opaqueOpts.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99999, protowire.VarintType), 1))
	opaque := field("x", 1, optional, str, "")
	opaque.Options = opaqueOpts

	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("gatehouse/test/rules.proto"),
		Package:    proto.String("gatehouse.test.rules"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"buf/validate/validate.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{
				Name: proto.String("Plain"),
				Field: []*descriptorpb.FieldDescriptorProto{
					field("a", 1, optional, str, ""),
					field("child", 2, optional, msg, ".gatehouse.test.rules.Plain"),
					field("list", 3, repeated, msg, ".gatehouse.test.rules.Plain"),
					field("m", 4, repeated, msg, ".gatehouse.test.rules.Plain.MEntry"),
				},
				NestedType: []*descriptorpb.DescriptorProto{mapEntry("MEntry", ".gatehouse.test.rules.Plain")},
			},
			{Name: proto.String("Inner"), Field: []*descriptorpb.FieldDescriptorProto{inner}},
			{Name: proto.String("Outer"), Field: []*descriptorpb.FieldDescriptorProto{
				field("p", 1, optional, msg, ".gatehouse.test.rules.Plain"),
				field("inner", 2, optional, msg, ".gatehouse.test.rules.Inner"),
			}},
			{Name: proto.String("Deep"), Field: []*descriptorpb.FieldDescriptorProto{
				field("outer", 1, optional, msg, ".gatehouse.test.rules.Outer"),
			}},
			{
				Name:       proto.String("MapOf"),
				Field:      []*descriptorpb.FieldDescriptorProto{field("m", 1, repeated, msg, ".gatehouse.test.rules.MapOf.MEntry")},
				NestedType: []*descriptorpb.DescriptorProto{mapEntry("MEntry", ".gatehouse.test.rules.Inner")},
			},
			{Name: proto.String("ListOf"), Field: []*descriptorpb.FieldDescriptorProto{
				field("items", 1, repeated, msg, ".gatehouse.test.rules.Inner"),
			}},
			{
				Name:      proto.String("OneofReq"),
				Field:     []*descriptorpb.FieldDescriptorProto{oneofField},
				OneofDecl: []*descriptorpb.OneofDescriptorProto{{Name: proto.String("o"), Options: oneofOpts}},
			},
			{Name: proto.String("MsgCEL"), Options: celOpts, Field: []*descriptorpb.FieldDescriptorProto{field("x", 1, optional, str, "")}},
			{Name: proto.String("Opaque"), Field: []*descriptorpb.FieldDescriptorProto{opaque}},
		},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestRuleFreeTypesAreNotDecoded checks that a proxied frame is decoded only
// when its type can carry a rule somewhere, and that a rule nested deep in
// the type is still enforced.
func TestRuleFreeTypesAreNotDecoded(t *testing.T) {
	fd := rulesFile(t)
	// A message whose every nested Inner.s is "x": too short wherever
	// a rule applies.
	bad := func(name string) []byte {
		md := fd.Messages().ByName(protoreflect.Name(name))
		m := dynamicpb.NewMessage(md)
		fill(m, 3)
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		msg         string
		wantDecodes int32
		wantCode    codes.Code
	}{
		{msg: "Plain", wantDecodes: 0, wantCode: codes.OK},
		{msg: "Inner", wantDecodes: 1, wantCode: codes.InvalidArgument},
		{msg: "Outer", wantDecodes: 1, wantCode: codes.InvalidArgument},
		{msg: "Deep", wantDecodes: 1, wantCode: codes.InvalidArgument},
		{msg: "MapOf", wantDecodes: 1, wantCode: codes.InvalidArgument},
		{msg: "ListOf", wantDecodes: 1, wantCode: codes.InvalidArgument},
		{msg: "OneofReq", wantDecodes: 1, wantCode: codes.InvalidArgument},
		{msg: "MsgCEL", wantDecodes: 1, wantCode: codes.InvalidArgument},
		{msg: "Opaque", wantDecodes: 1, wantCode: codes.OK}, // decoded: its options might have been rules
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			typ := dynamicpb.NewMessageType(fd.Messages().ByName(protoreflect.Name(tt.msg)))
			var decodes atomic.Int32
			ic := pkg.StreamServerInterceptor(nil, pkg.WithRequestTypes(func(string) (protoreflect.MessageType, bool) {
				return typ, true
			}))
			ss := &recvStream{frame: &decodeCounter{b: bad(tt.msg), n: &decodes}}
			err := ic(nil, ss, &grpc.StreamServerInfo{FullMethod: "/gatehouse.test.rules.S/M"}, func(_ any, s grpc.ServerStream) error {
				return s.RecvMsg(&decodeCounter{})
			})
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("code = %v (%v), want %v", got, err, tt.wantCode)
			}
			if decodes.Load() != tt.wantDecodes {
				t.Errorf("decodes = %d, want %d", decodes.Load(), tt.wantDecodes)
			}
		})
	}
}

// fill sets every string field of m to "x" and every message field (one
// entry of lists and maps) to a filled message, depth levels down.
func fill(m protoreflect.Message, depth int) {
	if depth == 0 {
		return
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		switch {
		case f.IsMap():
			v := m.Mutable(f).Map().NewValue()
			fill(v.Message(), depth-1)
			m.Mutable(f).Map().Set(protoreflect.ValueOfString("k").MapKey(), v)
		case f.IsList() && f.Message() != nil:
			l := m.Mutable(f).List()
			v := l.NewElement()
			fill(v.Message(), depth-1)
			l.Append(v)
		case f.Message() != nil:
			fill(m.Mutable(f).Message(), depth-1)
		case f.Kind() == protoreflect.StringKind:
			if f.ContainingOneof() != nil {
				continue // OneofReq: left unset, so "required" fails
			}
			m.Set(f, protoreflect.ValueOfString("x"))
		}
	}
}
