package edge

import (
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/gatehouse-dev/gatehouse/routing"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// browser serves what browsers and mobile apps speak on a shared listener,
// in front of its REST handler: CORS (cors.go), gRPC-Web (grpcweb.go),
// REST server streams as NDJSON, Server-Sent Events or a JSON array
// (streams.go), and client and bidi streams over WebSocket (websocket.go).
// Every call it makes goes through conn, the listener's in-process
// connection to its own grpc.Server, so it enters the same interceptor
// chain and router as a native gRPC call.
type browser struct {
	g        *Gateway
	listener string
	conn     *grpc.ClientConn
	codec    *routing.Codec
	maxMsg   int
	cors     *corsPolicy // the listener's; nil when off
	extra    *http.ServeMux
	rest     http.Handler // what is not the browser's: REST transcoding

	streams    atomic.Pointer[streamMux] // rebuilt by Gateway.RefreshStreamMethods
	routeCache routeCORSCache
	rests      restIndexCache // REST path → gRPC method, for route policies (restindex.go)
}

// browserOptions are the Gateway options of browser transports.
type browserOptions struct {
	listenerCORS  map[string]CORSPolicy // by listener name
	routeCORS     map[string]CORSPolicy // by route name
	streamMethods StreamMethods
	extra         []extraHandler
}

type extraHandler struct {
	pattern string
	h       http.Handler
}

// StreamMethods returns the client-, server- and bidi-streaming methods
// whose REST paths the shared listeners serve as browser streams: server
// streams as NDJSON, Server-Sent Events or a JSON array, and every
// streaming method over WebSocket. It must be safe for concurrent use. The
// default lists the streaming methods of every service compiled into the
// binary (protoregistry.GlobalFiles); a runtime schema source (transcode)
// returns the methods of the backends' schemas instead, and calls
// Gateway.RefreshStreamMethods when they change.
type StreamMethods func() []protoreflect.MethodDescriptor

// WithStreamMethods sets where the streaming methods' schemas come from.
// Default: the services compiled into the binary.
func WithStreamMethods(f StreamMethods) Option {
	return optionFunc(func(o *options) { o.browser.streamMethods = f })
}

// WithHTTPHandler serves h for pattern (an http.ServeMux pattern) on every
// shared listener, before REST: a static page, a file download. CORS
// applies to it as to any request.
func WithHTTPHandler(pattern string, h http.Handler) Option {
	return optionFunc(func(o *options) { o.browser.extra = append(o.browser.extra, extraHandler{pattern, h}) })
}

// newBrowser builds the browser front of shared listener l, served by s.
// rest is what it hands everything else to.
func (g *Gateway) newBrowser(listener string, s *server, maxMsg int, rest http.Handler) (*browser, error) {
	b := &browser{
		g:        g,
		listener: listener,
		conn:     s.conn,
		codec:    routing.NewCodec(),
		maxMsg:   maxMsg,
		rest:     rest,
	}
	p, err := g.listenerCORS(listener)
	if err != nil {
		return nil, err
	}
	b.cors = p
	if len(g.opts.browser.extra) > 0 {
		b.extra = http.NewServeMux()
		for _, e := range g.opts.browser.extra {
			b.extra.Handle(e.pattern, e.h)
		}
	}
	if err := b.refreshStreams(); err != nil {
		return nil, err
	}
	return b, nil
}

// ServeHTTP answers CORS preflights, then serves gRPC-Web, WebSocket and
// REST streams, and hands the rest to the REST handler.
func (b *browser) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !b.applyCORS(w, r) {
		return // a preflight, answered
	}
	if b.extra != nil {
		if h, pattern := b.extra.Handler(r); pattern != "" {
			h.ServeHTTP(w, r)
			return
		}
	}
	if isGRPCWeb(r) {
		b.serveGRPCWeb(w, r)
		return
	}
	b.streams.Load().ServeHTTP(w, r) // falls through to b.rest
}

