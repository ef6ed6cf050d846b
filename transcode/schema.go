package transcode

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Schema is the protos of one backend as last loaded. It is immutable.
type Schema struct {
	// Backend is the backend's name from config.
	Backend string
	// Source says where the schema came from: "descriptor_set <path>" or
	// "reflection".
	Source string
	// Files holds the backend's files and everything they import.
	Files *protoregistry.Files
	// Services are the backend's services that have methods, by name.
	Services []protoreflect.ServiceDescriptor
	// AutoMapping serves POST /pkg.Service/Method for methods without a
	// google.api.http annotation.
	AutoMapping bool
	// Digest identifies the content, so that a refresh that fetched the same
	// protos changes nothing.
	Digest [sha256.Size]byte
	// LoadedAt is when the content was loaded.
	LoadedAt time.Time

	types *dynamicpb.Types
}

// The files below are taken from the gateway's own registry rather than
// from a schema, whatever the schema holds: their Go types are compiled in,
// so that well-known types, google.api annotations and protovalidate rules
// resolve to the types their libraries know.
var sharedPrefixes = []string{"google/protobuf/", "google/api/", "google/rpc/", "buf/validate/"}

func shared(path string) bool {
	for _, p := range sharedPrefixes {
		if strings.HasPrefix(path, p) {
			if _, err := protoregistry.GlobalFiles.FindFileByPath(path); err == nil {
				return true
			}
		}
	}
	return false
}

// ReadDescriptorSet reads a FileDescriptorSet file (`buf build -o
// api.binpb`, `protoc --include_imports -o`).
func ReadDescriptorSet(path string) (*descriptorpb.FileDescriptorSet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	fds := &descriptorpb.FileDescriptorSet{}
	if err := proto.Unmarshal(data, fds); err != nil {
		return nil, fmt.Errorf("%s: not a FileDescriptorSet: %w", path, err)
	}
	return fds, nil
}

// NewSchema builds a backend's schema from its files. services names the
// services the backend serves; nil means every service defined in files.
// Imports missing from files are looked up among the protos compiled into
// the gateway (well-known types, google.api, buf.validate).
func NewSchema(backend, source string, files []*descriptorpb.FileDescriptorProto, services []string, autoMapping bool) (*Schema, error) {
	byPath := make(map[string]*descriptorpb.FileDescriptorProto, len(files))
	for _, f := range files {
		byPath[f.GetName()] = f
	}
	reg := new(protoregistry.Files)
	visiting := map[string]bool{}
	var add func(path string) error
	add = func(path string) error {
		if _, err := reg.FindFileByPath(path); err == nil {
			return nil
		}
		if visiting[path] {
			return fmt.Errorf("import cycle through %q", path)
		}
		visiting[path] = true
		fdp, ok := byPath[path]
		if !ok || shared(path) {
			fd, err := protoregistry.GlobalFiles.FindFileByPath(path)
			if err != nil {
				return fmt.Errorf("import %q is neither in the schema nor compiled into the gateway", path)
			}
			return registerWithDeps(reg, fd)
		}
		for _, dep := range fdp.GetDependency() {
			if err := add(dep); err != nil {
				return err
			}
		}
		fd, err := protodesc.NewFile(fdp, reg)
		if err != nil {
			return err
		}
		return reg.RegisterFile(fd)
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		if err := add(p); err != nil {
			return nil, err
		}
	}

	s := &Schema{Backend: backend, Source: source, Files: reg, AutoMapping: autoMapping, LoadedAt: time.Now()}
	s.types = dynamicpb.NewTypes(reg)
	if services == nil {
		for _, p := range paths {
			if shared(p) {
				continue
			}
			fd, _ := reg.FindFileByPath(p)
			for i := range fd.Services().Len() {
				services = append(services, string(fd.Services().Get(i).FullName()))
			}
		}
	}
	slices.Sort(services)
	for _, name := range slices.Compact(services) {
		if ignoredService(name) {
			continue
		}
		d, err := reg.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("service %q: not in its files", name)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("%q is not a service", name)
		}
		if sd.Methods().Len() > 0 {
			s.Services = append(s.Services, sd)
		}
	}
	s.Digest = digest(files, services, autoMapping)
	return s, nil
}

// ignoredService reports services a backend serves that the gateway answers
// for itself and never routes: reflection and health.
func ignoredService(name string) bool {
	return strings.HasPrefix(name, "grpc.reflection.") || name == "grpc.health.v1.Health"
}

func registerWithDeps(reg *protoregistry.Files, fd protoreflect.FileDescriptor) error {
	if _, err := reg.FindFileByPath(fd.Path()); err == nil {
		return nil
	}
	imps := fd.Imports()
	for i := range imps.Len() {
		if err := registerWithDeps(reg, imps.Get(i).FileDescriptor); err != nil {
			return err
		}
	}
	return reg.RegisterFile(fd)
}

func digest(files []*descriptorpb.FileDescriptorProto, services []string, autoMapping bool) [sha256.Size]byte {
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b *descriptorpb.FileDescriptorProto) int { return strings.Compare(a.GetName(), b.GetName()) })
	h := sha256.New()
	for _, f := range sorted {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(f)
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	fmt.Fprintf(h, "%q %v", services, autoMapping)
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// httpRules returns a method's google.api.http rule and its additional
// bindings, flattened; nil when it has none.
func httpRules(md protoreflect.MethodDescriptor) []*annotations.HttpRule {
	opts, ok := md.Options().(*descriptorpb.MethodOptions)
	if !ok || opts == nil || !proto.HasExtension(opts, annotations.E_Http) {
		return nil
	}
	rule, ok := proto.GetExtension(opts, annotations.E_Http).(*annotations.HttpRule)
	if !ok || rule == nil {
		return nil
	}
	out := []*annotations.HttpRule{rule}
	for _, b := range rule.GetAdditionalBindings() {
		out = append(out, b) // nested additional_bindings are not allowed
	}
	return out
}

// LoadError is a schema that failed to load. The backend's last good
// schema, if any, keeps serving.
type LoadError struct {
	// Backend names the backend.
	Backend string
	// Source is where the schema was loaded from.
	Source string
	// Err is the reason.
	Err error
}

func (e *LoadError) Error() string {
	return fmt.Sprintf("schema of backend %q (%s): %v", e.Backend, e.Source, e.Err)
}

func (e *LoadError) Unwrap() error { return e.Err }

var errNoSource = errors.New("no schema source")
