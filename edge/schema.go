package edge

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"buf.build/go/protovalidate"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/interceptors/validate"
	"github.com/gatehouse-dev/gatehouse/transcode"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Runtime schemas: what the gateway knows of its backends' protos at run
// time (backends[].schema: a descriptor set file or server reflection), and
// what it serves from them on every shared listener: REST routes for their
// google.api.http annotations (and auto-mapped POST /pkg.Service/Method),
// protovalidate checks at the edge, reflection, and an OpenAPI document.
//
// A transcode.Manager loads the schemas at Start, again on every config
// reload, and refreshes reflection sources on their interval; each change
// rebuilds every shared listener's REST mux (compiled-in handlers, runtime
// handlers, /openapi.json) and swaps it in atomically. A schema that fails
// to load is logged naming the backend, and the backend's last good schema
// keeps serving.

// defaultFetchTimeout bounds one reflection fetch.
const defaultFetchTimeout = 5 * time.Second

// schemaState is the runtime-schema state of a Gateway.
type schemaState struct {
	mgr *transcode.Manager

	mu    sync.Mutex     // guards rests, and serializes rebuilds
	rests []*restHandler // one per shared listener

	headers atomic.Pointer[map[string]bool]  // REST headers forwarded as metadata
	checks  atomic.Pointer[schemaValidation] // validation of runtime-schema methods
	inStart atomic.Bool                      // the first load, from Start, which holds g.mu
}

// schemaValidation validates the requests of the methods of one Set. Each
// Set gets a new protovalidate.Validator, whose cache of compiled rules is
// then bounded by that Set's descriptors.
type schemaValidation struct {
	set    *transcode.Set
	stream grpc.StreamServerInterceptor
}

// initSchemas sets up the schema manager; New calls it.
func (g *Gateway) initSchemas(cfg *configv1.Config) {
	g.schema.mgr = transcode.NewManager(g.pool.Conn,
		transcode.WithLogger(g.log),
		transcode.WithFetchTimeout(defaultFetchTimeout),
		transcode.WithOnChange(g.schemasChanged),
	)
	g.schema.headers.Store(forwardHeaders(cfg))
	if g.opts.browser.streamMethods == nil {
		// Browser streams (streams.go) of runtime-schema methods too.
		g.opts.browser.streamMethods = g.streamMethods
	}
	g.schemasChanged(g.schema.mgr.Set())
}

// streamMethods lists the streaming methods of the compiled-in services and
// of the runtime schemas, the latter last so that their paths win.
func (g *Gateway) streamMethods() []protoreflect.MethodDescriptor {
	set := g.Schemas()
	var out []protoreflect.MethodDescriptor
	for _, md := range compiledStreamMethods() {
		if _, ok := set.Method("/" + string(md.Parent().FullName()) + "/" + string(md.Name())); !ok {
			out = append(out, md)
		}
	}
	for _, m := range set.Methods() {
		if m.Desc.IsStreamingClient() || m.Desc.IsStreamingServer() {
			out = append(out, m.Desc)
		}
	}
	return out
}

// startSchemas loads the schemas of cfg's backends; Start calls it once the
// listeners are built. Load errors are logged; they do not stop the start.
func (g *Gateway) startSchemas(ctx context.Context) {
	g.schema.inStart.Store(true)
	defer g.schema.inStart.Store(false)
	_ = g.schema.mgr.Update(ctx, schemaSources(g.Config()))
}

// reloadSchemas applies a reloaded config: the forwarded headers, and the
// schema sources, reread now.
func (g *Gateway) reloadSchemas(ctx context.Context, cfg *configv1.Config) {
	g.schema.headers.Store(forwardHeaders(cfg))
	_ = g.schema.mgr.Update(ctx, schemaSources(cfg))
}

// closeSchemas stops the schema refresh loops.
func (g *Gateway) closeSchemas() { g.schema.mgr.Close() }

// Schemas returns the runtime schemas in force.
func (g *Gateway) Schemas() *transcode.Set { return g.schema.mgr.Set() }

