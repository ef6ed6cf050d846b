package edge

import (
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"reflect"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Bodies that are not JSON, on the REST paths of every shared listener,
// for compiled-in services (generated handlers) and runtime schemas alike.
//
// google.api.HttpBody. A request whose body (the rule's body field, or the
// whole request for "*") is a google.api.HttpBody takes the raw HTTP body:
// data is the bytes as sent and content_type the request's Content-Type,
// whatever it is (JSON too), as Google's HttpRule documents. A response
// that is a google.api.HttpBody is written raw: its data as the body, its
// content_type as the Content-Type (application/octet-stream when empty).
// A server stream of google.api.HttpBody is written as one binary body,
// chunk after chunk with no delimiters, with the Content-Type of the first
// chunk; a stream that fails after the first chunk is aborted (the client
// sees a truncated transfer, never a short file that looks complete); one
// that fails before it gets an HTTP error status, as any REST call. A
// client stream of google.api.HttpBody (with or without a response
// stream) takes a plain HTTP upload of any size, chunked or not, unbounded
// by max_message_bytes: it is sent as a stream of HttpBody messages of at
// most max_message_bytes each (encoded), content_type the request's; the
// call is half-closed at the end of the body and its response is the
// answer. An error from the backend before the end of the upload is
// answered at once with its HTTP status and google.rpc.Status body.
//
// multipart/form-data. A request with that Content-Type whose body is not a
// google.api.HttpBody is mapped onto the body message part by part, by the
// part's form name (the field's proto name, or its JSON name):
//
//   - a form field (a part without a filename) fills a string field;
//   - a file part (a part with a filename) fills a bytes field;
//   - a repeated string or bytes field takes every part of its name, in
//     order; a singular one takes one part;
//
// anything else is INVALID_ARGUMENT (400): a part naming no field, a form
// field for a bytes field or a file part for a string field, a part for a
// field of another kind (numbers, enums, messages, maps), a second part
// for a singular field, a form field that is not UTF-8, a malformed body.
// Path and query parameters then apply as for a JSON body. The part's own
// Content-Type and filename are not kept; a message that wants them
// declares a string field the client fills as a form field.
//
// Anything else is JSON, whatever the Content-Type says, as grpc-gateway
// does: a body that is not JSON is INVALID_ARGUMENT (400), never 415. A
// body over the listener's max_message_bytes is 413 (rest.go, limitBody),
// multipart and HttpBody included.

// httpBodyName is the full name of google.api.HttpBody.
const httpBodyName protoreflect.FullName = "google.api.HttpBody"

// isHTTPBody reports whether md is google.api.HttpBody, compiled in or not.
func isHTTPBody(md protoreflect.MessageDescriptor) bool {
	return md != nil && md.FullName() == httpBodyName
}

// typedBody is a REST request body that remembers its request's
// Content-Type, for bodyMarshaler's decoder: grpc-gateway hands decoders
// the body only.
type typedBody struct {
	io.ReadCloser
	contentType string
	// chunk, when above 0, makes each decode of a google.api.HttpBody
	// take at most chunk bytes of the body (an upload to a client stream,
	// streams.go) instead of all of it; io.EOF once it is all taken.
	chunk int
}

// withTypedBody returns r with its body wrapped in a typedBody.
func withTypedBody(r *http.Request) *http.Request {
	if r.Body == nil || r.Body == http.NoBody {
		return r
	}
	if _, ok := r.Body.(*typedBody); ok {
		return r // an upload (streams.go), typed already
	}
	r2 := r.WithContext(r.Context())
	r2.Body = &typedBody{ReadCloser: r.Body, contentType: r.Header.Get("Content-Type")}
	return r2
}

// bodyMarshaler is the REST marshaler of shared listeners: JSON (its
// Marshaler), plus google.api.HttpBody responses written raw and
// google.api.HttpBody and multipart/form-data request bodies, as described
// above.
type bodyMarshaler struct {
	runtime.Marshaler
}

var _ runtime.Marshaler = (*bodyMarshaler)(nil)

// newBodyMarshaler wraps a JSON marshaler.
func newBodyMarshaler(json runtime.Marshaler) *bodyMarshaler { return &bodyMarshaler{Marshaler: json} }

// Unwrap returns the JSON marshaler, for code that looks for its options.
func (m *bodyMarshaler) Unwrap() runtime.Marshaler { return m.Marshaler }

// asHTTPBody returns v's message when it is a google.api.HttpBody.
func asHTTPBody(v any) (protoreflect.Message, bool) {
	pm, ok := v.(proto.Message)
	if !ok || pm == nil {
		return nil, false
	}
	msg := pm.ProtoReflect()
	if !msg.IsValid() || !isHTTPBody(msg.Descriptor()) {
		return nil, false
	}
	return msg, true
}

// httpBodyFields returns the content_type and data fields of HttpBody.
func httpBodyFields(msg protoreflect.Message) (contentType, data protoreflect.FieldDescriptor) {
	f := msg.Descriptor().Fields()
	return f.ByName("content_type"), f.ByName("data")
}

// ContentType is the HttpBody's content_type for an HttpBody, else JSON's.
func (m *bodyMarshaler) ContentType(v any) string {
	if msg, ok := asHTTPBody(v); ok {
		return httpBodyContentType(msg)
	}
	return m.Marshaler.ContentType(v)
}

func httpBodyContentType(msg protoreflect.Message) string {
	ct, _ := httpBodyFields(msg)
	if s := msg.Get(ct).String(); s != "" {
		return s
	}
	return "application/octet-stream"
}

// Marshal is the HttpBody's data for an HttpBody, else JSON.
func (m *bodyMarshaler) Marshal(v any) ([]byte, error) {
	if msg, ok := asHTTPBody(v); ok {
		_, data := httpBodyFields(msg)
		return msg.Get(data).Bytes(), nil
	}
	return m.Marshaler.Marshal(v)
}

// NewDecoder decodes r into an HttpBody raw, a multipart/form-data body
// part by part, anything else as JSON. One decoder reads a stream of
// messages (a client stream's newline-delimited JSON) with one JSON
// decoder, which buffers ahead.
func (m *bodyMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	var json runtime.Decoder // made at the first JSON message
	return runtime.DecoderFunc(func(v any) error {
		contentType, chunk := "", 0
		if tb, ok := r.(*typedBody); ok {
			contentType, chunk = tb.contentType, tb.chunk
		}
		target, isProto := protoTarget(v)
		if isProto && isHTTPBody(target.Descriptor()) {
			if chunk > 0 {
				return decodeHTTPBodyChunk(r, contentType, chunk, target)
			}
			return decodeHTTPBody(r, contentType, target)
		}
		if mt, params, err := mime.ParseMediaType(contentType); err == nil && mt == "multipart/form-data" {
			if !isProto {
				return status.Error(codes.InvalidArgument, "gatehouse: a multipart/form-data body needs a message body field")
			}
			return decodeMultipart(r, params["boundary"], target)
		}
		if json == nil {
			json = m.Marshaler.NewDecoder(r)
		}
		return json.Decode(v)
	})
}

var protoMessageType = reflect.TypeFor[proto.Message]()

// protoTarget returns the message a decoder is to fill: v itself, or *v
// when v is a pointer to a message pointer (allocated when nil), as
// generated handlers pass body fields.
func protoTarget(v any) (protoreflect.Message, bool) {
	if pm, ok := v.(proto.Message); ok {
		return pm.ProtoReflect(), true
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Pointer || !rv.Elem().Type().Implements(protoMessageType) {
		return nil, false
	}
	if rv.Elem().IsNil() {
		rv.Elem().Set(reflect.New(rv.Elem().Type().Elem()))
	}
	return rv.Elem().Interface().(proto.Message).ProtoReflect(), true
}

// decodeHTTPBody fills an HttpBody with the raw body and its content type.
func decodeHTTPBody(r io.Reader, contentType string, msg protoreflect.Message) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err // over the limit: restError answers 413
	}
	ct, df := httpBodyFields(msg)
	if contentType != "" {
		msg.Set(ct, protoreflect.ValueOfString(contentType))
	}
	if len(data) > 0 {
		msg.Set(df, protoreflect.ValueOfBytes(data))
	}
	return nil
}

