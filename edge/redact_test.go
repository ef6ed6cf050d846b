package edge

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// redactSchema builds a message type with one field per redaction rule.
func redactSchema(t *testing.T) protoreflect.MessageDescriptor {
	t.Helper()
	field := func(name string, n int32, typ descriptorpb.FieldDescriptorProto_Type, redacted bool) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{
			Name:     proto.String(name),
			JsonName: proto.String(name),
			Number:   proto.Int32(n),
			Type:     typ.Enum(),
			Label:    descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
		}
		if redacted {
			f.Options = &descriptorpb.FieldOptions{DebugRedact: proto.Bool(true)}
		}
		return f
	}
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING
	headers := field("headers", 20, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, false)
	headers.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	headers.TypeName = proto.String(".redacttest.Header")
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:    proto.String("redacttest.proto"),
		Package: proto.String("redacttest"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Conf"), Field: []*descriptorpb.FieldDescriptorProto{
				field("client_secret", 1, str, false),
				field("token_file", 2, str, false),
				field("password", 3, str, false),
				field("endpoint", 4, str, false),
				field("marked", 5, str, true),
				field("marked_count", 6, descriptorpb.FieldDescriptorProto_TYPE_INT32, true),
				field("private_key", 7, str, false),
				field("tokenizer", 8, str, false),
				field("key_file", 9, str, false),
				headers,
			}},
			{Name: proto.String("Header"), Field: []*descriptorpb.FieldDescriptorProto{
				field("name", 1, str, false),
				field("value", 2, str, false),
			}},
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("Conf")
}

func TestRedact(t *testing.T) {
	md := redactSchema(t)
	m := dynamicpb.NewMessage(md)
	set := func(name, v string) {
		m.Set(md.Fields().ByName(protoreflect.Name(name)), protoreflect.ValueOfString(v))
	}
	set("client_secret", "cs")
	set("token_file", "/run/secrets/token")
	set("password", "pw")
	set("endpoint", "https://ada:pw@collector:4317/v1 and http://plain/")
	set("marked", "m")
	m.Set(md.Fields().ByName("marked_count"), protoreflect.ValueOfInt32(7))
	set("private_key", "-----BEGIN")
	set("tokenizer", "words")
	set("key_file", "/etc/tls/key.pem")
	hfd := md.Fields().ByName("headers")
	hl := m.Mutable(hfd).List()
	for _, h := range [][2]string{{"authorization", "Bearer t"}, {"x-api-key", "k"}, {"x-trace", "1"}} {
		e := hl.NewElement().Message()
		e.Set(e.Descriptor().Fields().ByName("name"), protoreflect.ValueOfString(h[0]))
		e.Set(e.Descriptor().Fields().ByName("value"), protoreflect.ValueOfString(h[1]))
		hl.Append(protoreflect.ValueOfMessage(e))
	}

	redact(m)

	want := map[string]string{
		"client_secret": redacted,
		"token_file":    "/run/secrets/token",
		"password":      redacted,
		"endpoint":      "https://ada:" + redacted + "@collector:4317/v1 and http://plain/",
		"marked":        redacted,
		"private_key":   redacted,
		"tokenizer":     "words",
		"key_file":      "/etc/tls/key.pem",
	}
	for name, w := range want {
		if got := m.Get(md.Fields().ByName(protoreflect.Name(name))).String(); got != w {
			t.Errorf("%s = %q, want %q", name, got, w)
		}
	}
	if m.Has(md.Fields().ByName("marked_count")) {
		t.Error("marked_count (debug_redact, not a string) not cleared")
	}
	for i, w := range []string{redacted, redacted, "1"} {
		e := hl.Get(i).Message()
		if got := e.Get(e.Descriptor().Fields().ByName("value")).String(); got != w {
			t.Errorf("headers[%d].value = %q, want %q", i, got, w)
		}
	}
}

func TestSecretName(t *testing.T) {
	for name, want := range map[string]bool{
		"client_secret": true, "bearer_token": true, "password": true, "api_key": true,
		"apikey": true, "credentials": true, "secret_access_key": true,
		"token_file": false, "key_file": false, "secret_name": false, "password_env": false,
		"tokenizer": false, "name": false, "key": false, "endpoint": false,
	} {
		if got := secretName(name); got != want {
			t.Errorf("secretName(%q) = %v, want %v", name, got, want)
		}
	}
}
