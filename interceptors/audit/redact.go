package audit

import (
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	trail "github.com/gatehouse-dev/gatehouse/audit"
)

// redactor turns captured request fields into JSON-ready values, masking
// fields that carry debug_redact and fields at configured paths.
type redactor struct {
	paths []string
}

func newRedactor(paths []string) *redactor {
	return &redactor{paths: paths}
}

// capture returns the value at each path of m, by path. A path that does
// not name a field of m is left out; one through an unset message is nil.
func (r *redactor) capture(m protoreflect.Message, paths []string) map[string]any {
	out := make(map[string]any, len(paths))
	for _, p := range paths {
		v, ok := r.at(m, p)
		if ok {
			out[p] = v
		}
	}
	return out
}

// at returns the JSON-ready value at path in m.
func (r *redactor) at(m protoreflect.Message, path string) (any, bool) {
	segs := strings.Split(path, ".")
	prefix := ""
	for i, seg := range segs {
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(seg))
		if fd == nil {
			return nil, false
		}
		full := join(prefix, seg)
		if r.masked(fd, full) {
			return trail.Redacted, true
		}
		if i == len(segs)-1 {
			return r.field(m, fd, full), true
		}
		if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() {
			return nil, false
		}
		if !m.Has(fd) {
			return nil, true
		}
		m = m.Get(fd).Message()
		prefix = full
	}
	return nil, false
}

// masked reports whether the field fd at path must not be recorded.
func (r *redactor) masked(fd protoreflect.FieldDescriptor, path string) bool {
	if o, ok := fd.Options().(*descriptorpb.FieldOptions); ok && o.GetDebugRedact() {
		return true
	}
	for _, p := range r.paths {
		if path == p || strings.HasSuffix(path, "."+p) {
			return true
		}
	}
	return false
}

// field returns the value of fd in m.
func (r *redactor) field(m protoreflect.Message, fd protoreflect.FieldDescriptor, path string) any {
	v := m.Get(fd)
	switch {
	case fd.IsList():
		l := v.List()
		out := make([]any, l.Len())
		for i := range l.Len() {
			out[i] = r.value(fd, l.Get(i), path)
		}
		return out
	case fd.IsMap():
		out := map[string]any{}
		vd := fd.MapValue()
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			out[k.String()] = r.value(vd, mv, path)
			return true
		})
		return out
	case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
		if !m.Has(fd) {
			return nil
		}
	}
	return r.value(fd, v, path)
}

// value returns one (non-list, non-map) value of fd.
func (r *redactor) value(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return r.message(v.Message(), path)
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return int32(v.Enum())
	case protoreflect.BytesKind:
		return v.Bytes() // base64 in JSON
	}
	return v.Interface()
}

// message returns m's set fields by name, masked where they must be.
func (r *redactor) message(m protoreflect.Message, path string) map[string]any {
	out := map[string]any{}
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		full := join(path, string(fd.Name()))
		if r.masked(fd, full) {
			out[string(fd.Name())] = trail.Redacted
			return true
		}
		out[string(fd.Name())] = r.field(m, fd, full)
		return true
	})
	return out
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}
