package transcode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// HandlerOptions configure the REST handlers of a Set.
type HandlerOptions struct {
	// StrictQuery refuses query parameters that name no request field with
	// INVALID_ARGUMENT (400) instead of ignoring them.
	StrictQuery bool
	// OnError is told about bindings that cannot be served (a path template
	// naming no field, say); they are skipped. May be nil.
	OnError func(method string, err error)
}

// Register adds to mux a handler for every HTTP binding of every method in
// set (its google.api.http rule and additional_bindings, or POST
// /pkg.Service/Method when it is auto-mapped). The handlers transcode as
// grpc-gateway's generated handlers do (same mux, marshalers, path
// matching, query parser and error handling) over dynamicpb messages, and
// call the method over conn.
//
// Precedence follows grpc-gateway's: a pattern registered later is tried
// first. Within a backend, methods are registered in declaration order, as
// generated code registers them; backends are registered last-listed
// first, so that the first-listed wins a pattern two backends share.
func Register(mux *runtime.ServeMux, conn grpc.ClientConnInterface, set *Set, opts HandlerOptions) {
	byBackend := map[string][]*Method{}
	for _, m := range set.Methods() {
		byBackend[m.Backend] = append(byBackend[m.Backend], m)
	}
	schemas := set.Schemas()
	for i := len(schemas) - 1; i >= 0; i-- {
		for _, m := range byBackend[schemas[i].Backend] {
			for _, b := range bindingsOf(m) {
				b.mux, b.conn, b.strict = mux, conn, opts.StrictQuery
				if err := b.prepare(); err != nil {
					if opts.OnError != nil {
						opts.OnError(m.FullMethod, err)
					}
					continue
				}
				if err := mux.HandlePath(b.Verb, b.Path, b.serve); err != nil {
					if opts.OnError != nil {
						opts.OnError(m.FullMethod, fmt.Errorf("%s %s: %w", b.Verb, b.Path, err))
					}
				}
			}
		}
	}
}

// Binding is one HTTP mapping of a method.
type Binding struct {
	// Method is the method it calls.
	Method *Method
	// Verb is the HTTP method.
	Verb string
	// Path is the path template, grpc-gateway (HttpRule) syntax.
	Path string
	// Body is "" (no body), "*" or the request field the body fills.
	Body string
	// ResponseBody is "" (the whole response) or the response field
	// written as the body.
	ResponseBody string
}

// Bindings returns every HTTP binding of the methods of set, in
// registration order.
func Bindings(set *Set) []Binding {
	var out []Binding
	for _, m := range set.Methods() {
		for _, b := range bindingsOf(m) {
			out = append(out, b.Binding)
		}
	}
	return out
}

func bindingsOf(m *Method) []*binding {
	if m.AutoMapped {
		return []*binding{{Binding: Binding{Method: m, Verb: http.MethodPost, Path: m.FullMethod, Body: "*"}}}
	}
	var out []*binding
	for _, r := range m.Rules {
		verb, path := ruleVerbPath(r)
		if path == "" {
			continue
		}
		out = append(out, &binding{Binding: Binding{Method: m, Verb: verb, Path: path, Body: r.GetBody(), ResponseBody: r.GetResponseBody()}})
	}
	return out
}

func ruleVerbPath(r *annotations.HttpRule) (string, string) {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return http.MethodGet, p.Get
	case *annotations.HttpRule_Put:
		return http.MethodPut, p.Put
	case *annotations.HttpRule_Post:
		return http.MethodPost, p.Post
	case *annotations.HttpRule_Delete:
		return http.MethodDelete, p.Delete
	case *annotations.HttpRule_Patch:
		return http.MethodPatch, p.Patch
	case *annotations.HttpRule_Custom:
		return p.Custom.GetKind(), p.Custom.GetPath()
	}
	return "", ""
}

