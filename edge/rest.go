package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	iquota "github.com/gatehouse-dev/gatehouse/interceptors/quota"
	"github.com/gatehouse-dev/gatehouse/routing"
	"github.com/gatehouse-dev/gatehouse/transcode"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// hopByHop lists the HTTP headers that never become gRPC metadata: they
// describe one HTTP hop, or gRPC reserves them.
var hopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true, "te": true, "trailer": true,
	"host": true, "content-length": true, "content-type": true,
	"accept-encoding": true, "proxy-authorization": true, "proxy-authenticate": true,
}

// incomingHeader forwards REST request headers as gRPC metadata under their
// lower-case names, so that routes' metadata conditions hold for REST and
// gRPC alike; hop-by-hop, reserved (grpc-*) and pseudo headers are dropped.
func incomingHeader(key string) (string, bool) {
	k := strings.ToLower(key)
	if hopByHop[k] || strings.HasPrefix(k, "grpc-") || strings.HasPrefix(k, ":") || strings.HasPrefix(k, "x-gatehouse-") {
		// x-gatehouse-* is the gateway's own: never a client's word.
		return "", false
	}
	return k, true
}

// restAttributes passes a REST request's HTTP method, path and query to the
// router as metadata, which it trusts only on the in-process connection
// that REST calls arrive on.
func restAttributes(_ context.Context, r *http.Request) metadata.MD {
	return metadata.Pairs(
		routing.MDHTTPMethod, r.Method,
		routing.MDHTTPPath, r.URL.EscapedPath(), // metadata is printable ASCII; the router unescapes
		routing.MDHTTPQuery, r.URL.RawQuery,
	)
}

// outgoingHeader returns backend response headers to REST clients under
// their own names, except hop-by-hop and reserved ones.
func outgoingHeader(key string) (string, bool) {
	k := strings.ToLower(key)
	if hopByHop[k] || strings.HasPrefix(k, "grpc-") || strings.HasPrefix(k, ":") {
		return "", false
	}
	return key, true
}

// gatewayHeaders are the response headers the gateway itself sets: the
// quota interceptors' RateLimit-Policy, RateLimit and Retry-After. Their
// names are a standard (IETF RateLimit fields, RFC 9110 Retry-After), so
// rest.response_headers, a rule for backend metadata, neither prefixes nor
// drops them.
var gatewayHeaders = map[string]bool{
	iquota.HeaderPolicy:     true,
	iquota.HeaderRateLimit:  true,
	iquota.HeaderRetryAfter: true,
}

// responseHeaderRule is the configured rule (rest.response_headers) that
// turns backend response metadata (or trailers) into HTTP headers: never
// hop-by-hop or grpc-* keys, never the dropped ones, the rest under the
// configured prefix. The gateway's own headers (gatewayHeaders) keep their
// names whatever the rule says.
func responseHeaderRule(rule *configv1.ResponseHeaders, trailers bool) runtime.HeaderMatcherFunc {
	drop := map[string]bool{}
	for _, k := range rule.GetDrop() {
		drop[strings.ToLower(k)] = true
	}
	prefix := rule.GetPrefix()
	if trailers {
		prefix = rule.GetTrailerPrefix()
	}
	return func(key string) (string, bool) {
		if !trailers && gatewayHeaders[strings.ToLower(key)] {
			return key, true
		}
		name, ok := outgoingHeader(key)
		if !ok || drop[strings.ToLower(key)] || (trailers && rule.GetDropTrailers()) {
			return "", false
		}
		return prefix + name, true
	}
}

// newRESTMux returns a grpc-gateway mux with Gatehouse's header rules and
// error mapping: google.rpc.Status bodies, 404 for a call no route takes,
// 405 for a known path with the wrong verb, 413 for a body over the
// listener's message limit. X-HTTP-Method-Override is ignored: a client
// gets the verb it sent. extra options come last and so override these
// (shared listeners set their forwarded headers and protojson options).
func newRESTMux(extra ...runtime.ServeMuxOption) *runtime.ServeMux {
	opts := []runtime.ServeMuxOption{
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		runtime.WithMetadata(restAttributes),
		runtime.WithMetadata(clientCertMetadata), // auth.go: a verified client certificate, for "mtls" routes
		runtime.WithOutgoingHeaderMatcher(outgoingHeader),
		runtime.WithOutgoingTrailerMatcher(outgoingHeader),
		runtime.WithErrorHandler(restError),
		runtime.WithRoutingErrorHandler(routingError),
		runtime.WithDisableHTTPMethodOverride(),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}),
	}
	return runtime.NewServeMux(append(opts, extra...)...)
}

// restError writes a gRPC error as an HTTP status with a google.rpc.Status
// JSON body, using grpc-gateway's code table, with two Gatehouse cases:
// a call no route takes is 404, and a body over the size limit is 413.
func restError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if tooLarge(r) {
		writeStatus(w, m, http.StatusRequestEntityTooLarge,
			status.New(codes.ResourceExhausted, fmt.Sprintf("gatehouse: request body larger than %d bytes", bodyLimit(r))))
		return
	}
	if routing.IsOverloaded(err) { // shed by a concurrency cap (shed.go): 503, not 429
		st, _ := status.FromError(err)
		writeStatus(w, m, http.StatusServiceUnavailable, st)
		return
	}
	if routing.IsNoRoute(err) {
		st, _ := status.FromError(err)
		writeStatus(w, m, http.StatusNotFound, st)
		return
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// routingError answers a request that matches no REST path or verb.
func routingError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	var st *status.Status
	switch httpStatus {
	case http.StatusMethodNotAllowed:
		st = status.Newf(codes.Unimplemented, "gatehouse: method %s not allowed for %s", r.Method, r.URL.Path)
	case http.StatusNotFound:
		st = status.Newf(codes.NotFound, "gatehouse: no route for %s %s", r.Method, r.URL.Path)
	default:
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
		return
	}
	writeStatus(w, m, httpStatus, st)
}

