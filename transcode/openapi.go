package transcode

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// OpenAPIOptions shape an OpenAPI document the way the REST mux writes JSON.
type OpenAPIOptions struct {
	// Title is info.title.
	Title string
	// Version is info.version.
	Version string
	// UseProtoNames: properties are proto field names, not lowerCamelCase.
	UseProtoNames bool
	// EnumsAsInts: enums are written as numbers.
	EnumsAsInts bool
	// Backend, when set, restricts the document to that backend's methods.
	Backend string
}

// OpenAPI returns an OpenAPI 3.1 document (as a JSON-ready map) for the REST
// mapping of set: one operation per binding (custom HTTP methods, which
// OpenAPI cannot name, are listed under x-gatehouse-custom-methods), path,
// query and body parameters as the handlers read them, the response (or
// its response_body field), google.rpc.Status for errors, and the
// protovalidate rules OpenAPI can express (lengths, bounds, patterns,
// required, item counts).
//
// operationIds are unique, as OpenAPI requires: a method's first binding
// is named service.Method, its additional bindings service.Method2,
// service.Method3, ... (protoc-gen-openapiv2 numbers them the same way).
// A binding whose path and verb collapse onto those of an earlier one
// (GET /v1/{name=shelves/*} and GET /v1/{name=users/*}, say) cannot be a
// second operation of the same path item: it is listed under
// x-gatehouse-shadowed, with the operation that took its place, instead.
func OpenAPI(set *Set, opts OpenAPIOptions) map[string]any {
	g := &openapiGen{opts: opts, schemas: map[string]any{}}
	paths := map[string]map[string]any{}
	var custom, shadowed []any
	nth := map[*Method]int{}      // bindings of a method seen so far
	used := map[string]bool{}     // operationIds handed out
	reserved := map[string]bool{} // every method's own operationId
	bindings := Bindings(set)
	for _, b := range bindings {
		reserved[operationID(b.Method)] = true
	}
	for _, b := range bindings {
		if opts.Backend != "" && b.Method.Backend != opts.Backend {
			continue
		}
		nth[b.Method]++
		bd := &binding{Binding: b}
		if err := bd.prepare(); err != nil {
			continue
		}
		path, params := g.pathOf(bd)
		op := g.operation(bd, params)
		op["operationId"] = uniqueID(used, reserved, operationID(b.Method), nth[b.Method])
		verb := strings.ToLower(b.Verb)
		if !slices.Contains([]string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}, verb) {
			custom = append(custom, map[string]any{"method": b.Verb, "path": path, "operation": op})
			continue
		}
		if paths[path] == nil {
			paths[path] = map[string]any{}
		}
		if prev, dup := paths[path][verb]; dup {
			shadowed = append(shadowed, map[string]any{
				"method": b.Verb, "path": path, "template": b.Path,
				"x-grpc-method": b.Method.FullMethod,
				"shadowedBy":    prev.(map[string]any)["operationId"],
				"operation":     op,
			})
			continue
		}
		paths[path][verb] = op
	}
	g.schemas["google.rpc.Status"] = map[string]any{
		"type":        "object",
		"description": "The error of a call: its gRPC code, a message and details (google.rpc.BadRequest field violations for invalid requests).",
		"properties": map[string]any{
			"code":    map[string]any{"type": "integer", "format": "int32", "description": "The gRPC status code."},
			"message": map[string]any{"type": "string"},
			"details": map[string]any{"type": "array", "items": map[string]any{"$ref": "#/components/schemas/google.protobuf.Any"}},
		},
	}
	g.schemas["google.protobuf.Any"] = anySchema()
	doc := map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": opts.Title, "version": opts.Version},
		"paths":   paths,
		"components": map[string]any{
			"schemas": g.schemas,
			"responses": map[string]any{
				"Error": map[string]any{
					"description": "An error: the gRPC status mapped to its HTTP code, with a google.rpc.Status body.",
					"content":     jsonContent(ref("google.rpc.Status")),
				},
			},
		},
	}
	if len(custom) > 0 {
		doc["x-gatehouse-custom-methods"] = custom
	}
	if len(shadowed) > 0 {
		doc["x-gatehouse-shadowed"] = shadowed
	}
	return doc
}