type binding struct {
	Binding
	mux    *runtime.ServeMux
	conn   grpc.ClientConnInterface
	strict bool

	params    []param
	bodyPath  []protoreflect.FieldDescriptor // nil for "" and "*"
	respPath  []protoreflect.FieldDescriptor // nil for the whole response
	overlaps  []overlapKey                   // path parameters that name a field inside the body
	filter    *utilities.DoubleArray
	hasQuery  bool
	fieldMask protoreflect.FieldDescriptor // PATCH: filled from the body when unset
}

// param is one variable of a path template.
type param struct {
	name   string                         // as in the template, "book.id"
	path   []protoreflect.FieldDescriptor // the fields it names
	nested bool
	enum   map[string]int32 // for enum fields
}

// templateVars finds the variable names of a path template; the matching
// itself is grpc-gateway's (HandlePath).
var templateVars = regexp.MustCompile(`\{([^}=]+)(?:=[^}]*)?\}`)

// PathParams returns the variable names of a path template, in order.
func PathParams(template string) []string {
	var out []string
	for _, m := range templateVars.FindAllStringSubmatch(template, -1) {
		out = append(out, strings.TrimSpace(m[1]))
	}
	return out
}

// fieldPath resolves a dotted path of proto field names.
func fieldPath(md protoreflect.MessageDescriptor, path string) ([]protoreflect.FieldDescriptor, error) {
	var out []protoreflect.FieldDescriptor
	parts := strings.Split(path, ".")
	for i, p := range parts {
		if md == nil {
			return nil, fmt.Errorf("field path %q: %q is not a message", path, parts[i-1])
		}
		fd := md.Fields().ByName(protoreflect.Name(p))
		if fd == nil {
			return nil, fmt.Errorf("field path %q: no field %q in %s", path, p, md.FullName())
		}
		if i < len(parts)-1 && (fd.IsList() || fd.IsMap()) {
			return nil, fmt.Errorf("field path %q: %q is repeated", path, p)
		}
		out = append(out, fd)
		md = fd.Message()
	}
	return out, nil
}

func (b *binding) prepare() error {
	in := b.Method.In.Descriptor()
	var seqs [][]string
	if b.Body != "" && b.Body != "*" {
		fp, err := fieldPath(in, b.Body)
		if err != nil {
			return fmt.Errorf("body: %w", err)
		}
		b.bodyPath = fp
		seqs = append(seqs, strings.Split(b.Body, "."))
	}
	for _, name := range PathParams(b.Path) {
		fp, err := fieldPath(in, name)
		if err != nil {
			return fmt.Errorf("path %s: %w", b.Path, err)
		}
		p := param{name: name, path: fp, nested: len(fp) > 1}
		if ed := fp[len(fp)-1].Enum(); ed != nil {
			p.enum = enumValues(ed)
		}
		b.params = append(b.params, p)
		seqs = append(seqs, strings.Split(name, "."))
		// A parameter naming a field inside the body: where the body
		// would hold it, as JSON keys (proto and JSON name) from the body's
		// root.
		var rel []protoreflect.FieldDescriptor
		switch {
		case b.Body == "*":
			rel = fp
		case b.bodyPath != nil && len(fp) > len(b.bodyPath) && slices.Equal(fp[:len(b.bodyPath)], b.bodyPath):
			rel = fp[len(b.bodyPath):]
		}
		if rel != nil {
			o := overlapKey{name: name}
			for _, fd := range rel {
				o.keys = append(o.keys, [2]string{string(fd.Name()), fd.JSONName()})
			}
			b.overlaps = append(b.overlaps, o)
		}
	}
	b.filter = utilities.NewDoubleArray(seqs)
	// As grpc-gateway's generator: query parameters are read unless the body
	// takes everything or no top-level field is left for them.
	if b.Body != "*" {
		left := map[string]bool{}
		fields := in.Fields()
		for i := range fields.Len() {
			left[string(fields.Get(i).Name())] = true
		}
		delete(left, b.Body)
		for _, p := range b.params {
			delete(left, p.name)
		}
		b.hasQuery = len(left) > 0
	}
	if b.ResponseBody != "" {
		fp, err := fieldPath(b.Method.Out.Descriptor(), b.ResponseBody)
		if err != nil {
			return fmt.Errorf("response_body: %w", err)
		}
		b.respPath = fp
	}
	if b.Verb == http.MethodPatch && b.bodyPath != nil {
		// grpc-gateway's PATCH feature: a request with exactly one
		// FieldMask field gets it from the body's fields when unset.
		fields := in.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			if fd.Message() != nil && fd.Message().FullName() == "google.protobuf.FieldMask" && !fd.IsList() {
				if b.fieldMask != nil {
					b.fieldMask = nil
					break
				}
				b.fieldMask = fd
			}
		}
	}
	return nil
}

