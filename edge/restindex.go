package edge

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gatehouse-dev/gatehouse/transcode"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// restIndex resolves a REST request (HTTP method and URL path) to the gRPC
// method it calls, before the call is made: CORS preflights and WebSocket
// origin checks need the method to find the route whose policy applies,
// since routes are matched on service and method.
//
// It holds the REST bindings of every method the shared listeners serve:
// the google.api.http rules (and additional bindings) of the services
// compiled into the binary, then those of the runtime schemas, and the
// /pkg.Service/Method paths of streaming methods (browser streams) and of
// auto-mapped runtime methods. The bindings are matched by a grpc-gateway
// ServeMux registered in the same order as the REST mux (restHandler.rebuild),
// so that a path resolves as the REST mux would route it: a runtime
// schema's binding wins over a compiled-in one for the same path.
type restIndex struct {
	set *transcode.Set // the runtime schemas it was built from
	mux *runtime.ServeMux
}

// restIndexCache holds a shared listener's restIndex, rebuilt when the
// runtime schemas change (a new transcode.Set); nothing needs to call it on
// a schema change.
type restIndexCache struct {
	cur atomic.Pointer[restIndex]
	mu  sync.Mutex // serializes rebuilds
}

// resolvedKey carries the resolved method out of the index's handlers.
type resolvedKey struct{}

// resolved is where an index handler writes what it matched.
type resolved struct {
	method string
	params map[string]string
}

// index returns the REST index for the Gateway's current runtime schemas,
// building it when they changed since the last call (a new Set).
func (c *restIndexCache) index(g *Gateway) *restIndex {
	set := g.Schemas()
	if x := c.cur.Load(); x != nil && x.set == set {
		return x
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if x := c.cur.Load(); x != nil && x.set == set {
		return x
	}
	x := newRESTIndex(set, compiledMethods(), func(full, path string, err error) {
		g.log.Debug("rest index: binding skipped", "method", full, "path", path, "error", err)
	})
	c.cur.Store(x)
	return x
}

// compiledMethods lists every method of every service compiled into the
// binary (protoregistry.GlobalFiles).
func compiledMethods() []protoreflect.MethodDescriptor {
	var out []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			ms := fd.Services().Get(i).Methods()
			for j := 0; j < ms.Len(); j++ {
				out = append(out, ms.Get(j))
			}
		}
		return true
	})
	return out
}

// newRESTIndex builds the index of the compiled-in methods, then of set's
// (registered last, so they win). skipped is told of bindings whose path
// template does not parse.
func newRESTIndex(set *transcode.Set, compiled []protoreflect.MethodDescriptor, skipped func(full, path string, err error)) *restIndex {
	noop := func(context.Context, *runtime.ServeMux, runtime.Marshaler, http.ResponseWriter, *http.Request, int) {}
	mux := runtime.NewServeMux(
		runtime.WithRoutingErrorHandler(noop),
		runtime.WithErrorHandler(func(context.Context, *runtime.ServeMux, runtime.Marshaler, http.ResponseWriter, *http.Request, error) {
		}),
		runtime.WithDisableHTTPMethodOverride(),
		runtime.WithDisablePathLengthFallback(),
	)
	add := func(md protoreflect.MethodDescriptor, autoMapped bool) {
		full := "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
		streaming := md.IsStreamingClient() || md.IsStreamingServer()
		h := func(_ http.ResponseWriter, r *http.Request, params map[string]string) {
			if res, ok := r.Context().Value(resolvedKey{}).(*resolved); ok {
				res.method, res.params = full, params
			}
		}
		for _, rule := range restRules(md) {
			if rule.path == full && !streaming && !autoMapped {
				continue // served as REST only when streaming or auto-mapped
			}
			if err := mux.HandlePath(rule.method, rule.path, h); err != nil && skipped != nil {
				skipped(full, rule.path, err)
			}
			if streaming && rule.method != http.MethodGet {
				// WebSocket upgrades (GET) on every path of a streaming
				// method (streams.go).
				if err := mux.HandlePath(http.MethodGet, rule.path, h); err != nil && skipped != nil {
					skipped(full, rule.path, err)
				}
			}
		}
	}
	var runtimeSet map[string]bool
	if set != nil {
		runtimeSet = map[string]bool{}
		for _, m := range set.Methods() {
			runtimeSet[m.FullMethod] = true
		}
	}
	for _, md := range compiled {
		if full := "/" + string(md.Parent().FullName()) + "/" + string(md.Name()); !runtimeSet[full] {
			add(md, false)
		}
	}
	if set != nil {
		for _, m := range set.Methods() {
			add(m.Desc, m.AutoMapped)
		}
	}
	return &restIndex{set: set, mux: mux}
}

// discardWriter is the ResponseWriter of index lookups; nothing is written
// to it.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header {
	if d.h == nil {
		d.h = http.Header{}
	}
	return d.h
}
func (*discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (*discardWriter) WriteHeader(int)             {}

// lookup returns the gRPC method that a REST request with HTTP method
// httpMethod on u's path calls, and its path parameters; ok is false when
// no binding matches.
func (x *restIndex) lookup(ctx context.Context, httpMethod string, u *url.URL) (method string, params map[string]string, ok bool) {
	if x == nil || u == nil || !strings.HasPrefix(u.Path, "/") {
		return "", nil, false
	}
	res := &resolved{}
	r := (&http.Request{
		Method:     strings.ToUpper(httpMethod),
		URL:        &url.URL{Path: u.Path, RawPath: u.RawPath},
		Header:     http.Header{},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
	}).WithContext(context.WithValue(ctx, resolvedKey{}, res))
	x.mux.ServeHTTP(&discardWriter{}, r)
	return res.method, res.params, res.method != ""
}

// knownMethod reports whether full ("/pkg.Service/Method") is a method of
// a compiled-in service or of a runtime schema.
func (x *restIndex) knownMethod(full string) bool {
	if x != nil && x.set != nil {
		if _, ok := x.set.Method(full); ok {
			return true
		}
	}
	i := strings.LastIndexByte(full, '/')
	if i <= 1 {
		return false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(full[1:i] + "." + full[i+1:]))
	if err != nil {
		return false
	}
	_, ok := d.(protoreflect.MethodDescriptor)
	return ok
}