// uniqueID returns the operationId of the n-th binding (from 1) of a
// method whose base id is base: base, then base2, base3, ..., skipping
// numbers taken already or reserved as the base id of another method (a
// method named GetBook2 next to GetBook's additional binding keeps its
// name).
func uniqueID(used, reserved map[string]bool, base string, n int) string {
	id := base
	if n > 1 {
		id = base + strconv.Itoa(n)
	}
	for i := n + 1; used[id] || (id != base && reserved[id]); i++ {
		id = base + strconv.Itoa(i)
	}
	used[id] = true
	return id
}

type openapiGen struct {
	opts    OpenAPIOptions
	schemas map[string]any
}

func ref(name string) map[string]any { return map[string]any{"$ref": "#/components/schemas/" + name} }

func jsonContent(schema any) map[string]any {
	return map[string]any{"application/json": map[string]any{"schema": schema}}
}

var templateVar = regexp.MustCompile(`\{([^}=]+)(?:=([^}]*))?\}`)

// pathOf turns a path template into an OpenAPI path and its parameters:
// {name=shelves/*} becomes {name} with a pattern.
func (g *openapiGen) pathOf(b *binding) (string, []any) {
	var params []any
	i := 0
	path := templateVar.ReplaceAllStringFunc(b.Path, func(v string) string {
		m := templateVar.FindStringSubmatch(v)
		name := strings.TrimSpace(m[1])
		p := b.params[i]
		i++
		schema := g.fieldSchema(p.path[len(p.path)-1], false)
		if m[2] != "" {
			schema = map[string]any{"type": "string", "pattern": segmentPattern(m[2])}
		}
		params = append(params, map[string]any{"name": name, "in": "path", "required": true, "schema": schema})
		return "{" + name + "}"
	})
	return path, params
}

// segmentPattern turns a template's segments (shelves/*/books/*, **) into
// a regular expression.
func segmentPattern(segs string) string {
	parts := strings.Split(segs, "/")
	for i, p := range parts {
		switch p {
		case "*":
			parts[i] = "[^/]+"
		case "**":
			parts[i] = ".*"
		default:
			parts[i] = regexp.QuoteMeta(p)
		}
	}
	return "^" + strings.Join(parts, "/") + "$"
}

// operationID is the operationId of a method's first binding.
func operationID(m *Method) string {
	return string(m.Desc.Parent().FullName()) + "." + string(m.Desc.Name())
}

func (g *openapiGen) operation(b *binding, params []any) map[string]any {
	m := b.Method
	svc := m.Desc.Parent().FullName()
	op := map[string]any{
		"tags":                []string{string(svc)},
		"x-grpc-method":       m.FullMethod,
		"x-gatehouse-backend": m.Backend,
	}
	if b.hasQuery {
		params = append(params, g.queryParams(b, m.In.Descriptor(), nil, 0)...)
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	switch {
	case m.Desc.IsStreamingClient() && m.In.Descriptor().FullName() == "google.api.HttpBody":
		op["requestBody"] = map[string]any{
			"required":    true,
			"description": "The raw upload, of any size, sent to the method as a stream of google.api.HttpBody chunks with the request's Content-Type.",
			"content":     map[string]any{"*/*": map[string]any{"schema": map[string]any{"type": "string", "contentMediaType": "application/octet-stream"}}},
		}
	case m.Desc.IsStreamingClient():
		op["requestBody"] = map[string]any{
			"required":    true,
			"description": "A stream of requests: newline-delimited JSON, one message per line.",
			"content":     jsonContent(g.messageRef(m.In.Descriptor())),
		}
	case b.Body == "*":
		op["requestBody"] = map[string]any{"required": true, "content": jsonContent(g.messageRef(m.In.Descriptor()))}
	case b.bodyPath != nil:
		op["requestBody"] = map[string]any{"required": true, "content": jsonContent(g.fieldSchema(b.bodyPath[len(b.bodyPath)-1], true))}
	}
	var resp any = g.messageRef(m.Out.Descriptor())
	if b.respPath != nil {
		resp = g.fieldSchema(b.respPath[len(b.respPath)-1], true)
	}
	desc := "OK"
	if m.Desc.IsStreamingServer() {
		desc = "A stream of messages, newline-delimited, each {\"result\": message} or {\"error\": google.rpc.Status}."
	}
	op["responses"] = map[string]any{
		"200":     map[string]any{"description": desc, "content": jsonContent(resp)},
		"default": map[string]any{"$ref": "#/components/responses/Error"},
	}
	return op
}

// queryParams lists the query parameters a binding reads: every leaf field
// not set by the path or body, nested messages flattened with dots.
func (g *openapiGen) queryParams(b *binding, md protoreflect.MessageDescriptor, prefix []string, depth int) []any {
	var out []any
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		names := append(slices.Clone(prefix), string(fd.Name()))
		if b.filter.HasCommonPrefix(names) || fd.IsMap() {
			continue
		}
		if fd.Message() != nil && !isScalarWKT(fd.Message().FullName()) {
			if depth < 3 && !fd.IsList() {
				out = append(out, g.queryParams(b, fd.Message(), names, depth+1)...)
			}
			continue
		}
		name := strings.Join(names, ".")
		out = append(out, map[string]any{"name": name, "in": "query", "schema": g.fieldSchema(fd, false)})
	}
	return out
}