// serve is the runtime.HandlerFunc of one binding: the steps of a
// generated handler, in the same order, with the same errors.
func (b *binding) serve(w http.ResponseWriter, req *http.Request, pathParams map[string]string) {
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	inbound, outbound := runtime.MarshalerForRequest(b.mux, req)
	ctx, err := runtime.AnnotateContext(ctx, b.mux, req, b.Method.FullMethod, runtime.WithHTTPPathPattern(b.Path))
	if err != nil {
		runtime.HTTPError(req.Context(), b.mux, outbound, w, req, err)
		return
	}
	if b.Method.Desc.IsStreamingClient() {
		b.serveClientStream(ctx, w, req, inbound, outbound)
		return
	}
	msg := b.Method.In.New()
	if err := b.decode(inbound, req, msg, pathParams); err != nil {
		runtime.HTTPError(ctx, b.mux, outbound, w, req, err)
		return
	}
	var md runtime.ServerMetadata
	if b.Method.Desc.IsStreamingServer() {
		b.serveStream(ctx, w, req, outbound, msg, &md)
		return
	}
	resp := b.Method.Out.New()
	err = b.conn.Invoke(ctx, b.Method.FullMethod, msg.Interface(), resp.Interface(), grpc.Header(&md.HeaderMD), grpc.Trailer(&md.TrailerMD))
	ctx = runtime.NewServerMetadataContext(ctx, md)
	if err != nil {
		runtime.HTTPError(ctx, b.mux, outbound, w, req, err)
		return
	}
	runtime.ForwardResponseMessage(ctx, b.mux, outbound, w, req, b.responseOf(resp, outbound), b.mux.GetForwardResponseOptions()...)
}

var serverStreamDesc = &grpc.StreamDesc{ServerStreams: true}

func (b *binding) serveStream(ctx context.Context, w http.ResponseWriter, req *http.Request, outbound runtime.Marshaler, msg protoreflect.Message, md *runtime.ServerMetadata) {
	st, err := b.conn.NewStream(ctx, serverStreamDesc, b.Method.FullMethod)
	if err == nil {
		err = st.SendMsg(msg.Interface())
	}
	if err == nil {
		err = st.CloseSend()
	}
	if err == nil {
		md.HeaderMD, err = st.Header()
	}
	ctx = runtime.NewServerMetadataContext(ctx, *md)
	if err != nil {
		runtime.HTTPError(ctx, b.mux, outbound, w, req, err)
		return
	}
	b.forwardStream(ctx, w, req, outbound, st)
}

// forwardStream writes the responses of a server or bidi stream as
// grpc-gateway's generated handlers do (runtime.ForwardResponseStream).
func (b *binding) forwardStream(ctx context.Context, w http.ResponseWriter, req *http.Request, outbound runtime.Marshaler, st grpc.ClientStream) {
	runtime.ForwardResponseStream(ctx, b.mux, outbound, w, req, func() (proto.Message, error) {
		resp := b.Method.Out.New()
		if err := st.RecvMsg(resp.Interface()); err != nil {
			return nil, err
		}
		return b.responseOf(resp, outbound), nil
	}, b.mux.GetForwardResponseOptions()...)
}

