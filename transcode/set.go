package transcode

import (
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Method is one method of a loaded schema, with what transcoding needs.
type Method struct {
	// Backend is the backend whose schema defines the method.
	Backend string
	// FullMethod is "/pkg.Service/Method".
	FullMethod string
	// Desc describes the method.
	Desc protoreflect.MethodDescriptor
	// In and Out are the request and response types (dynamicpb).
	In, Out protoreflect.MessageType
	// Rules are the method's google.api.http rule and its additional
	// bindings; nil when it has none.
	Rules []*annotations.HttpRule
	// AutoMapped is true when the method has no rule and its backend maps
	// it to POST /pkg.Service/Method.
	AutoMapped bool
}

// Set is every backend's schema at one moment, merged: the view that REST
// transcoding, validation, reflection and OpenAPI take. It is immutable; a
// new Set replaces it when a schema changes. When two backends define the
// same service, the one listed first in config wins.
type Set struct {
	schemas []*Schema // in config order
	methods map[string]*Method
	order   []*Method // in schema, service and method order
}

// NewSet merges schemas, listed in config order.
func NewSet(schemas []*Schema) *Set {
	s := &Set{schemas: schemas, methods: map[string]*Method{}}
	for _, sc := range schemas {
		for _, sd := range sc.Services {
			ms := sd.Methods()
			for i := range ms.Len() {
				md := ms.Get(i)
				full := "/" + string(sd.FullName()) + "/" + string(md.Name())
				if _, dup := s.methods[full]; dup {
					continue
				}
				m := &Method{
					Backend:    sc.Backend,
					FullMethod: full,
					Desc:       md,
					In:         dynamicpb.NewMessageType(md.Input()),
					Out:        dynamicpb.NewMessageType(md.Output()),
					Rules:      httpRules(md),
				}
				m.AutoMapped = m.Rules == nil && sc.AutoMapping
				s.methods[full] = m
				s.order = append(s.order, m)
			}
		}
	}
	return s
}

// Schemas returns the schemas, in config order.
func (s *Set) Schemas() []*Schema {
	if s == nil {
		return nil
	}
	return s.schemas
}

// Schema returns the schema of the named backend.
func (s *Set) Schema(backend string) (*Schema, bool) {
	for _, sc := range s.Schemas() {
		if sc.Backend == backend {
			return sc, true
		}
	}
	return nil, false
}

// Methods returns every method, in a stable order.
func (s *Set) Methods() []*Method {
	if s == nil {
		return nil
	}
	return s.order
}

// Method returns the method "/pkg.Service/Method" when a schema defines it.
func (s *Set) Method(fullMethod string) (*Method, bool) {
	if s == nil {
		return nil, false
	}
	m, ok := s.methods[fullMethod]
	return m, ok
}

// RequestType returns the request type of a method a schema defines. The
// type is the same from call to call for one Set.
func (s *Set) RequestType(fullMethod string) (protoreflect.MessageType, bool) {
	m, ok := s.Method(fullMethod)
	if !ok {
		return nil, false
	}
	return m.In, true
}

// Services returns the names of every service a schema defines, with the
// file that defines it.
func (s *Set) Services() map[string]protoreflect.FileDescriptor {
	out := map[string]protoreflect.FileDescriptor{}
	for _, sc := range s.Schemas() {
		for _, sd := range sc.Services {
			if _, dup := out[string(sd.FullName())]; !dup {
				out[string(sd.FullName())] = sd.ParentFile()
			}
		}
	}
	return out
}

// FindFileByPath looks a file up in the schemas, in config order.
func (s *Set) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	for _, sc := range s.Schemas() {
		if fd, err := sc.Files.FindFileByPath(path); err == nil {
			return fd, nil
		}
	}
	return nil, protoregistry.NotFound
}

// FindDescriptorByName looks a descriptor up in the schemas, in config
// order.
func (s *Set) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	for _, sc := range s.Schemas() {
		if d, err := sc.Files.FindDescriptorByName(name); err == nil {
			return d, nil
		}
	}
	return nil, protoregistry.NotFound
}

// Types resolves message, enum and extension types: the gateway's compiled-in
// types first, then the schemas' (as dynamicpb). protojson uses it for
// google.protobuf.Any.
func (s *Set) Types() *Types { return &Types{set: s} }

// Types is a type resolver over a Set and the compiled-in types.
type Types struct{ set *Set }

var (
	_ protoregistry.MessageTypeResolver   = (*Types)(nil)
	_ protoregistry.ExtensionTypeResolver = (*Types)(nil)
)

// FindMessageByName implements protoregistry.MessageTypeResolver.
func (t *Types) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(name); err == nil {
		return mt, nil
	}
	for _, sc := range t.set.Schemas() {
		if mt, err := sc.types.FindMessageByName(name); err == nil {
			return mt, nil
		}
	}
	return nil, protoregistry.NotFound
}

// FindMessageByURL implements protoregistry.MessageTypeResolver.
func (t *Types) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	name := url
	if i := strings.LastIndexByte(url, '/'); i >= 0 {
		name = url[i+1:]
	}
	return t.FindMessageByName(protoreflect.FullName(name))
}

// FindExtensionByName implements protoregistry.ExtensionTypeResolver.
func (t *Types) FindExtensionByName(field protoreflect.FullName) (protoreflect.ExtensionType, error) {
	if xt, err := protoregistry.GlobalTypes.FindExtensionByName(field); err == nil {
		return xt, nil
	}
	for _, sc := range t.set.Schemas() {
		if xt, err := sc.types.FindExtensionByName(field); err == nil {
			return xt, nil
		}
	}
	return nil, protoregistry.NotFound
}

// FindExtensionByNumber implements protoregistry.ExtensionTypeResolver.
func (t *Types) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	if xt, err := protoregistry.GlobalTypes.FindExtensionByNumber(message, field); err == nil {
		return xt, nil
	}
	for _, sc := range t.set.Schemas() {
		if xt, err := sc.types.FindExtensionByNumber(message, field); err == nil {
			return xt, nil
		}
	}
	return nil, protoregistry.NotFound
}

// findEnum resolves an enum for query and path parameters: grpc-gateway's
// parser looks enums up among compiled-in types only.
func enumValues(ed protoreflect.EnumDescriptor) map[string]int32 {
	vals := ed.Values()
	m := make(map[string]int32, vals.Len())
	for i := range vals.Len() {
		m[string(vals.Get(i).Name())] = int32(vals.Get(i).Number())
	}
	return m
}
