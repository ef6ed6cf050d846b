package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gatehouse-dev/gatehouse/transcode"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// REST server streams a browser can read. A server-streaming method is
// served on its REST paths (its google.api.http rules, and POST or GET
// /pkg.Service/Method) in the format the Accept header asks for:
//
//   - application/x-ndjson (the default): one JSON message per line; a
//     stream that fails ends with a line {"error": google.rpc.Status};
//   - text/event-stream: Server-Sent Events, one "data:" event per
//     message; a failure is an "event: error" whose data is the
//     google.rpc.Status, a success ends with an "event: end" (so that an
//     EventSource closes instead of reconnecting);
//   - application/json: one JSON array; a failure is its last element,
//     {"error": google.rpc.Status}.
//
// The response starts with the first message: a call that fails before it
// gets a real HTTP status (404, 400, 503, ...) with a google.rpc.Status
// body, as a unary REST call does.
//
// The request message is built from the JSON body (the rule's body field,
// "*" for the automatic POST), path parameters and query parameters. The
// call goes through the listener's in-process connection, with the HTTP
// method, path and query as REST metadata: same chain, same routes.

// stream formats
const (
	formatNDJSON = iota
	formatSSE
	formatJSONArray
)

// streamMux finds the browser-stream handler of a request: server streams
// on their REST paths, and WebSocket upgrades on any streaming method's.
// Anything else falls through to REST.
type streamMux struct {
	streams *runtime.ServeMux
	sockets *runtime.ServeMux
}

func (m *streamMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isWebSocketUpgrade(r) {
		m.sockets.ServeHTTP(w, r)
		return
	}
	m.streams.ServeHTTP(w, r)
}

// RefreshStreamMethods rebuilds every shared listener's table of browser
// streams from the StreamMethods source (WithStreamMethods). A runtime
// schema source calls it after the schemas change.
func (g *Gateway) RefreshStreamMethods() error {
	g.mu.Lock()
	servers := append([]*server(nil), g.servers...)
	g.mu.Unlock()
	var errs []error
	for _, s := range servers {
		if s.browser != nil {
			errs = append(errs, s.browser.refreshStreams())
		}
	}
	return errors.Join(errs...)
}

// compiledStreamMethods lists the streaming methods of every service in
// protoregistry.GlobalFiles: those compiled into the binary.
func compiledStreamMethods() []protoreflect.MethodDescriptor {
	var out []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			ms := fd.Services().Get(i).Methods()
			for j := 0; j < ms.Len(); j++ {
				if m := ms.Get(j); m.IsStreamingClient() || m.IsStreamingServer() {
					out = append(out, m)
				}
			}
		}
		return true
	})
	return out
}

// restRule is one REST binding of a method.
type restRule struct {
	method, path, body string
}

// restRules returns a method's REST bindings: its google.api.http rules
// with their additional bindings, then POST /pkg.Service/Method (body "*")
// and GET /pkg.Service/Method.
func restRules(m protoreflect.MethodDescriptor) []restRule {
	var rules []restRule
	var add func(*annotations.HttpRule)
	add = func(h *annotations.HttpRule) {
		var r restRule
		switch p := h.GetPattern().(type) {
		case *annotations.HttpRule_Get:
			r = restRule{http.MethodGet, p.Get, ""}
		case *annotations.HttpRule_Post:
			r = restRule{http.MethodPost, p.Post, h.GetBody()}
		case *annotations.HttpRule_Put:
			r = restRule{http.MethodPut, p.Put, h.GetBody()}
		case *annotations.HttpRule_Patch:
			r = restRule{http.MethodPatch, p.Patch, h.GetBody()}
		case *annotations.HttpRule_Delete:
			r = restRule{http.MethodDelete, p.Delete, h.GetBody()}
		case *annotations.HttpRule_Custom:
			r = restRule{p.Custom.GetKind(), p.Custom.GetPath(), h.GetBody()}
		}
		if r.path != "" {
			rules = append(rules, r)
		}
		for _, ab := range h.GetAdditionalBindings() {
			add(ab)
		}
	}
	if opts := m.Options(); opts != nil && proto.HasExtension(opts, annotations.E_Http) {
		if h, ok := proto.GetExtension(opts, annotations.E_Http).(*annotations.HttpRule); ok && h != nil {
			add(h)
		}
	}
	full := "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
	rules = append(rules, restRule{http.MethodPost, full, "*"}, restRule{http.MethodGet, full, ""})
	return rules
}