var (
	clientStreamDesc = &grpc.StreamDesc{ClientStreams: true}
	bidiStreamDesc   = &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}
)

// serveClientStream serves a client- or bidi-streaming method as
// grpc-gateway's generated handlers do: the body is a sequence of
// requests, read with the inbound marshaler's decoder (newline-delimited
// JSON; chunks of a raw upload for google.api.HttpBody, see the edge's
// body marshaler); path and query parameters are not read. A client
// stream is answered with its one response (ForwardResponseMessage), a
// bidi stream with ForwardResponseStream while the body is still being
// sent.
func (b *binding) serveClientStream(ctx context.Context, w http.ResponseWriter, req *http.Request, inbound, outbound runtime.Marshaler) {
	bidi := b.Method.Desc.IsStreamingServer()
	desc := clientStreamDesc
	if bidi {
		desc = bidiStreamDesc
	}
	var md runtime.ServerMetadata
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := b.conn.NewStream(ctx, desc, b.Method.FullMethod)
	if err != nil {
		runtime.HTTPError(ctx, b.mux, outbound, w, req, err)
		return
	}
	dec := inbound.NewDecoder(req.Body)
	// send decodes and sends one request; io.EOF when the body or the
	// call has ended.
	send := func() error {
		msg := b.Method.In.New()
		if err := dec.Decode(msg.Interface()); err != nil {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return invalid("%v", err)
		}
		return st.SendMsg(msg.Interface())
	}
	if bidi {
		// The body is read while responses are written (over HTTP/1.1
		// too: full duplex); the handler returns only once the call is
		// over (cancel unblocks a send) and the body no longer read.
		_ = http.NewResponseController(w).EnableFullDuplex()
		sent := make(chan struct{})
		defer func() {
			cancel()
			<-sent
		}()
		go func() {
			defer close(sent)
			for send() == nil {
			}
			_ = st.CloseSend()
		}()
		if md.HeaderMD, err = st.Header(); err != nil {
			runtime.HTTPError(ctx, b.mux, outbound, w, req, b.statusOf(st, err))
			return
		}
		ctx = runtime.NewServerMetadataContext(ctx, md)
		b.forwardStream(ctx, w, req, outbound, st)
		return
	}
	for {
		if err = send(); errors.Is(err, io.EOF) {
			break // the body is done, or the backend answered early
		}
		if err != nil {
			runtime.HTTPError(ctx, b.mux, outbound, w, req, err)
			return
		}
	}
	if err = st.CloseSend(); err == nil {
		md.HeaderMD, err = st.Header()
	}
	if err != nil {
		runtime.HTTPError(runtime.NewServerMetadataContext(ctx, md), b.mux, outbound, w, req, b.statusOf(st, err))
		return
	}
	resp := b.Method.Out.New()
	err = st.RecvMsg(resp.Interface())
	md.TrailerMD = st.Trailer()
	ctx = runtime.NewServerMetadataContext(ctx, md)
	if err != nil {
		runtime.HTTPError(ctx, b.mux, outbound, w, req, err)
		return
	}
	runtime.ForwardResponseMessage(ctx, b.mux, outbound, w, req, b.responseOf(resp, outbound), b.mux.GetForwardResponseOptions()...)
}