// decodeHTTPBodyChunk fills an HttpBody with the next chunk of at most n
// bytes of the raw body (fewer only at its end) and its content type;
// io.EOF when no byte is left. An empty body is no message at all.
func decodeHTTPBodyChunk(r io.Reader, contentType string, n int, msg protoreflect.Message) error {
	buf := make([]byte, n)
	got, err := io.ReadFull(r, buf)
	switch {
	case got == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF):
		return io.EOF
	case err != nil && err != io.EOF && err != io.ErrUnexpectedEOF:
		return err
	}
	ct, df := httpBodyFields(msg)
	if contentType != "" {
		msg.Set(ct, protoreflect.ValueOfString(contentType))
	}
	msg.Set(df, protoreflect.ValueOfBytes(buf[:got]))
	return nil
}

// uploadChunk is the size of the chunks of an upload to a client stream of
// google.api.HttpBody whose messages may take maxMsg bytes encoded: the
// data, less what the content type and the fields' tags and lengths take.
func uploadChunk(maxMsg int, contentType string) int {
	const overhead = 16 // two tags and two varint lengths, generously
	return max(maxMsg-len(contentType)-overhead, 1)
}

// decodeMultipart maps a multipart/form-data body onto msg's string and
// bytes fields, by the rules above.
func decodeMultipart(r io.Reader, boundary string, msg protoreflect.Message) error {
	if boundary == "" {
		return status.Error(codes.InvalidArgument, "gatehouse: multipart/form-data without a boundary")
	}
	fields := msg.Descriptor().Fields()
	seen := map[protoreflect.FieldNumber]bool{}
	mr := multipart.NewReader(r, boundary)
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return multipartError(err, "")
		}
		name := p.FormName()
		fd := fields.ByName(protoreflect.Name(name))
		if fd == nil {
			fd = fields.ByJSONName(name)
		}
		if fd == nil || name == "" {
			return status.Errorf(codes.InvalidArgument, "gatehouse: multipart part %q names no field of %s", name, msg.Descriptor().FullName())
		}
		isFile := p.FileName() != ""
		switch {
		case fd.IsMap() || (fd.Kind() != protoreflect.StringKind && fd.Kind() != protoreflect.BytesKind):
			return status.Errorf(codes.InvalidArgument, "gatehouse: multipart part %q: field %s is a %s; parts fill string and bytes fields only", name, fd.Name(), fd.Kind())
		case isFile && fd.Kind() != protoreflect.BytesKind:
			return status.Errorf(codes.InvalidArgument, "gatehouse: multipart part %q is a file; field %s is a string (files fill bytes fields)", name, fd.Name())
		case !isFile && fd.Kind() != protoreflect.StringKind:
			return status.Errorf(codes.InvalidArgument, "gatehouse: multipart part %q is a form field; field %s is bytes (send a file part)", name, fd.Name())
		case !fd.IsList() && seen[fd.Number()]:
			return status.Errorf(codes.InvalidArgument, "gatehouse: multipart part %q repeated; field %s is not repeated", name, fd.Name())
		}
		seen[fd.Number()] = true
		data, err := io.ReadAll(p)
		if err != nil {
			return multipartError(err, name)
		}
		var v protoreflect.Value
		if fd.Kind() == protoreflect.StringKind {
			if !utf8.Valid(data) {
				return status.Errorf(codes.InvalidArgument, "gatehouse: multipart part %q is not UTF-8", name)
			}
			v = protoreflect.ValueOfString(string(data))
		} else {
			v = protoreflect.ValueOfBytes(data)
		}
		if fd.IsList() {
			msg.Mutable(fd).List().Append(v)
		} else {
			msg.Set(fd, v)
		}
	}
}