// refreshStreams rebuilds the stream table from the StreamMethods source.
func (b *browser) refreshStreams() error {
	src := b.g.opts.browser.streamMethods
	if src == nil {
		src = compiledStreamMethods
	}
	fallthrough_ := func(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, _ int) {
		b.rest.ServeHTTP(w, r)
	}
	newMux := func() *runtime.ServeMux {
		return runtime.NewServeMux(
			runtime.WithRoutingErrorHandler(fallthrough_),
			runtime.WithDisableHTTPMethodOverride(),
			runtime.WithDisablePathLengthFallback(),
		)
	}
	m := &streamMux{streams: newMux(), sockets: newMux()}
	for _, md := range src() {
		if !md.IsStreamingClient() && !md.IsStreamingServer() {
			continue
		}
		full := "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
		noAuto := b.noAutoMapping(full)
		seen := map[string]bool{}
		for _, rule := range restRules(md) {
			if noAuto && rule.path == full {
				continue // backends[].schema.auto_mapping: false
			}
			if md.IsStreamingClient() && isHTTPBody(md.Input()) && rule.body != "" {
				if err := m.streams.HandlePath(rule.method, rule.path, b.uploadHandler); err != nil {
					b.g.log.Warn("upload path ignored", "method", full, "path", rule.path, "error", err)
				}
			}
			if md.IsStreamingServer() && !md.IsStreamingClient() {
				if err := m.streams.HandlePath(rule.method, rule.path, b.serverStreamHandler(md, full, rule)); err != nil {
					b.g.log.Warn("browser stream path ignored", "method", full, "path", rule.path, "error", err)
				}
			}
			if seen[rule.path] {
				continue
			}
			seen[rule.path] = true
			if err := m.sockets.HandlePath(http.MethodGet, rule.path, b.socketHandler(md, full)); err != nil {
				b.g.log.Warn("websocket path ignored", "method", full, "path", rule.path, "error", err)
			}
		}
	}
	b.streams.Store(m)
	return nil
}

// noAutoMapping reports whether a method comes from the runtime schema of a
// backend whose auto_mapping is off: its POST and GET /pkg.Service/Method
// paths are then not served, as REST does not serve them.
func (b *browser) noAutoMapping(full string) bool {
	set := b.g.Schemas()
	m, ok := set.Method(full)
	if !ok {
		return false
	}
	s, ok := set.Schema(m.Backend)
	return ok && !s.AutoMapping
}

// uploadHandler serves an upload to a client stream of google.api.HttpBody
// (bodies.go): the listener's REST handler, without the body limit of
// every other REST request (the body goes in chunks of at most
// max_message_bytes), its decoder told the chunk size.
func (b *browser) uploadHandler(w http.ResponseWriter, r *http.Request, _ map[string]string) {
	h := b.g.restHandlerFor(b.conn)
	if h == nil || r.Body == nil || r.Body == http.NoBody {
		b.rest.ServeHTTP(w, r)
		return
	}
	ct := r.Header.Get("Content-Type")
	r2 := r.WithContext(r.Context()) // net/http keeps the original's Body
	r2.Body = &typedBody{ReadCloser: r.Body, contentType: ct, chunk: uploadChunk(b.maxMsg, ct)}
	h.ServeHTTP(w, r2)
}

// jsonOptions are the REST JSON options in force (config rest block).
func (b *browser) jsonOptions() (protojson.MarshalOptions, protojson.UnmarshalOptions) {
	rc := b.g.Config().GetRest()
	types := b.g.Schemas().Types() // google.protobuf.Any of runtime-schema types too
	return protojson.MarshalOptions{
		EmitUnpopulated: rc.GetEmitUnpopulated(),
		UseProtoNames:   rc.GetUseProtoNames(),
		UseEnumNumbers:  rc.GetEnumsAsInts(),
		Resolver:        types,
	}, protojson.UnmarshalOptions{Resolver: types}
}

