package test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/gatehouse-dev/gatehouse/audit"
	"github.com/gatehouse-dev/gatehouse/edge"
)

// vaultFileProto describes auditdyn.v1.Vault, a service the test binary
// never registers in the global registry: the gateway can know it only from
// the backend's schema (a descriptor set file or server reflection).
//
//	message OpenRequest { string owner = 1; string pin = 2 [debug_redact = true]; Note note = 3; }
//	message Note { string text = 1; string secret = 2 [debug_redact = true]; }
//	service Vault { rpc Open(OpenRequest) returns (OpenRequest); }
func vaultFileProto() *descriptorpb.FileDescriptorProto {
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	msg := descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	redact := &descriptorpb.FieldOptions{DebugRedact: proto.Bool(true)}
	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("auditdyn/v1/vault.proto"),
		Package: proto.String("auditdyn.v1"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("OpenRequest"), Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("owner"), Number: proto.Int32(1), Type: str, Label: opt, JsonName: proto.String("owner")},
				{Name: proto.String("pin"), Number: proto.Int32(2), Type: str, Label: opt, JsonName: proto.String("pin"), Options: redact},
				{Name: proto.String("note"), Number: proto.Int32(3), Type: msg, Label: opt, TypeName: proto.String(".auditdyn.v1.Note"), JsonName: proto.String("note")},
			}},
			{Name: proto.String("Note"), Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("text"), Number: proto.Int32(1), Type: str, Label: opt, JsonName: proto.String("text")},
				{Name: proto.String("secret"), Number: proto.Int32(2), Type: str, Label: opt, JsonName: proto.String("secret"), Options: redact},
			}},
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Vault"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name: proto.String("Open"), InputType: proto.String(".auditdyn.v1.OpenRequest"), OutputType: proto.String(".auditdyn.v1.OpenRequest"),
			}},
		}},
	}
}

// vaultFile is vaultFileProto built into a descriptor, in a registry of its
// own.
func vaultFile(t *testing.T) (protoreflect.FileDescriptor, *protoregistry.Files) {
	t.Helper()
	fd, err := protodesc.NewFile(vaultFileProto(), new(protoregistry.Files))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := protoregistry.GlobalFiles.FindFileByPath(fd.Path()); err == nil {
		t.Fatal("the vault schema is in the global registry: the test would not test runtime schemas")
	}
	files := new(protoregistry.Files)
	if err := files.RegisterFile(fd); err != nil {
		t.Fatal(err)
	}
	return fd, files
}

// startVault serves auditdyn.v1.Vault/Open, which echoes its request, with
// dynamicpb messages; with reflect, it serves server reflection from the
// vault's own registry too (and nothing else, so that every service it
// lists resolves).
func startVault(t *testing.T, fd protoreflect.FileDescriptor, files *protoregistry.Files, reflect bool) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	s.RegisterService(echoOpen("auditdyn.v1.Vault", fd), struct{}{})
	if reflect {
		reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(reflection.ServerOptions{Services: s, DescriptorResolver: files}))
	}
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// TestAuditCaptureRuntimeSchema audits calls to a backend whose service the
// gateway knows only from a runtime schema (a descriptor set file, or
// server reflection), never compiled in: the configured fields are
// captured, the debug_redact ones masked, for gRPC and REST callers alike,
// and the masked values appear in no log.
//
// It needs the gateway to resolve capture types from its runtime schemas
// (auditState.useRequestTypes, called by edge.New).
func TestAuditCaptureRuntimeSchema(t *testing.T) {
	for _, source := range []string{"descriptor_set", "reflection"} {
		t.Run(source, func(t *testing.T) {
			fd, files := vaultFile(t)
			var addr, schema string
			switch source {
			case "descriptor_set":
				addr = startVault(t, fd, files, false)
				set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{protodesc.ToFileDescriptorProto(fd)}}
				b, err := proto.Marshal(set)
				if err != nil {
					t.Fatal(err)
				}
				dset := filepath.Join(t.TempDir(), "vault.pb")
				if err := os.WriteFile(dset, b, 0o600); err != nil {
					t.Fatal(err)
				}
				schema = fmt.Sprintf("{descriptor_set: %q}", dset)
			case "reflection":
				addr = startVault(t, fd, files, true)
				schema = "{reflection: {}}"
			}
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			var access, proc syncBuffer
			g := startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
backends: [{name: vault, endpoints: [%q], schema: %s}]
routes: [{name: vault, match: {service: "auditdyn.v1.Vault"}, backend: vault}]
audit:
  file: %q
  capture: [{route: vault, fields: ["owner", "pin", "note", "note.text", "note.secret"]}]
`, addr, schema, path), edge.WithAccessLogger(jsonLogger(&access)),
				edge.WithLogger(slog.New(slog.NewJSONHandler(&proc, &slog.HandlerOptions{Level: slog.LevelDebug}))))
			edgeAddr := g.Addr("edge").String()
			eventuallyWithin(t, 10*time.Second, "the vault schema loads", func() (bool, string) {
				_, ok := g.Schemas().RequestType("/auditdyn.v1.Vault/Open")
				return ok, fmt.Sprint(g.SchemaErrors())
			})

			const pin, secret = "pin-8734519", "secret-5521907"
			reqDesc := fd.Messages().ByName("OpenRequest")
			req := dynamicpb.NewMessage(reqDesc)
			req.Set(reqDesc.Fields().ByName("owner"), protoreflect.ValueOfString("ada"))
			req.Set(reqDesc.Fields().ByName("pin"), protoreflect.ValueOfString(pin))
			note := dynamicpb.NewMessage(fd.Messages().ByName("Note"))
			note.Set(note.Descriptor().Fields().ByName("text"), protoreflect.ValueOfString("hello"))
			note.Set(note.Descriptor().Fields().ByName("secret"), protoreflect.ValueOfString(secret))
			req.Set(reqDesc.Fields().ByName("note"), protoreflect.ValueOfMessage(note))

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp := dynamicpb.NewMessage(reqDesc)
			if err := dial(t, edgeAddr).Invoke(ctx, "/auditdyn.v1.Vault/Open", req, resp); err != nil {
				t.Fatal(err)
			}
			code, body, _ := httpDo(t, http.MethodPost, "http://"+edgeAddr+"/auditdyn.v1.Vault/Open",
				fmt.Sprintf(`{"owner":"ada","pin":%q,"note":{"text":"hello","secret":%q}}`, pin, secret))
			if code != http.StatusOK {
				t.Fatalf("REST call: %d %s", code, body)
			}
			if err := g.Shutdown(ctx); err != nil { // every record written
				t.Fatal(err)
			}
			recs, raw := readAudit(t, path)
			if len(recs) != 2 {
				t.Fatalf("%d records, want 2:\n%s", len(recs), raw)
			}
			want, _ := json.Marshal(map[string]any{
				"owner":       "ada",
				"pin":         audit.Redacted,
				"note":        map[string]any{"text": "hello", "secret": audit.Redacted},
				"note.text":   "hello",
				"note.secret": audit.Redacted,
			})
			for i, r := range recs {
				got, _ := json.Marshal(r["request"])
				if string(got) != string(want) {
					t.Errorf("record %d: request = %s, want %s", i+1, got, want)
				}
				if r["route"] != "vault" {
					t.Errorf("record %d: route = %v", i+1, r["route"])
				}
			}
			for name, log := range map[string]string{"audit": raw, "access": access.String(), "process": proc.String()} {
				if strings.Contains(log, pin) || strings.Contains(log, secret) {
					t.Errorf("the %s log holds a redacted value:\n%s", name, log)
				}
			}
		})
	}
}
