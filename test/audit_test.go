package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/gatehouse-dev/gatehouse/audit"
	"github.com/gatehouse-dev/gatehouse/edge"
)

// accountsFile describes audittest.v1.Accounts, a service compiled into
// the test binary (registered at run time) whose request has a
// debug_redact field:
//
//	message OpenRequest { string user = 1; string password = 2 [debug_redact = true]; Card card = 3; }
//	message Card { string number = 1; string holder = 2; }
//	service Accounts { rpc Open(OpenRequest) returns (OpenRequest); }
var accountsFile = func() protoreflect.FileDescriptor {
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	msg := descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("audittest/v1/accounts.proto"),
		Package: proto.String("audittest.v1"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("OpenRequest"), Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("user"), Number: proto.Int32(1), Type: str, Label: opt, JsonName: proto.String("user")},
				{Name: proto.String("password"), Number: proto.Int32(2), Type: str, Label: opt, JsonName: proto.String("password"),
					Options: &descriptorpb.FieldOptions{DebugRedact: proto.Bool(true)}},
				{Name: proto.String("card"), Number: proto.Int32(3), Type: msg, Label: opt, TypeName: proto.String(".audittest.v1.Card"), JsonName: proto.String("card")},
			}},
			{Name: proto.String("Card"), Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("number"), Number: proto.Int32(1), Type: str, Label: opt, JsonName: proto.String("number")},
				{Name: proto.String("holder"), Number: proto.Int32(2), Type: str, Label: opt, JsonName: proto.String("holder")},
			}},
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Accounts"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name: proto.String("Open"), InputType: proto.String(".audittest.v1.OpenRequest"), OutputType: proto.String(".audittest.v1.OpenRequest"),
			}},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		panic(err)
	}
	if err := protoregistry.GlobalFiles.RegisterFile(fd); err != nil {
		panic(err)
	}
	for i := range fd.Messages().Len() {
		if err := protoregistry.GlobalTypes.RegisterMessage(dynamicpb.NewMessageType(fd.Messages().Get(i))); err != nil {
			panic(err)
		}
	}
	return fd
}()

// echoOpen is a service named name whose one method, Open, answers with its
// request, an OpenRequest of file fd decoded as a dynamic message.
func echoOpen(name string, fd protoreflect.FileDescriptor) *grpc.ServiceDesc {
	req := fd.Messages().ByName("OpenRequest")
	return &grpc.ServiceDesc{
		ServiceName: name,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Open",
			Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				m := dynamicpb.NewMessage(req)
				if err := dec(m); err != nil {
					return nil, err
				}
				return m, nil
			},
		}},
		Metadata: fd.Path(),
	}
}

// startAccounts serves audittest.v1.Accounts/Open, which echoes its request.
func startAccounts(t *testing.T) string {
	t.Helper()
	return startBackend(t, func(s *grpc.Server) {
		s.RegisterService(echoOpen("audittest.v1.Accounts", accountsFile), struct{}{})
	})
}

// readAudit verifies the audit file and returns its records.
func readAudit(t *testing.T, path string) ([]map[string]any, string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(bytes.NewReader(data)); err != nil {
		t.Fatalf("audit file does not verify: %v", err)
	}
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out, string(data)
}