// SchemaErrors returns the last load error of each backend whose schema
// failed to load, by backend.
func (g *Gateway) SchemaErrors() map[string]error { return g.schema.mgr.Errors() }

// schemaSources turns cfg's backends[].schema into sources.
func schemaSources(cfg *configv1.Config) []transcode.Source {
	var out []transcode.Source
	for _, b := range cfg.GetBackends() {
		s := b.GetSchema()
		if s == nil || (s.GetDescriptorSet() == "" && s.GetReflection() == nil) {
			continue
		}
		src := transcode.Source{
			Backend:       b.GetName(),
			DescriptorSet: s.GetDescriptorSet(),
			AutoMapping:   s.AutoMapping == nil || s.GetAutoMapping(),
		}
		if r := s.GetReflection(); r != nil && src.DescriptorSet == "" {
			src.Reflection = true
			src.RefreshInterval = 30 * time.Second
			if d := r.GetRefreshInterval(); d != nil {
				src.RefreshInterval = d.AsDuration()
			}
		}
		out = append(out, src)
	}
	return out
}

// schemasChanged puts a new Set in force: validation first, then every
// shared listener's REST mux.
func (g *Gateway) schemasChanged(set *transcode.Set) {
	v, err := protovalidate.New()
	if err != nil {
		g.log.Error("schema: validator", "error", err)
		return
	}
	g.schema.checks.Store(&schemaValidation{
		set:    set,
		stream: validate.StreamServerInterceptor(v, validate.WithRequestTypes(set.RequestType)),
	})
	g.schema.mu.Lock()
	for _, h := range g.schema.rests {
		if err := h.rebuild(set); err != nil {
			g.log.Error("schema: REST routes not rebuilt; the previous ones keep serving", "error", err)
		}
	}
	g.schema.mu.Unlock()
	g.refreshBrowserStreams()
}

// refreshBrowserStreams rebuilds the browser stream tables (streams.go)
// after a schema change.
func (g *Gateway) refreshBrowserStreams() {
	var err error
	if g.schema.inStart.Load() {
		// Called from Start, which holds g.mu: refresh its servers here.
		for _, s := range g.servers {
			if s.browser != nil {
				err = errors.Join(err, s.browser.refreshStreams())
			}
		}
	} else {
		err = g.RefreshStreamMethods()
	}
	if err != nil {
		g.log.Error("schema: browser streams not rebuilt", "error", err)
	}
}

// validateStream is the chain's validate interceptor. Compiled-in methods
// are validated as always. Methods a runtime schema defines are validated
// against it when the call came in as REST (the in-process connection), and
// for native gRPC when the route that takes the call sets
// validate_requests (it costs a decode).
func (g *Gateway) validateStream() grpc.StreamServerInterceptor {
	compiled := validate.StreamServerInterceptor(g.validator, validate.WithRequestTypes(compiledInRequestType))
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if sv := g.schema.checks.Load(); sv != nil {
			if _, ok := sv.set.Method(info.FullMethod); ok && (viaREST(ss.Context()) || g.routeValidates(ss.Context(), info.FullMethod)) {
				return sv.stream(srv, ss, info, handler)
			}
		}
		return compiled(srv, ss, info, handler)
	}
}

// viaREST reports whether a call came over a listener's in-process
// connection, which carries transcoded REST calls.
func viaREST(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	return ok && p.Addr != nil && p.Addr.Network() == "bufconn"
}

// routeValidates reports whether the route that takes the call asks for
// validation of native gRPC requests.
func (g *Gateway) routeValidates(ctx context.Context, fullMethod string) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	r, ok := g.router.Table().Match(fullMethod, md)
	return ok && r.Config.GetValidateRequests()
}

// requestType resolves the request type of a method from the runtime
// schemas, then from the compiled-in ones.
func (g *Gateway) requestType(fullMethod string) (protoreflect.MessageType, bool) {
	if mt, ok := g.Schemas().RequestType(fullMethod); ok {
		return mt, true
	}
	return compiledInRequestType(fullMethod)
}