// multipartError keeps a body over the limit as it is (restError answers
// 413) and makes anything else INVALID_ARGUMENT.
func multipartError(err error, part string) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	if part != "" {
		return status.Errorf(codes.InvalidArgument, "gatehouse: multipart part %q: %v", part, err)
	}
	return status.Errorf(codes.InvalidArgument, "gatehouse: multipart body: %v", err)
}

// rawMessage writes one chunk of a server stream of google.api.HttpBody
// (streams.go): the first sets the Content-Type.
func (s *streamWriter) rawMessage(m proto.Message) error {
	msg := m.ProtoReflect()
	if !s.started {
		s.started = true
		h := s.w.Header()
		h.Del("Content-Length")
		h.Set("Content-Type", httpBodyContentType(msg))
		h.Set("X-Content-Type-Options", "nosniff")
		s.w.WriteHeader(http.StatusOK)
	}
	s.n++
	_, df := httpBodyFields(msg)
	if _, err := s.w.Write(msg.Get(df).Bytes()); err != nil {
		return err
	}
	return s.rc.Flush()
}

// rawEnd ends a server stream of google.api.HttpBody: a failure after the
// first chunk aborts the response, so that the client cannot take a
// truncated body for the whole file.
func (s *streamWriter) rawEnd(callErr error) {
	if callErr != nil && s.started {
		panic(http.ErrAbortHandler)
	}
	if !s.started {
		s.started = true
		s.w.Header().Set("Content-Type", "application/octet-stream")
		s.w.WriteHeader(http.StatusOK)
	}
	_ = s.rc.Flush()
}