// statusOf returns the status a stream ended with when err, from Header
// or CloseSend, is not one (io.EOF): RecvMsg has it.
func (b *binding) statusOf(st grpc.ClientStream, err error) error {
	if _, ok := status.FromError(err); ok && !errors.Is(err, io.EOF) {
		return err
	}
	if rerr := st.RecvMsg(b.Method.Out.New().Interface()); rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return status.Error(codes.Internal, "the stream ended without a response")
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// decode fills msg from the body, the path and the query.
func (b *binding) decode(m runtime.Marshaler, req *http.Request, msg protoreflect.Message, pathParams map[string]string) error {
	var raw []byte // the body, kept for the PATCH field mask and the overlap check
	if b.Body != "" {
		body := io.Reader(req.Body)
		if b.fieldMask != nil || len(b.overlaps) > 0 {
			var err error
			if raw, err = io.ReadAll(req.Body); err != nil {
				return invalid("%v", err)
			}
			body = bytes.NewReader(raw)
		}
		for _, o := range b.overlaps {
			// Also a value that decodes to the field's default, which
			// the decoded message cannot tell from an absent one.
			if jsonHas(raw, o.keys) {
				return overlap(o.name)
			}
		}
		var target proto.Message
		if b.Body == "*" {
			target = msg.Interface()
		} else {
			target = b.bodyTarget(msg)
		}
		if target != nil {
			if err := m.NewDecoder(body).Decode(target); err != nil && !errors.Is(err, io.EOF) {
				return invalid("%v", err)
			}
		} else if err := b.decodeScalarBody(m, body, msg); err != nil {
			return err
		}
		if b.fieldMask != nil {
			cur := msg.Get(b.fieldMask).Message()
			if !msg.Has(b.fieldMask) || cur.Get(cur.Descriptor().Fields().ByName("paths")).List().Len() == 0 {
				fm, err := runtime.FieldMaskFromRequestBody(bytes.NewReader(raw), getPath(msg, b.bodyPath).Message().Interface())
				if err != nil {
					return invalid("%v", err)
				}
				setMessage(msg, b.fieldMask, fm)
			}
		}
	}
	for _, p := range b.params {
		val, ok := pathParams[p.name]
		if !ok {
			return invalid("missing parameter %s", p.name)
		}
		if !utf8.ValidString(val) {
			// A string field must hold UTF-8; a bytes field takes base64,
			// which is ASCII. Refuse here rather than fail to marshal later.
			return invalid("parameter %s is not valid UTF-8", p.name)
		}
		if b.Body != "" && hasPath(msg, p.path) {
			return overlap(p.name)
		}
		if err := p.set(msg, val); err != nil {
			return invalid("type mismatch, parameter: %s, error: %v", p.name, err)
		}
	}
	if !b.hasQuery && b.strict && req.URL.RawQuery != "" {
		if err := b.refuseQuery(msg.Descriptor(), req.URL.Query()); err != nil {
			return invalid("%v", err)
		}
	}
	if b.hasQuery {
		if err := req.ParseForm(); err != nil {
			return invalid("%v", err)
		}
		if err := b.query(msg, req.Form); err != nil {
			return invalid("%v", err)
		}
	}
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
	}
	return nil
}

// bodyTarget returns the message the body decodes into when the body field
// is a singular message (allocated first, as generated code does), else
// nil.
func (b *binding) bodyTarget(msg protoreflect.Message) proto.Message {
	last := b.bodyPath[len(b.bodyPath)-1]
	if last.Message() == nil || last.IsList() || last.IsMap() {
		return nil
	}
	cur := msg
	for _, fd := range b.bodyPath {
		cur = cur.Mutable(fd).Message()
	}
	return cur.Interface()
}

