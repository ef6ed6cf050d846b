package config

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// walker checks a decoded JSON value against a message descriptor before
// protojson sees it, because protojson's errors name no field path. It
// reports every unknown key and wrong type with its path, and returns a
// cleaned copy of the value that protojson accepts: keys renamed to proto
// field names, durations rewritten in protojson's form, bad values dropped
// (a bad list element becomes the zero value, so indices do not shift).
type walker struct {
	probs *problems
}

// errorf records a structural problem at p.
func (w *walker) errorf(p path, format string, args ...any) {
	w.probs.add(sourceStructure, p, format, args...)
}

// message checks an object against md. ok is false when v is not an object.
func (w *walker) message(p path, md protoreflect.MessageDescriptor, v any) (out map[string]any, ok bool) {
	obj, isObj := v.(map[string]any)
	if !isObj {
		w.errorf(p, "want an object, got %s", describe(v))
		return nil, false
	}
	out = make(map[string]any, len(obj))
	fields := md.Fields()
	seen := make(map[protoreflect.Name]string)       // field -> key that set it
	oneofs := make(map[protoreflect.FullName]string) // oneof -> key that set it
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys) // ordering is done later, by position in the file
	for _, k := range keys {
		val := obj[k]
		fd := fields.ByTextName(k)
		if fd == nil {
			fd = fields.ByJSONName(k)
		}
		if fd == nil && k == "true" {
			// YAML 1.1 reads the key `on` (Retry.on) as the boolean true.
			fd = fields.ByName("on")
		}
		if fd == nil {
			w.errorf(p.field(k), "unknown field %q", k)
			continue
		}
		if prev, dup := seen[fd.Name()]; dup {
			w.errorf(p.field(k), "%q and %q are the same field; give it once", prev, k)
			continue
		}
		seen[fd.Name()] = k
		if val == nil {
			continue // null leaves a field unset, as in protojson
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if prev, set := oneofs[od.FullName()]; set {
				w.errorf(p.field(k), "only one of %s may be given, and %q is given already", oneofMembers(od), prev)
				continue
			}
			oneofs[od.FullName()] = k
		}
		if nv, ok := w.field(p.field(string(fd.Name())), fd, val); ok {
			out[string(fd.Name())] = nv
		}
	}
	return out, true
}

// field checks the value of one field: a list, a map or a single value.
func (w *walker) field(p path, fd protoreflect.FieldDescriptor, v any) (any, bool) {
	switch {
	case fd.IsList():
		list, ok := v.([]any)
		if !ok {
			w.errorf(p, "want a list, got %s", describe(v))
			return nil, false
		}
		out := make([]any, len(list))
		for i, e := range list {
			nv, ok := w.single(p.index(i), fd, e)
			if !ok {
				nv = zeroJSON(fd)
			}
			out[i] = nv
		}
		return out, true
	case fd.IsMap():
		obj, ok := v.(map[string]any)
		if !ok {
			w.errorf(p, "want an object, got %s", describe(v))
			return nil, false
		}
		out := make(map[string]any, len(obj))
		for k, e := range obj {
			kp := p.mapKey(k)
			if _, ok := w.scalar(kp, fd.MapKey(), k); !ok {
				continue
			}
			if nv, ok := w.single(kp, fd.MapValue(), e); ok {
				out[k] = nv
			}
		}
		return out, true
	default:
		return w.single(p, fd, v)
	}
}

// single checks one value (not a list or a map) of field fd.
func (w *walker) single(p path, fd protoreflect.FieldDescriptor, v any) (any, bool) {
	if v == nil {
		w.errorf(p, "want %s, got null", want(fd))
		return nil, false
	}
	if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
		return w.scalar(p, fd, v)
	}
	md := fd.Message()
	switch {
	case md.FullName() == "google.protobuf.Duration":
		return w.duration(p, v)
	case md.ParentFile().Package() == "google.protobuf":
		return v, true // other well-known types: protojson checks them
	default:
		return w.message(p, md, v)
	}
}

