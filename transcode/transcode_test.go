package transcode_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/gatehouse-dev/gatehouse/gen/examples/library/v1"
	"github.com/gatehouse-dev/gatehouse/transcode"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// librarySet returns the library proto and its imports as a descriptor set.
func librarySet(t *testing.T) *descriptorpb.FileDescriptorSet {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		for i := range fd.Imports().Len() {
			add(fd.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	fd, err := protoregistry.GlobalFiles.FindFileByPath("examples/library/v1/library.proto")
	if err != nil {
		t.Fatal(err)
	}
	add(fd)
	return set
}

func writeSet(t *testing.T, path string, set *descriptorpb.FileDescriptorSet) {
	t.Helper()
	data, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestNewSchema(t *testing.T) {
	s, err := transcode.NewSchema("lib", "test", librarySet(t).GetFile(), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Services) != 1 || s.Services[0].FullName() != "examples.library.v1.LibraryService" {
		t.Fatalf("services = %v", s.Services)
	}
	set := transcode.NewSet([]*transcode.Schema{s})
	m, ok := set.Method("/examples.library.v1.LibraryService/UpdateBook")
	if !ok || len(m.Rules) != 1 || m.Rules[0].GetPatch() != "/v1/books/{book.id}" || m.AutoMapped {
		t.Fatalf("UpdateBook = %+v", m)
	}
	var paths []string
	for _, b := range transcode.Bindings(set) {
		paths = append(paths, b.Verb+" "+b.Path)
	}
	if len(paths) != 5 {
		t.Errorf("bindings = %v", paths)
	}
	// A file whose import is missing and not compiled in is an error.
	bad := &descriptorpb.FileDescriptorProto{Name: proto.String("x.proto"), Dependency: []string{"missing.proto"}}
	if _, err := transcode.NewSchema("lib", "test", []*descriptorpb.FileDescriptorProto{bad}, nil, true); err == nil {
		t.Error("missing import: no error")
	}
}

// TestManagerKeepsLastGood: a descriptor set that stops loading is an error
// naming the backend, and the last good schema keeps serving.
func TestManagerKeepsLastGood(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.binpb")
	writeSet(t, path, librarySet(t))
	changes := 0
	m := transcode.NewManager(nil, transcode.WithOnChange(func(*transcode.Set) { changes++ }))
	defer m.Close()
	src := []transcode.Source{{Backend: "lib", DescriptorSet: path, AutoMapping: true}}
	if err := m.Update(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Set().Method("/examples.library.v1.LibraryService/GetBook"); !ok || changes != 1 {
		t.Fatalf("after load: method known %v, changes %d", ok, changes)
	}
	// The same content again: no change.
	if err := m.Update(context.Background(), src); err != nil || changes != 1 {
		t.Fatalf("reload of the same file: %v, changes %d", err, changes)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := m.Update(context.Background(), src)
	var le *transcode.LoadError
	if !errors.As(err, &le) || le.Backend != "lib" {
		t.Fatalf("broken file: %v, want a *LoadError naming the backend", err)
	}
	if _, ok := m.Set().Method("/examples.library.v1.LibraryService/GetBook"); !ok {
		t.Error("the last good schema was dropped")
	}
	if m.Errors()["lib"] == nil {
		t.Error("Errors() does not name the backend")
	}
	// Dropping the source drops the schema.
	if err := m.Update(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if len(m.Set().Methods()) != 0 {
		t.Error("schema kept after its source was removed")
	}
}

func TestOpenAPI(t *testing.T) {
	s, err := transcode.NewSchema("lib", "test", librarySet(t).GetFile(), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	doc := transcode.OpenAPI(transcode.NewSet([]*transcode.Schema{s}), transcode.OpenAPIOptions{Title: "t", Version: "1"})
	paths := doc["paths"].(map[string]map[string]any)
	if paths["/v1/books/{book.id}"]["patch"] == nil || paths["/v1/books"]["get"] == nil {
		t.Fatalf("paths = %v", paths)
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	book := schemas["examples.library.v1.Book"].(map[string]any)["properties"].(map[string]any)
	if year := book["year"].(map[string]any); year["minimum"] != int32(1450) || year["maximum"] != int32(2100) {
		t.Errorf("year = %v, want the protovalidate bounds", year)
	}
}

// collidingSchema is a service whose bindings collide: A and B both map to
// GET /v1/{name} once their templates are reduced to OpenAPI paths, and A
// has two additional bindings; A2 is a method whose own name is the id A's
// second binding would get.
func collidingSchema(t *testing.T) *transcode.Schema {
	t.Helper()
	rule := func(get string, more ...string) *descriptorpb.MethodOptions {
		r := &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: get}}
		for _, m := range more {
			r.AdditionalBindings = append(r.AdditionalBindings, &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: m}})
		}
		o := &descriptorpb.MethodOptions{}
		proto.SetExtension(o, annotations.E_Http, r)
		return o
	}
	method := func(name string, o *descriptorpb.MethodOptions) *descriptorpb.MethodDescriptorProto {
		return &descriptorpb.MethodDescriptorProto{Name: proto.String(name), InputType: proto.String(".c.v1.Req"), OutputType: proto.String(".c.v1.Req"), Options: o}
	}
	fd := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("c/v1/c.proto"),
		Package:    proto.String("c.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/api/annotations.proto"},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Req"),
			Field: []*descriptorpb.FieldDescriptorProto{{
				Name: proto.String("name"), Number: proto.Int32(1), JsonName: proto.String("name"),
				Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
			}},
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("C"),
			Method: []*descriptorpb.MethodDescriptorProto{
				method("A", rule("/v1/{name=shelves/*}", "/v1/a/{name}", "/v1/aa/{name}")),
				method("A2", rule("/v1/a2/{name}")),
				method("B", rule("/v1/{name=users/*}")),
			},
		}},
	}
	s, err := transcode.NewSchema("c", "test", []*descriptorpb.FileDescriptorProto{fd}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOpenAPIOperationIDs: additional bindings get numbered operationIds
// (as protoc-gen-openapiv2 numbers them), all unique, and a binding that
// collapses onto another's path and verb is reported, not dropped.
func TestOpenAPIOperationIDs(t *testing.T) {
	doc := transcode.OpenAPI(transcode.NewSet([]*transcode.Schema{collidingSchema(t)}), transcode.OpenAPIOptions{Title: "t", Version: "1"})
	paths := doc["paths"].(map[string]map[string]any)
	ids := map[string]string{}
	for p, ops := range paths {
		for verb, op := range ops {
			id := op.(map[string]any)["operationId"].(string)
			if prev, dup := ids[id]; dup {
				t.Errorf("operationId %s used by %s and %s %s", id, prev, verb, p)
			}
			ids[id] = verb + " " + p
		}
	}
	for id, want := range map[string]string{
		"c.v1.C.A":  "get /v1/{name}",
		"c.v1.C.A2": "get /v1/a2/{name}", // the method A2, which came first
		"c.v1.C.A3": "get /v1/a/{name}",  // A's second binding, A2 being taken
		"c.v1.C.A4": "get /v1/aa/{name}",
	} {
		if ids[id] != want {
			t.Errorf("operationId %s is %q, want %q (all: %v)", id, ids[id], want, ids)
		}
	}
	shadowed, _ := doc["x-gatehouse-shadowed"].([]any)
	if len(shadowed) != 1 {
		t.Fatalf("x-gatehouse-shadowed = %v, want B's binding", doc["x-gatehouse-shadowed"])
	}
	sh := shadowed[0].(map[string]any)
	if sh["template"] != "/v1/{name=users/*}" || sh["shadowedBy"] != "c.v1.C.A" || sh["x-grpc-method"] != "/c.v1.C/B" {
		t.Errorf("shadowed = %v", sh)
	}
}