// restHandler is a shared listener's REST handler: a grpc-gateway mux
// rebuilt whenever the schemas change, swapped in atomically.
type restHandler struct {
	g    *Gateway
	ctx  context.Context // for the compiled-in registrars
	conn *grpc.ClientConn
	mux  atomic.Pointer[runtime.ServeMux]
}

func (h *restHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.Load().ServeHTTP(w, withTypedBody(r)) // bodies.go: HttpBody and multipart decoding needs the Content-Type
}

// newRESTHandler builds the REST handler of a shared listener whose
// in-process connection is conn.
func (g *Gateway) newRESTHandler(ctx context.Context, conn *grpc.ClientConn) (*restHandler, error) {
	h := &restHandler{g: g, ctx: context.WithoutCancel(ctx), conn: conn}
	g.schema.mu.Lock()
	defer g.schema.mu.Unlock()
	if err := h.rebuild(g.Schemas()); err != nil {
		return nil, err
	}
	g.schema.rests = append(g.schema.rests, h)
	return h, nil
}

// restHandlerFor returns the REST handler of the shared listener whose
// in-process connection is conn, nil when there is none.
func (g *Gateway) restHandlerFor(conn *grpc.ClientConn) *restHandler {
	g.schema.mu.Lock()
	defer g.schema.mu.Unlock()
	for _, h := range g.schema.rests {
		if h.conn == conn {
			return h
		}
	}
	return nil
}

// rebuild builds a new mux for set and swaps it in. Registration order sets
// precedence (grpc-gateway tries the last registered first): /openapi.json,
// then compiled-in services, then runtime schemas, so that a backend's
// live schema wins over the compiled-in copy of the same API.
func (h *restHandler) rebuild(set *transcode.Set) error {
	g := h.g
	mux := newRESTMux(g.restMuxOptions(set)...)
	if err := registerOpenAPI(mux, g); err != nil {
		return err
	}
	for _, reg := range g.opts.rest {
		if err := reg(h.ctx, mux, h.conn); err != nil {
			return err
		}
	}
	transcode.Register(mux, h.conn, set, transcode.HandlerOptions{
		StrictQuery: g.Config().GetRest().GetStrictQuery(),
		OnError: func(method string, err error) {
			g.log.Warn("schema: REST binding skipped", "method", method, "error", err)
		},
	})
	h.mux.Store(mux)
	return nil
}

// restMuxOptions are a shared listener's REST options: the forwarded
// headers and the protojson options of Config.rest, with a type resolver
// that knows the runtime schemas (for google.protobuf.Any).
func (g *Gateway) restMuxOptions(set *transcode.Set) []runtime.ServeMuxOption {
	rc := g.Config().GetRest()
	types := set.Types()
	return []runtime.ServeMuxOption{
		runtime.WithIncomingHeaderMatcher(g.forwardedHeader),
		runtime.WithOutgoingHeaderMatcher(responseHeaderRule(rc.GetResponseHeaders(), false)),
		runtime.WithOutgoingTrailerMatcher(responseHeaderRule(rc.GetResponseHeaders(), true)),
		// JSON, with google.api.HttpBody and multipart/form-data bodies
		// (bodies.go).
		runtime.WithMarshalerOption(runtime.MIMEWildcard, newBodyMarshaler(&runtime.JSONPb{
			MarshalOptions: protojson.MarshalOptions{
				EmitUnpopulated: rc.GetEmitUnpopulated(),
				UseProtoNames:   rc.GetUseProtoNames(),
				UseEnumNumbers:  rc.GetEnumsAsInts(),
				Resolver:        types,
			},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false, Resolver: types},
		})),
	}
}