func writeStatus(w http.ResponseWriter, m runtime.Marshaler, code int, st *status.Status) {
	body, err := m.Marshal(st.Proto())
	if err != nil {
		body = []byte(`{"code":13,"message":"failed to marshal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// bodyLimitKey carries a request's body limit state through its context.
type bodyLimitKey struct{}

type bodyLimitState struct {
	limit    int64
	exceeded bool
}

// limitBody caps REST request bodies at limit bytes: a declared length over
// the limit is refused at once with 413; a longer chunked body fails when it
// crosses the limit, and restError turns that into 413 too.
func limitBody(h http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A URL must decode to UTF-8: path and query values become string
		// fields, which cannot hold anything else (compiled-in handlers
		// would fail to marshal the request, a 500 for the client's error).
		if !utf8.ValidString(r.URL.Path) || !validQueryUTF8(r.URL.RawQuery) {
			writeStatus(w, &runtime.JSONPb{}, http.StatusBadRequest,
				status.New(codes.InvalidArgument, "gatehouse: the URL's path or query does not decode to UTF-8"))
			return
		}
		if r.ContentLength > limit {
			writeStatus(w, &runtime.JSONPb{}, http.StatusRequestEntityTooLarge,
				status.New(codes.ResourceExhausted, fmt.Sprintf("gatehouse: request body of %d bytes is larger than %d bytes", r.ContentLength, limit)))
			return
		}
		st := &bodyLimitState{limit: limit}
		r = r.WithContext(context.WithValue(r.Context(), bodyLimitKey{}, st))
		r.Body = &limitedBody{rc: http.MaxBytesReader(w, r.Body, limit), st: st}
		h.ServeHTTP(w, r)
	})
}

// validQueryUTF8 reports whether every query key and value decodes to
// UTF-8 (the raw query itself is ASCII when escaped).
func validQueryUTF8(raw string) bool {
	if !strings.Contains(raw, "%") {
		return utf8.ValidString(raw) // no escapes: decoding changes no byte's validity
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return true // the handlers report malformed queries themselves
	}
	for k, vs := range q {
		if !utf8.ValidString(k) {
			return false
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return false
			}
		}
	}
	return true
}

type limitedBody struct {
	rc io.ReadCloser
	st *bodyLimitState
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		b.st.exceeded = true
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

func tooLarge(r *http.Request) bool {
	st, ok := r.Context().Value(bodyLimitKey{}).(*bodyLimitState)
	return ok && st.exceeded
}

func bodyLimit(r *http.Request) int64 {
	if st, ok := r.Context().Value(bodyLimitKey{}).(*bodyLimitState); ok {
		return st.limit
	}
	return 0
}

// registerHealthRoutes adds the probes Kubernetes and load balancers use:
// GET /healthz (the process is up) and GET /readyz (200 while the overall
// grpc.health.v1 status is SERVING, else 503, with a JSON body naming the
// backends that have no healthy endpoint; see readyProbe in health.go).
// Both ask the health service over the in-process connection, so they pass
// through the interceptor chain; unhealthy names the backends /readyz
// lists.
func registerHealthRoutes(mux *runtime.ServeMux, hc healthpb.HealthClient, unhealthy func() []string) error {
	if err := mux.HandlePath(http.MethodGet, "/healthz", liveProbe(hc)); err != nil {
		return err
	}
	return mux.HandlePath(http.MethodGet, "/readyz", readyProbe(hc, unhealthy))
}

// registerOpenAPI serves the OpenAPI 3.1 document of the runtime schemas'
// REST mapping: GET /openapi.json for every backend, GET
// /openapi/<backend>.json for one. It is generated from the schemas in
// force at each request, with the listener's JSON options.
func registerOpenAPI(mux *runtime.ServeMux, g *Gateway) error {
	serve := func(w http.ResponseWriter, r *http.Request, backend string) {
		set := g.Schemas()
		if backend != "" {
			if _, ok := set.Schema(backend); !ok {
				writeStatus(w, &runtime.JSONPb{}, http.StatusNotFound,
					status.Newf(codes.NotFound, "gatehouse: no schema for backend %q", backend))
				return
			}
		}
		rc := g.Config().GetRest()
		doc := transcode.OpenAPI(set, transcode.OpenAPIOptions{
			Title:         "Gatehouse REST API",
			Version:       "1",
			UseProtoNames: rc.GetUseProtoNames(),
			EnumsAsInts:   rc.GetEnumsAsInts(),
			Backend:       backend,
		})
		body, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			writeStatus(w, &runtime.JSONPb{}, http.StatusInternalServerError, status.New(codes.Internal, err.Error()))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(body, '\n'))
	}
	if err := mux.HandlePath(http.MethodGet, "/openapi.json", func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		serve(w, r, "")
	}); err != nil {
		return err
	}
	return mux.HandlePath(http.MethodGet, "/openapi/{file}", func(w http.ResponseWriter, r *http.Request, p map[string]string) {
		name, ok := strings.CutSuffix(p["file"], ".json")
		if !ok || name == "" {
			routingError(r.Context(), mux, &runtime.JSONPb{}, w, r, http.StatusNotFound)
			return
		}
		serve(w, r, name)
	})
}