// duration accepts a Go duration ("250ms", "1h30m") or protojson's form
// ("0.25s") and returns protojson's form.
func (w *walker) duration(p path, v any) (any, bool) {
	s, ok := v.(string)
	if !ok {
		w.errorf(p, "want a duration such as \"30s\" or \"250ms\", got %s", describe(v))
		return nil, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		w.errorf(p, "want a duration such as \"30s\" or \"250ms\", got %s", describe(v))
		return nil, false
	}
	return formatDuration(d), true
}

// formatDuration writes d the way protojson reads a Duration: seconds with
// up to nine fractional digits and an "s".
func formatDuration(d time.Duration) string {
	sign := ""
	if d < 0 {
		sign = "-"
	}
	u := uint64(d)
	if d < 0 {
		u = -u
	}
	secs, nanos := u/1e9, u%1e9
	if nanos == 0 {
		return fmt.Sprintf("%s%ds", sign, secs)
	}
	frac := strings.TrimRight(fmt.Sprintf("%09d", nanos), "0")
	return fmt.Sprintf("%s%d.%ss", sign, secs, frac)
}

// scalar checks a value of a scalar kind.
func (w *walker) scalar(p path, fd protoreflect.FieldDescriptor, v any) (any, bool) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		if b, ok := v.(bool); ok {
			return b, true
		}
		if s, ok := v.(string); ok && (s == "true" || s == "false") && p[len(p)-1].isKey {
			return s, true // map keys are strings in JSON
		}
	case protoreflect.StringKind:
		if s, ok := v.(string); ok {
			return s, true
		}
		switch v := v.(type) {
		case json.Number:
			w.errorf(p, "want a string, got %s (put it in quotes: \"%s\")", v, v)
			return nil, false
		case bool:
			w.errorf(p, "want a string, got %t (put it in quotes: YAML reads yes, no, on, off, y and n as true or false)", v)
			return nil, false
		}
	case protoreflect.BytesKind:
		if s, ok := v.(string); ok {
			if _, err := base64.StdEncoding.DecodeString(s); err == nil {
				return s, true
			}
			if _, err := base64.URLEncoding.DecodeString(s); err == nil {
				return s, true
			}
			w.errorf(p, "want base64, got %s", describe(v))
			return nil, false
		}
	case protoreflect.EnumKind:
		return w.enum(p, fd.Enum(), v)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return w.float(p, fd, v)
	default:
		return w.integer(p, fd, v)
	}
	w.errorf(p, "want %s, got %s", want(fd), describe(v))
	return nil, false
}

// enum accepts an enum value by name or by number.
func (w *walker) enum(p path, ed protoreflect.EnumDescriptor, v any) (any, bool) {
	values := ed.Values()
	switch v := v.(type) {
	case string:
		if values.ByName(protoreflect.Name(v)) != nil {
			return v, true
		}
		names := make([]string, values.Len())
		for i := range values.Len() {
			names[i] = strconv.Quote(string(values.Get(i).Name()))
		}
		w.errorf(p, "want one of %s, got %q", strings.Join(names, ", "), v)
		return nil, false
	case json.Number:
		if n, err := strconv.ParseInt(string(v), 10, 32); err == nil {
			return json.Number(strconv.FormatInt(n, 10)), true
		}
	}
	w.errorf(p, "want the name of a %s value, got %s", ed.Name(), describe(v))
	return nil, false
}

// float accepts a number, a numeric string, or "NaN", "Infinity",
// "-Infinity", as protojson does.
func (w *walker) float(p path, fd protoreflect.FieldDescriptor, v any) (any, bool) {
	var s string
	switch v := v.(type) {
	case json.Number:
		s = string(v)
	case string:
		if v == "NaN" || v == "Infinity" || v == "-Infinity" {
			return v, true
		}
		s = v
	default:
		w.errorf(p, "want a number, got %s", describe(v))
		return nil, false
	}
	bits := 64
	if fd.Kind() == protoreflect.FloatKind {
		bits = 32
	}
	f, err := strconv.ParseFloat(s, bits)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		w.errorf(p, "want a number, got %s", describe(v))
		return nil, false
	}
	return json.Number(strconv.FormatFloat(f, 'g', -1, bits)), true
}

