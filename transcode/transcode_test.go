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