// isGRPCWeb reports whether r is a gRPC-Web call: its media type, compared
// case-insensitively as media types are, starts "application/grpc-web".
func isGRPCWeb(r *http.Request) bool {
	_, _, ok := grpcWebMediaType(r.Header.Get("Content-Type"))
	return ok
}

// grpcWebMediaType parses a gRPC-Web Content-Type: application/grpc-web or
// application/grpc-web-text (text), then an optional "+suffix" (sub, e.g.
// "+proto"; whatever follows the type), then optional parameters. Type,
// subtype and suffix are case-insensitive (RFC 9110 §8.3.1); sub is
// returned in lower case. ok is false when ct does not start with a
// gRPC-Web media type.
func grpcWebMediaType(ct string) (text bool, sub string, ok bool) {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	mt := strings.ToLower(strings.TrimSpace(ct))
	rest, ok := strings.CutPrefix(mt, "application/grpc-web")
	if !ok {
		return false, "", false
	}
	if r, isText := strings.CutPrefix(rest, "-text"); isText {
		text, rest = true, r
	}
	return text, rest, true // sub "" or "+proto" is served; others get 415
}

// callMetadata turns the HTTP headers of a browser call into the metadata
// of its in-process gRPC call, with the rules REST calls follow
// (incomingHeader): hop-by-hop, reserved and the gateway's own keys never
// cross, -bin values are decoded from base64, and x-forwarded-for and
// x-forwarded-host carry the HTTP client, as grpc-gateway sets them. With
// rest, the HTTP method, path and query go along for routes' REST
// conditions.
func callMetadata(r *http.Request, rest bool) metadata.MD {
	md := make(metadata.MD, len(r.Header)+4)
	for k, vs := range r.Header {
		key, ok := incomingHeader(k)
		if !ok || strings.HasPrefix(key, "sec-websocket-") || key == "x-grpc-web" || key == "x-forwarded-for" || key == "x-forwarded-host" {
			continue
		}
		if strings.HasSuffix(key, "-bin") {
			for _, v := range vs {
				if d, err := decodeBinHeader(v); err == nil {
					md.Append(key, string(d))
				}
			}
			continue
		}
		md.Append(key, vs...)
	}
	host := r.Host
	if fh := r.Header.Get("X-Forwarded-Host"); fh != "" {
		host = fh
	}
	md.Set("x-forwarded-host", host)
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := strings.Join(r.Header.Values("X-Forwarded-For"), ", "); prior != "" {
			md.Set("x-forwarded-for", prior+", "+ip)
		} else {
			md.Set("x-forwarded-for", ip)
		}
	}
	for k, v := range clientCertMetadata(r.Context(), r) { // auth.go: a verified client certificate
		md[k] = v
	}
	if rest {
		md.Set(routing.MDHTTPMethod, r.Method)
		md.Set(routing.MDHTTPPath, r.URL.EscapedPath()) // printable ASCII; the router unescapes
		md.Set(routing.MDHTTPQuery, r.URL.RawQuery)
	}
	return md
}

// decodeBinHeader decodes a -bin header value, padded or not.
func decodeBinHeader(v string) ([]byte, error) {
	if len(v)%4 == 0 {
		return base64.StdEncoding.DecodeString(v)
	}
	return base64.RawStdEncoding.DecodeString(v)
}

// responseHeader copies gRPC response metadata into HTTP headers, minus
// hop-by-hop and reserved keys (outgoingHeader), -bin values in base64.
func responseHeader(h http.Header, md metadata.MD) {
	for k, vs := range md {
		if _, ok := outgoingHeader(k); !ok {
			continue
		}
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			h.Add(k, v)
		}
	}
}

// bidiDesc describes every in-process browser call: whatever the method's
// kind, it is carried as one bidi stream, as the director carries it.
var bidiDesc = grpc.StreamDesc{StreamName: "gatehouse.browser", ServerStreams: true, ClientStreams: true}