// requestMessage builds a method's request from an HTTP request: the
// body (into body field, or the whole message for "*"), path and query
// parameters.
func (b *browser) requestMessage(r *http.Request, md protoreflect.MethodDescriptor, rule restRule, params map[string]string) (proto.Message, error) {
	req := dynamicpb.NewMessage(md.Input())
	_, um := b.jsonOptions()
	if rule.body != "" && r.Body != nil {
		data, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, int64(b.maxMsg)))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, status.Errorf(codes.ResourceExhausted, "gatehouse: request body larger than %d bytes", b.maxMsg)
			}
			return nil, status.Errorf(codes.InvalidArgument, "gatehouse: reading body: %v", err)
		}
		if len(strings.TrimSpace(string(data))) > 0 {
			if rule.body != "*" {
				fd := md.Input().Fields().ByName(protoreflect.Name(rule.body))
				if fd == nil {
					return nil, status.Errorf(codes.Internal, "gatehouse: body field %q not in %s", rule.body, md.Input().FullName())
				}
				data = []byte(`{` + strconv.Quote(fd.JSONName()) + `:` + string(data) + `}`)
			}
			if err := um.Unmarshal(data, req); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "gatehouse: request body: %v", err)
			}
		}
	}
	// Path and query parameters as the REST handlers set them, enums of
	// runtime schemas included.
	var query url.Values
	if rule.body != "*" {
		query = r.URL.Query()
	}
	if err := transcode.PopulateParams(req, params, query, rule.body); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "gatehouse: %v", err)
	}
	return req, nil
}

// negotiateStream picks the stream format from an Accept header: the
// supported type with the highest q, in the order listed on ties; NDJSON
// when none is named.
func negotiateStream(accept string) int {
	best, bestQ := formatNDJSON, -1.0
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if v, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		f := -1
		switch mt {
		case "application/x-ndjson", "application/jsonl", "application/ndjson":
			f = formatNDJSON
		case "text/event-stream":
			f = formatSSE
		case "application/json":
			f = formatJSONArray
		}
		if f >= 0 && q > bestQ && q > 0 {
			best, bestQ = f, q
		}
	}
	return best
}

// restMetadata is the metadata of a REST stream's in-process call: that of
// any browser call (callMetadata), with the request's headers forwarded by
// the REST rules (Gateway.forwardedHeader: the rest.forward_headers
// allowlist, the client's User-Agent as x-forwarded-user-agent), so that a
// server stream carries what a unary REST call carries. Authorization
// always goes, as grpc-gateway forwards it.
func (b *browser) restMetadata(r *http.Request) metadata.MD {
	md := callMetadata(r, true)
	forwarded := metadata.MD{}
	for k := range r.Header {
		key, ok := incomingHeader(k)
		if !ok || key == "authorization" || key == "x-forwarded-for" || key == "x-forwarded-host" {
			continue
		}
		if name, ok := b.g.forwardedHeader(k); ok && len(md[key]) > 0 {
			forwarded[name] = md[key]
		}
		delete(md, key) // forwarded only under its forwarded name
	}
	for k, vs := range forwarded {
		md[k] = vs
	}
	return md
}

// streamError answers a REST stream that failed before its first message
// as the REST handlers answer a failed call (restError, with the
// listener's REST mux): the HTTP status of its code (404 for no route, 503
// when shed), a google.rpc.Status body, and for UNAUTHENTICATED the
// WWW-Authenticate challenge that grpc-gateway's error handler copies from
// the status message (which the auth interceptor makes the challenge).
// Response headers are the caller's to have set already.
func (b *browser) streamError(w http.ResponseWriter, r *http.Request, err error) {
	h := b.g.restHandlerFor(b.conn)
	if h == nil {
		st := status.Convert(err)
		writeStatus(w, &runtime.JSONPb{}, runtime.HTTPStatusFromCode(st.Code()), st)
		return
	}
	// Empty server metadata: the headers are set, and grpc-gateway logs
	// an error when there is none.
	ctx := runtime.NewServerMetadataContext(r.Context(), runtime.ServerMetadata{})
	restError(ctx, h.mux.Load(), &runtime.JSONPb{}, w, r, err)
}

func (b *browser) serverStreamHandler(md protoreflect.MethodDescriptor, full string, rule restRule) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		b.serveServerStream(w, r, md, full, rule, params)
	}
}