// forwardedHeader forwards the allowlisted REST request headers as gRPC
// metadata under their lower-case names; never hop-by-hop, reserved
// (grpc-*), pseudo or the gateway's own (x-gatehouse-*) headers.
//
// Two headers take another way. grpc-gateway itself always forwards
// Authorization (whatever the allowlist says) and derives x-forwarded-for
// and x-forwarded-host from the request, so the matcher leaves them to it:
// forwarding them here too would send every value twice. User-Agent is
// reserved by gRPC, which sets its own on every hop (the in-process one
// included), so the client's goes as x-forwarded-user-agent.
func (g *Gateway) forwardedHeader(key string) (string, bool) {
	k, ok := incomingHeader(key)
	if !ok || k == "authorization" || k == ForwardedUserAgent {
		// x-forwarded-user-agent is the gateway's word, never the client's.
		return "", false
	}
	if allow := g.schema.headers.Load(); allow != nil && (*allow)[k] {
		if k == "user-agent" {
			return ForwardedUserAgent, true
		}
		return k, true
	}
	return "", false
}

// ForwardedUserAgent is the metadata key that carries a REST client's
// User-Agent header to the chain and the backend (when user-agent is in
// rest.forward_headers, as it is by default): gRPC reserves user-agent for
// its own on every hop.
const ForwardedUserAgent = "x-forwarded-user-agent"

// defaultForwardHeaders are forwarded unless Config.rest.forward_headers
// says otherwise.
var defaultForwardHeaders = []string{
	"authorization", "x-request-id", "traceparent", "tracestate", "baggage",
	"accept-language", "user-agent", "x-forwarded-for",
}

// celMetadataRef finds metadata["key"] in CEL expressions.
var celMetadataRef = regexp.MustCompile(`metadata\[\s*["']([^"']+)["']\s*\]`)

// forwardHeaders returns the REST headers forwarded as metadata: the
// configured list (or the default one), plus every header the config reads
// from a call: routes' metadata and header conditions, metadata keys named
// in CEL expressions (match.cel, sticky_key, quota keys, auth rules), and
// the headers credentials are read from. Without them, routes and policies
// that hold for a gRPC call would not hold for the same call made as REST.
func forwardHeaders(cfg *configv1.Config) *map[string]bool {
	allow := map[string]bool{}
	list := cfg.GetRest().GetForwardHeaders()
	if len(list) == 0 {
		list = defaultForwardHeaders
	}
	for _, h := range list {
		allow[strings.ToLower(h)] = true
	}
	walkConfig(cfg.ProtoReflect(), "", func(parent protoreflect.Message, field protoreflect.FieldDescriptor, v string) {
		switch {
		case field.Name() == "name" && parent.Descriptor().Name() == "MetadataMatch":
			allow[strings.ToLower(v)] = true
		case field.Name() == "header":
			allow[strings.ToLower(v)] = true
		}
		for _, m := range celMetadataRef.FindAllStringSubmatch(v, -1) {
			allow[strings.ToLower(m[1])] = true
		}
	}, func(m protoreflect.Message) {
		if m.Descriptor().Name() == "ApiKeySet" {
			allow["x-api-key"] = true // its default header
		}
	})
	return &allow
}

// walkConfig calls str for every string value in m (in lists and maps
// too), and msg for every message; claims matches are skipped (their names
// are claims, not headers).
func walkConfig(m protoreflect.Message, _ string, str func(protoreflect.Message, protoreflect.FieldDescriptor, string), msg func(protoreflect.Message)) {
	msg(m)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() == "claims" {
			return true
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if fd.Message() != nil {
					walkConfig(l.Get(i).Message(), "", str, msg)
				} else if fd.Kind() == protoreflect.StringKind {
					str(m, fd, l.Get(i).String())
				}
			}
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.StringKind {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					str(m, fd, mv.String())
					return true
				})
			}
		case fd.Message() != nil:
			walkConfig(v.Message(), "", str, msg)
		case fd.Kind() == protoreflect.StringKind:
			str(m, fd, v.String())
		}
		return true
	})
}

// sortedHeaders lists an allowlist, for logs and tests.
func sortedHeaders(allow map[string]bool) []string {
	out := make([]string, 0, len(allow))
	for h := range allow {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}