// decodeScalarBody decodes a body into a field that is not a singular
// message (a scalar, list or map): as {"field": body} into a fresh request.
func (b *binding) decodeScalarBody(m runtime.Marshaler, body io.Reader, msg protoreflect.Message) error {
	data, err := io.ReadAll(body)
	if err != nil {
		return invalid("%v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	last := b.bodyPath[len(b.bodyPath)-1]
	parent := msg
	for _, fd := range b.bodyPath[:len(b.bodyPath)-1] {
		parent = parent.Mutable(fd).Message()
	}
	tmp := parent.New()
	wrapped := append(append([]byte(`{"`+last.JSONName()+`":`), data...), '}')
	if err := m.Unmarshal(wrapped, tmp.Interface()); err != nil {
		return invalid("%v", err)
	}
	if tmp.Has(last) {
		parent.Set(last, tmp.Get(last))
	}
	return nil
}

// set sets a path parameter as generated code does: top-level fields with
// runtime's converters, nested ones with runtime.PopulateFieldFromPath.
func (p *param) set(msg protoreflect.Message, val string) error {
	fd := p.path[len(p.path)-1]
	if p.enum != nil {
		parent := msg
		for _, f := range p.path[:len(p.path)-1] {
			parent = parent.Mutable(f).Message()
		}
		if fd.IsList() {
			es, err := runtime.EnumSlice(val, ",", p.enum)
			if err != nil {
				return err
			}
			l := parent.Mutable(fd).List()
			for _, e := range es {
				l.Append(protoreflect.ValueOfEnum(protoreflect.EnumNumber(e)))
			}
			return nil
		}
		e, err := runtime.Enum(val, p.enum)
		if err != nil {
			return err
		}
		parent.Set(fd, protoreflect.ValueOfEnum(protoreflect.EnumNumber(e)))
		return nil
	}
	if p.nested {
		return runtime.PopulateFieldFromPath(msg.Interface(), p.name, val)
	}
	if fd.IsList() {
		return setList(msg, fd, val)
	}
	v, err := convert(fd, val)
	if err != nil {
		return err
	}
	if pm, ok := v.(proto.Message); ok {
		setMessage(msg, fd, pm)
		return nil
	}
	msg.Set(fd, protoreflect.ValueOf(v))
	return nil
}

// convert parses a top-level path parameter with the converter generated
// code uses for its kind.
func convert(fd protoreflect.FieldDescriptor, val string) (any, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return runtime.String(val)
	case protoreflect.BoolKind:
		return runtime.Bool(val)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return runtime.Int32(val)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return runtime.Int64(val)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return runtime.Uint32(val)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return runtime.Uint64(val)
	case protoreflect.FloatKind:
		return runtime.Float32(val)
	case protoreflect.DoubleKind:
		return runtime.Float64(val)
	case protoreflect.BytesKind:
		return runtime.Bytes(val)
	case protoreflect.MessageKind:
		switch fd.Message().FullName() {
		case "google.protobuf.Timestamp":
			return runtime.Timestamp(val)
		case "google.protobuf.Duration":
			return runtime.Duration(val)
		case "google.protobuf.StringValue":
			return runtime.StringValue(val)
		case "google.protobuf.BoolValue":
			return runtime.BoolValue(val)
		case "google.protobuf.Int32Value":
			return runtime.Int32Value(val)
		case "google.protobuf.Int64Value":
			return runtime.Int64Value(val)
		case "google.protobuf.UInt32Value":
			return runtime.UInt32Value(val)
		case "google.protobuf.UInt64Value":
			return runtime.UInt64Value(val)
		case "google.protobuf.FloatValue":
			return runtime.FloatValue(val)
		case "google.protobuf.DoubleValue":
			return runtime.DoubleValue(val)
		case "google.protobuf.BytesValue":
			return runtime.BytesValue(val)
		}
	}
	return nil, fmt.Errorf("%s cannot be a path parameter", fd.Kind())
}

func setList(msg protoreflect.Message, fd protoreflect.FieldDescriptor, val string) error {
	l := msg.Mutable(fd).List()
	for _, part := range strings.Split(val, ",") {
		v, err := convert(fd, part)
		if err != nil {
			return err
		}
		l.Append(protoreflect.ValueOf(v))
	}
	return nil
}

// setMessage sets a message field to m, which may be a compiled-in type
// (a well-known type) while the parent is dynamic: dynamicpb accepts
// messages of the same full name.
func setMessage(msg protoreflect.Message, fd protoreflect.FieldDescriptor, m proto.Message) {
	msg.Set(fd, protoreflect.ValueOfMessage(m.ProtoReflect()))
}

func hasPath(msg protoreflect.Message, path []protoreflect.FieldDescriptor) bool {
	cur := msg
	for i, fd := range path {
		if !cur.Has(fd) {
			return false
		}
		if i < len(path)-1 {
			cur = cur.Get(fd).Message()
		}
	}
	return true
}

func getPath(msg protoreflect.Message, path []protoreflect.FieldDescriptor) protoreflect.Value {
	cur := msg
	for _, fd := range path[:len(path)-1] {
		cur = cur.Get(fd).Message()
	}
	return cur.Get(path[len(path)-1])
}

// overlapKey is a path parameter that names a field the body may set too.
type overlapKey struct {
	name string      // the parameter, "book.name"
	keys [][2]string // the field's JSON keys (proto name, JSON name) from the body's root
}

// jsonHas reports whether the JSON object data holds a non-null value at
// keys (each level by proto or JSON name). Malformed JSON holds nothing;
// the decoder reports it.
func jsonHas(data []byte, keys [][2]string) bool {
	for _, k := range keys {
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) != nil {
			return false
		}
		v, ok := obj[k[0]]
		if !ok {
			v, ok = obj[k[1]]
		}
		if !ok || string(bytes.TrimSpace(v)) == "null" {
			return false
		}
		data = v
	}
	return true
}