// isScalarWKT reports well-known types written as JSON scalars.
func isScalarWKT(name protoreflect.FullName) bool {
	switch name {
	case "google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask",
		"google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
		"google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
		"google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue":
		return true
	}
	return false
}

func (g *openapiGen) jsonName(fd protoreflect.FieldDescriptor) string {
	if g.opts.UseProtoNames {
		return string(fd.Name())
	}
	return fd.JSONName()
}

// messageRef returns a reference to a message's schema, adding it (and the
// messages it uses) to the components.
func (g *openapiGen) messageRef(md protoreflect.MessageDescriptor) map[string]any {
	name := string(md.FullName())
	if s, ok := wktSchema(name); ok {
		return s
	}
	if _, ok := g.schemas[name]; !ok {
		g.schemas[name] = nil // placeholder: recursion stops here
		props := map[string]any{}
		var required []string
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			props[g.jsonName(fd)] = g.fieldSchema(fd, true)
			if r := fieldRules(fd); r != nil && r.GetRequired() {
				required = append(required, g.jsonName(fd))
			}
		}
		s := map[string]any{"type": "object", "properties": props}
		if len(required) > 0 {
			s["required"] = required
		}
		g.schemas[name] = s
	}
	return ref(name)
}

// fieldSchema returns the JSON schema of one field's value.
func (g *openapiGen) fieldSchema(fd protoreflect.FieldDescriptor, withRefs bool) map[string]any {
	if fd.IsMap() {
		return map[string]any{"type": "object", "additionalProperties": g.singleSchema(fd.MapValue(), withRefs)}
	}
	s := g.singleSchema(fd, withRefs)
	rules := fieldRules(fd)
	if fd.IsList() {
		arr := map[string]any{"type": "array", "items": s}
		if r := rules.GetRepeated(); r != nil {
			if r.HasMinItems() {
				arr["minItems"] = r.GetMinItems()
			}
			if r.HasMaxItems() {
				arr["maxItems"] = r.GetMaxItems()
			}
		}
		return arr
	}
	applyRules(s, rules)
	return s
}

func (g *openapiGen) singleSchema(fd protoreflect.FieldDescriptor, withRefs bool) map[string]any {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return map[string]any{"type": "boolean"}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return map[string]any{"type": "integer", "format": "int32"}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return map[string]any{"type": "integer", "format": "int64", "minimum": 0}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return map[string]any{"type": "string", "format": "int64"}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return map[string]any{"type": "string", "format": "uint64"}
	case protoreflect.FloatKind:
		return map[string]any{"type": "number", "format": "float"}
	case protoreflect.DoubleKind:
		return map[string]any{"type": "number", "format": "double"}
	case protoreflect.StringKind:
		return map[string]any{"type": "string"}
	case protoreflect.BytesKind:
		return map[string]any{"type": "string", "format": "byte", "contentEncoding": "base64"}
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if g.opts.EnumsAsInts {
			nums := make([]int32, vals.Len())
			for i := range vals.Len() {
				nums[i] = int32(vals.Get(i).Number())
			}
			return map[string]any{"type": "integer", "enum": nums}
		}
		names := make([]string, vals.Len())
		for i := range vals.Len() {
			names[i] = string(vals.Get(i).Name())
		}
		return map[string]any{"type": "string", "enum": names}
	}
	if s, ok := wktSchema(string(fd.Message().FullName())); ok {
		return s
	}
	if !withRefs {
		return map[string]any{"type": "object"}
	}
	// A $ref cannot carry siblings in every tool: wrap it.
	return map[string]any{"allOf": []any{g.messageRef(fd.Message())}}
}

