package transcode

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// mapKeySyntax is grpc-gateway's field[key]=value query syntax.
var mapKeySyntax = regexp.MustCompile(`^(.*)\[(.*)\]$`)

// query fills msg from query parameters with grpc-gateway's parser
// (runtime.PopulateQueryParameters), with two additions: in strict mode a
// parameter that names no field is refused, and enum fields of runtime
// schemas are set here, because grpc-gateway's parser looks enums up among
// compiled-in types only.
func (b *binding) query(msg protoreflect.Message, form url.Values) error {
	values := form
	copied := false
	for _, key := range sortedKeys(form) {
		// A string field must hold UTF-8; refuse here rather than build a
		// request that fails to marshal on its way to the backend.
		if !utf8.ValidString(key) {
			return fmt.Errorf("query parameter name %q is not valid UTF-8", key)
		}
		for _, v := range form[key] {
			if !utf8.ValidString(v) {
				return fmt.Errorf("query parameter %q is not valid UTF-8", key)
			}
		}
		fieldKey, isMap := key, false
		if m := mapKeySyntax.FindStringSubmatch(key); len(m) == 3 {
			fieldKey, isMap = m[1], true
		}
		names, fds, ok := resolveQueryKey(msg.Descriptor(), fieldKey)
		if !ok {
			if b.strict {
				return fmt.Errorf("unknown query parameter %q", key)
			}
			continue
		}
		if b.filter.HasCommonPrefix(names) {
			continue
		}
		fd := fds[len(fds)-1]
		if isMap || fd.Enum() == nil || fd.IsMap() {
			continue
		}
		if _, err := protoregistry.GlobalTypes.FindEnumByName(fd.Enum().FullName()); err == nil {
			continue // compiled in: grpc-gateway's parser knows it
		}
		if err := setEnumQuery(msg, fds, form[key]); err != nil {
			return err
		}
		if !copied {
			values = make(url.Values, len(form))
			for k, v := range form {
				values[k] = v
			}
			copied = true
		}
		delete(values, key)
	}
	return runtime.PopulateQueryParameters(msg.Interface(), values, b.filter)
}

// resolveQueryKey resolves a dotted query key by proto or JSON names, as
// grpc-gateway's parser does: only the last field may be repeated.
func resolveQueryKey(md protoreflect.MessageDescriptor, key string) ([]string, []protoreflect.FieldDescriptor, bool) {
	parts := strings.Split(key, ".")
	names := make([]string, 0, len(parts))
	fds := make([]protoreflect.FieldDescriptor, 0, len(parts))
	for i, p := range parts {
		if md == nil {
			return nil, nil, false
		}
		fd := md.Fields().ByTextName(p)
		if fd == nil {
			fd = md.Fields().ByJSONName(p)
		}
		if fd == nil {
			return nil, nil, false
		}
		if i < len(parts)-1 && (fd.Message() == nil || fd.IsList() || fd.IsMap()) {
			return nil, nil, false
		}
		names = append(names, string(fd.Name()))
		fds = append(fds, fd)
		md = fd.Message()
	}
	return names, fds, true
}

// setEnumQuery sets an enum field (or list) of a runtime schema from query
// values, by name or number, with grpc-gateway's errors.
func setEnumQuery(msg protoreflect.Message, fds []protoreflect.FieldDescriptor, vals []string) error {
	parent := msg
	for _, fd := range fds[:len(fds)-1] {
		parent = parent.Mutable(fd).Message()
	}
	fd := fds[len(fds)-1]
	parse := func(v string) (protoreflect.Value, error) {
		ev := fd.Enum().Values().ByName(protoreflect.Name(v))
		if ev == nil {
			i, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				return protoreflect.Value{}, fmt.Errorf("%q is not a valid value", v)
			}
			if ev = fd.Enum().Values().ByNumber(protoreflect.EnumNumber(i)); ev == nil {
				return protoreflect.Value{}, fmt.Errorf("%q is not a valid value", v)
			}
		}
		return protoreflect.ValueOfEnum(ev.Number()), nil
	}
	if fd.IsList() {
		l := parent.Mutable(fd).List()
		for _, v := range vals {
			pv, err := parse(v)
			if err != nil {
				return fmt.Errorf("parsing list %q: %w", fd.Name(), err)
			}
			l.Append(pv)
		}
		return nil
	}
	if len(vals) > 1 {
		return fmt.Errorf("too many values for field %q: %s", fd.Name(), strings.Join(vals, ", "))
	}
	pv, err := parse(vals[0])
	if err != nil {
		return fmt.Errorf("parsing field %q: %w", fd.Name(), err)
	}
	parent.Set(fd, pv)
	return nil
}

// refuseQuery is strict mode for a binding that reads no query parameters
// (its body takes every field, or its path does): any parameter is refused
// unless it repeats a path parameter.
func (b *binding) refuseQuery(md protoreflect.MessageDescriptor, q url.Values) error {
	for _, key := range sortedKeys(q) {
		names, _, ok := resolveQueryKey(md, key)
		if !ok {
			return fmt.Errorf("unknown query parameter %q", key)
		}
		if b.Body == "*" || !b.filter.HasCommonPrefix(names) {
			return fmt.Errorf("query parameter %q is not accepted: the body or the path sets the request", key)
		}
	}
	return nil
}