// TestAuditRedaction makes a call whose request carries secrets in a
// debug_redact field and at a configured redact path: the audit record has
// the captured fields with the secrets masked, and no log has the secrets.
func TestAuditRedaction(t *testing.T) {
	addr := startAccounts(t)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	var access, proc syncBuffer
	g := startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
backends: [{name: accounts, endpoints: [%q]}]
routes: [{name: accounts, match: {service: "audittest.v1.Accounts"}, backend: accounts}]
audit:
  file: %q
  capture: [{route: accounts, fields: ["user", "password", "card", "card.number", "card.holder"]}]
  redact: ["number"]
`, addr, path), edge.WithAccessLogger(jsonLogger(&access)), edge.WithLogger(slog.New(slog.NewJSONHandler(&proc, &slog.HandlerOptions{Level: slog.LevelDebug}))))

	const password, number = "hunter2-secret", "4111111111111111"
	reqDesc := accountsFile.Messages().ByName("OpenRequest")
	req := dynamicpb.NewMessage(reqDesc)
	req.Set(reqDesc.Fields().ByName("user"), protoreflect.ValueOfString("ada"))
	req.Set(reqDesc.Fields().ByName("password"), protoreflect.ValueOfString(password))
	card := dynamicpb.NewMessage(accountsFile.Messages().ByName("Card"))
	card.Set(card.Descriptor().Fields().ByName("number"), protoreflect.ValueOfString(number))
	card.Set(card.Descriptor().Fields().ByName("holder"), protoreflect.ValueOfString("Ada L"))
	req.Set(reqDesc.Fields().ByName("card"), protoreflect.ValueOfMessage(card))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := dynamicpb.NewMessage(reqDesc)
	if err := dial(t, g.Addr("edge").String()).Invoke(ctx, "/audittest.v1.Accounts/Open", req, resp); err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(ctx); err != nil { // every record written
		t.Fatal(err)
	}
	recs, raw := readAudit(t, path)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1:\n%s", len(recs), raw)
	}
	r := recs[0]
	want := map[string]any{
		"user":        "ada",
		"password":    audit.Redacted,
		"card":        map[string]any{"number": audit.Redacted, "holder": "Ada L"},
		"card.number": audit.Redacted,
		"card.holder": "Ada L",
	}
	got, _ := json.Marshal(r["request"])
	wantJSON, _ := json.Marshal(want)
	if string(got) != string(wantJSON) {
		t.Errorf("request = %s, want %s", got, wantJSON)
	}
	if r["method"] != "/audittest.v1.Accounts/Open" || r["route"] != "accounts" || r["backend"] != "accounts" {
		t.Errorf("record = %v", r)
	}
	if d, _ := r["decision"].(map[string]any); d["allowed"] != true {
		t.Errorf("decision = %v", r["decision"])
	}
	if o, _ := r["outcome"].(map[string]any); o["code"] != "OK" {
		t.Errorf("outcome = %v", r["outcome"])
	}
	for name, log := range map[string]string{"audit": raw, "access": access.String(), "process": proc.String()} {
		if strings.Contains(log, password) || strings.Contains(log, number) {
			t.Errorf("the %s log holds a redacted value:\n%s", name, log)
		}
	}
}

// TestAuditDuringShutdown holds calls in flight while the gateway shuts
// down: each still has its record, and the file verifies.
func TestAuditDuringShutdown(t *testing.T) {
	hs, addr := startHoldBackend(t)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	g := startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
backends: [{name: hold, endpoints: [%q]}]
routes: [{name: hold, match: {service: "grpc.testing.TestService"}, backend: hold}]
audit: {file: %q, fsync: INTERVAL, fsync_interval: 50ms}
`, addr, path))
	client := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A few calls that finish before the shutdown.
	const before, held = 5, 4
	for range before {
		if _, err := client.EmptyCall(ctx, &testpb.Empty{}); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, held)
	for range held {
		go func() {
			_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 1})
			errs <- err
		}()
	}
	for range held {
		<-hs.arrived
	}
	done := make(chan error, 1)
	go func() { done <- g.Shutdown(ctx) }()
	// The listeners stop accepting; the held calls are still in flight.
	waitRefused(t, g.Addr("edge").String())
	close(hs.release)
	for range held {
		if err := <-errs; err != nil {
			t.Errorf("held call: %v", err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	recs, raw := readAudit(t, path)
	unary := 0
	for _, r := range recs {
		if r["method"] == "/grpc.testing.TestService/UnaryCall" {
			unary++
		}
	}
	if len(recs) != before+held || unary != held {
		t.Fatalf("%d records (%d UnaryCall), want %d (%d):\n%s", len(recs), unary, before+held, held, raw)
	}
}