// integer accepts an integral number, or a string holding one, in the range
// of fd's kind.
func (w *walker) integer(p path, fd protoreflect.FieldDescriptor, v any) (any, bool) {
	var s string
	switch v := v.(type) {
	case json.Number:
		s = string(v)
	case string:
		s = strings.TrimSpace(v)
	default:
		w.errorf(p, "want a number, got %s", describe(v))
		return nil, false
	}
	bits, signed := intKind(fd.Kind())
	if signed {
		if n, err := strconv.ParseInt(s, 10, bits); err == nil {
			return json.Number(strconv.FormatInt(n, 10)), true
		}
	} else if n, err := strconv.ParseUint(s, 10, bits); err == nil {
		return json.Number(strconv.FormatUint(n, 10)), true
	}
	f, err := strconv.ParseFloat(s, 64)
	lo, hi := 0.0, math.Ldexp(1, bits) // the kind's range, [lo, hi)
	if signed {
		lo, hi = -math.Ldexp(1, bits-1), math.Ldexp(1, bits-1)
	}
	switch {
	case err != nil && !isRangeErr(err):
		w.errorf(p, "want a number, got %s", describe(v))
	case f != math.Trunc(f):
		w.errorf(p, "want a whole number, got %s", describe(v))
	case !signed && f < 0:
		w.errorf(p, "want a number of 0 or more, got %s", describe(v))
	case f < lo || f >= hi:
		w.errorf(p, "%s is out of range for a %s", strings.Trim(describe(v), `"`), fd.Kind())
	case signed:
		return json.Number(strconv.FormatInt(int64(f), 10)), true
	default:
		return json.Number(strconv.FormatUint(uint64(f), 10)), true
	}
	return nil, false
}

// isRangeErr reports whether err is strconv's out-of-range error.
func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// intKind returns the width and signedness of an integer kind.
func intKind(k protoreflect.Kind) (bits int, signed bool) {
	switch k {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return 32, true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return 32, false
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return 64, false
	default:
		return 64, true
	}
}

// want names the JSON value that a field takes, for messages.
func want(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return "true or false"
	case protoreflect.StringKind:
		return "a string"
	case protoreflect.BytesKind:
		return "base64"
	case protoreflect.EnumKind:
		return "the name of a " + string(fd.Enum().Name()) + " value"
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if fd.Message().FullName() == "google.protobuf.Duration" {
			return "a duration such as \"30s\" or \"250ms\""
		}
		return "an object"
	default:
		return "a number"
	}
}

// describe names a JSON value for messages: strings and numbers are quoted
// or shown (long strings cut short), lists and objects are named.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(v)
	case json.Number:
		return string(v)
	case string:
		const max = 40
		if len(v) > max {
			return strconv.Quote(v[:max]) + "..."
		}
		return strconv.Quote(v)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// zeroJSON is the JSON value that stands in for a bad list element: an
// empty object for messages, the zero value otherwise.
func zeroJSON(fd protoreflect.FieldDescriptor) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		switch fd.Message().FullName() {
		case "google.protobuf.Duration":
			return "0s"
		case "google.protobuf.Value":
			return nil
		}
		if fd.Message().ParentFile().Package() == "google.protobuf" {
			return nil
		}
		return map[string]any{}
	case protoreflect.BoolKind:
		return false
	case protoreflect.StringKind, protoreflect.BytesKind:
		return ""
	default:
		return json.Number("0")
	}
}

// oneofMembers lists a oneof's fields: "exact, prefix, suffix or regex".
func oneofMembers(od protoreflect.OneofDescriptor) string {
	fields := od.Fields()
	names := make([]string, fields.Len())
	for i := range fields.Len() {
		names[i] = string(fields.Get(i).Name())
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