func (b *browser) serveServerStream(w http.ResponseWriter, r *http.Request, md protoreflect.MethodDescriptor, full string, rule restRule, params map[string]string) {
	format := negotiateStream(r.Header.Get("Accept"))
	req, err := b.requestMessage(r, md, rule, params)
	if err != nil {
		if st := status.Convert(err); st.Code() == codes.ResourceExhausted { // the body limit
			writeStatus(w, &runtime.JSONPb{}, http.StatusRequestEntityTooLarge, st)
			return
		}
		b.streamError(w, r, err)
		return
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(r.Context(), b.restMetadata(r)))
	defer cancel()
	cs, err := b.conn.NewStream(ctx, &bidiDesc, full, grpc.ForceCodecV2(b.codec))
	if err == nil {
		if err = cs.SendMsg(req); err == io.EOF {
			err = nil // the call ended; RecvMsg has its status
		}
		_ = cs.CloseSend()
	}
	sw := &streamWriter{w: w, rc: http.NewResponseController(w), format: format, raw: isHTTPBody(md.Output())}
	sw.mo, _ = b.jsonOptions()
	for err == nil {
		resp := dynamicpb.NewMessage(md.Output())
		if err = cs.RecvMsg(resp); err != nil {
			break
		}
		if !sw.started {
			hdr, _ := cs.Header()
			responseHeader(w.Header(), hdr)
		}
		if werr := sw.message(resp); werr != nil {
			return // the client is gone; cancel ends the call
		}
	}
	if err == io.EOF {
		err = nil
	}
	if err != nil && !sw.started {
		if cs != nil {
			if hdr, _ := cs.Header(); hdr != nil {
				responseHeader(w.Header(), hdr)
			}
		}
		b.streamError(w, r, err)
		return
	}
	sw.end(err)
}

// streamWriter writes a REST server stream in one format.
type streamWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	format  int
	mo      protojson.MarshalOptions
	started bool
	n       int
	raw     bool // google.api.HttpBody chunks, written as one binary body (bodies.go)
}

func (s *streamWriter) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Del("Content-Length")
	switch s.format {
	case formatSSE:
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
	case formatJSONArray:
		h.Set("Content-Type", "application/json")
	default:
		h.Set("Content-Type", "application/x-ndjson")
	}
	h.Set("X-Content-Type-Options", "nosniff")
	s.w.WriteHeader(http.StatusOK)
	if s.format == formatJSONArray {
		_, _ = io.WriteString(s.w, "[")
	}
}

func (s *streamWriter) message(m proto.Message) error {
	if s.raw {
		return s.rawMessage(m)
	}
	data, err := s.mo.Marshal(m)
	if err != nil {
		return err
	}
	s.start()
	var buf []byte
	switch s.format {
	case formatSSE:
		buf = append(append(append(buf, "data: "...), data...), "\n\n"...)
	case formatJSONArray:
		if s.n > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, data...)
	default:
		buf = append(append(buf, data...), '\n')
	}
	s.n++
	if _, err := s.w.Write(buf); err != nil {
		return err
	}
	return s.rc.Flush()
}

// end ends the stream with its outcome: nil for success.
func (s *streamWriter) end(callErr error) {
	if s.raw {
		s.rawEnd(callErr)
		return
	}
	s.start()
	var stJSON []byte
	if callErr != nil {
		st := status.Convert(callErr)
		var err error
		if stJSON, err = protojson.Marshal(st.Proto()); err != nil {
			stJSON = []byte(fmt.Sprintf(`{"code":%d,"message":%q}`, st.Code(), st.Message()))
		}
	}
	var tail string
	switch {
	case s.format == formatSSE && callErr != nil:
		tail = "event: error\ndata: " + string(stJSON) + "\n\n"
	case s.format == formatSSE:
		tail = "event: end\ndata: {}\n\n"
	case s.format == formatJSONArray && callErr != nil:
		if s.n > 0 {
			tail = ","
		}
		tail += `{"error":` + string(stJSON) + `}]`
	case s.format == formatJSONArray:
		tail = "]"
	case callErr != nil:
		tail = `{"error":` + string(stJSON) + "}\n"
	}
	if tail != "" {
		_, _ = io.WriteString(s.w, tail)
	}
	_ = s.rc.Flush()
}