// overlap is the error of a field that the body sets and a path
// parameter names too.
func overlap(field string) error {
	return invalid("field %q is set by both the path and the body", field)
}

// responseOf returns what is written for resp: resp itself, or its
// response_body field in the shape generated code hands the marshaler.
func (b *binding) responseOf(resp protoreflect.Message, m runtime.Marshaler) proto.Message {
	if b.respPath == nil {
		return resp.Interface()
	}
	useNumbers := false
	if j, ok := jsonPb(m); ok {
		useNumbers = j.UseEnumNumbers
	}
	cur := resp
	for _, fd := range b.respPath[:len(b.respPath)-1] {
		cur = cur.Get(fd).Message()
	}
	fd := b.respPath[len(b.respPath)-1]
	return responseBody{Message: resp.Interface(), body: goValue(fd, cur.Get(fd), useNumbers)}
}

// responseBody is a response whose body is one of its fields; grpc-gateway
// writes XXX_ResponseBody() instead of the message.
type responseBody struct {
	proto.Message
	body any
}

// XXX_ResponseBody is what grpc-gateway's ForwardResponseMessage writes.
func (r responseBody) XXX_ResponseBody() any { return r.body }

// goValue turns a field value into the Go value a generated struct field
// holds, so that grpc-gateway's marshaler writes the same JSON for it.
func goValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, enumNumbers bool) any {
	switch {
	case fd.IsMap():
		mp := v.Map()
		if mp.Len() == 0 {
			return map[string]any(nil)
		}
		out := make(map[any]any, mp.Len())
		mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			out[k.Interface()] = singular(fd.MapValue(), mv, enumNumbers)
			return true
		})
		return out
	case fd.IsList():
		l := v.List()
		if l.Len() == 0 {
			if fd.Message() != nil {
				return []proto.Message(nil)
			}
			return []any(nil)
		}
		if fd.Message() != nil {
			out := make([]proto.Message, l.Len())
			for i := range l.Len() {
				out[i] = l.Get(i).Message().Interface()
			}
			return out
		}
		out := make([]any, l.Len())
		for i := range l.Len() {
			out[i] = singular(fd, l.Get(i), enumNumbers)
		}
		return out
	}
	return singular(fd, v, enumNumbers)
}

func singular(fd protoreflect.FieldDescriptor, v protoreflect.Value, enumNumbers bool) any {
	switch {
	case fd.Message() != nil:
		return v.Message().Interface()
	case fd.Enum() != nil:
		n := v.Enum()
		if enumNumbers {
			return int32(n)
		}
		if ev := fd.Enum().Values().ByNumber(n); ev != nil {
			return string(ev.Name())
		}
		return fmt.Sprint(int32(n))
	case fd.Kind() == protoreflect.BytesKind:
		if b := v.Bytes(); len(b) > 0 {
			return b
		}
		return []byte(nil)
	}
	return v.Interface()
}

// sortedKeys returns the keys of a url.Values in order, so that errors do not
// depend on map order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