// wktSchema is the JSON form of the well-known types.
func wktSchema(name string) (map[string]any, bool) {
	nullable := func(t string, extra ...string) map[string]any {
		s := map[string]any{"type": []string{t, "null"}}
		if len(extra) == 1 {
			s["format"] = extra[0]
		}
		return s
	}
	switch name {
	case "google.protobuf.Timestamp":
		return map[string]any{"type": "string", "format": "date-time"}, true
	case "google.protobuf.Duration":
		return map[string]any{"type": "string", "pattern": `^-?[0-9]+(\.[0-9]{0,9})?s$`}, true
	case "google.protobuf.FieldMask":
		return map[string]any{"type": "string", "description": "Comma-separated field paths."}, true
	case "google.protobuf.Struct":
		return map[string]any{"type": "object"}, true
	case "google.protobuf.Value":
		return map[string]any{}, true
	case "google.protobuf.ListValue":
		return map[string]any{"type": "array"}, true
	case "google.protobuf.Empty":
		return map[string]any{"type": "object"}, true
	case "google.protobuf.Any":
		return anySchema(), true
	case "google.protobuf.DoubleValue":
		return nullable("number", "double"), true
	case "google.protobuf.FloatValue":
		return nullable("number", "float"), true
	case "google.protobuf.Int64Value":
		return nullable("string", "int64"), true
	case "google.protobuf.UInt64Value":
		return nullable("string", "uint64"), true
	case "google.protobuf.Int32Value":
		return nullable("integer", "int32"), true
	case "google.protobuf.UInt32Value":
		return nullable("integer"), true
	case "google.protobuf.BoolValue":
		return nullable("boolean"), true
	case "google.protobuf.StringValue":
		return nullable("string"), true
	case "google.protobuf.BytesValue":
		return nullable("string", "byte"), true
	}
	return nil, false
}

func anySchema() map[string]any {
	return map[string]any{
		"type":                 "object",
		"properties":           map[string]any{"@type": map[string]any{"type": "string"}},
		"required":             []string{"@type"},
		"additionalProperties": true,
	}
}

// fieldRules returns a field's protovalidate rules, nil when none.
func fieldRules(fd protoreflect.FieldDescriptor) *validate.FieldRules {
	opts, ok := fd.Options().(*descriptorpb.FieldOptions)
	if !ok || opts == nil || !proto.HasExtension(opts, validate.E_Field) {
		return nil
	}
	r, _ := proto.GetExtension(opts, validate.E_Field).(*validate.FieldRules)
	return r
}

// applyRules adds to s the rules OpenAPI can express: string lengths and
// patterns, numeric bounds.
func applyRules(s map[string]any, r *validate.FieldRules) {
	if r == nil {
		return
	}
	if sr := r.GetString(); sr != nil {
		if sr.HasMinLen() {
			s["minLength"] = sr.GetMinLen()
		}
		if sr.HasMaxLen() {
			s["maxLength"] = sr.GetMaxLen()
		}
		if sr.HasPattern() {
			s["pattern"] = sr.GetPattern()
		}
		return
	}
	// Numeric rules share field names (gt, gte, lt, lte) across types.
	rm := r.ProtoReflect()
	oneof := rm.Descriptor().Oneofs().ByName("type")
	if oneof == nil {
		return
	}
	which := rm.WhichOneof(oneof)
	if which == nil || which.Message() == nil {
		return
	}
	nm := rm.Get(which).Message()
	// 64-bit integers are JSON strings, which numeric keywords do not
	// constrain: their bounds go into the description instead.
	asText := s["type"] == "string"
	var text []string
	bound := func(field, key, op string) {
		fd := nm.Descriptor().Fields().ByName(protoreflect.Name(field))
		if fd == nil || fd.Message() != nil || !nm.Has(fd) {
			return
		}
		if asText {
			text = append(text, fmt.Sprintf("%s %v", op, nm.Get(fd).Interface()))
			return
		}
		s[key] = nm.Get(fd).Interface()
	}
	bound("gte", "minimum", "at least")
	bound("gt", "exclusiveMinimum", "more than")
	bound("lte", "maximum", "at most")
	bound("lt", "exclusiveMaximum", "less than")
	if len(text) > 0 {
		s["description"] = "A decimal integer " + strings.Join(text, " and ") + "."
	}
}
