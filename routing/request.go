package routing

import (
	"context"
	"net/netip"
	"net/url"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Metadata keys that the REST path (grpc-gateway, in process) sets so that
// routes can match on the HTTP request. They are trusted only on in-process
// calls; the REST header matcher drops client headers under the
// "x-gatehouse-" prefix, and the director never forwards them.
const (
	// MDHTTPMethod carries a REST call's HTTP method.
	MDHTTPMethod = "x-gatehouse-http-method"
	// MDHTTPPath carries a REST call's URL path, escaped as it was sent
	// (url.URL.EscapedPath).
	MDHTTPPath = "x-gatehouse-http-path"
	// MDHTTPQuery carries a REST call's raw URL query.
	MDHTTPQuery = "x-gatehouse-http-query"
)

// ReservedKeys are the request metadata keys the gateway sets for itself;
// the director strips them before calling a backend.
var ReservedKeys = []string{MDHTTPMethod, MDHTTPPath, MDHTTPQuery}

// Request is what the router knows about a call when it picks a route.
// Fields a route table does not use may be left empty.
type Request struct {
	// Method is the full gRPC method, "/pkg.Service/Method".
	Method string
	// Metadata is the call's incoming metadata (HTTP headers for REST calls),
	// with ":authority".
	Metadata metadata.MD
	// HTTPMethod, Path and Query describe a REST call; empty for gRPC.
	HTTPMethod string
	// Path is a REST call's URL path.
	Path string
	// Query is a REST call's query parameters.
	Query url.Values
	// SourceIP is the client's address; invalid when unknown.
	SourceIP netip.Addr
	// Claims are the authenticated principal's claims; nil when none.
	Claims map[string]any
}

// inProcess reports whether the call arrived over the gateway's in-process
// connection (the REST path), whose REST metadata is trusted.
func inProcess(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	return ok && p.Addr != nil && p.Addr.Network() == "bufconn"
}

// requestFrom builds the Request of a call; only the parts that the table
// uses are filled in.
func requestFrom(ctx context.Context, fullMethod string, md metadata.MD, needs needs) Request {
	req := Request{Method: fullMethod, Metadata: md}
	if needs == 0 {
		return req
	}
	trusted := inProcess(ctx)
	if needs&needHTTP != 0 && trusted {
		req.HTTPMethod = first(md, MDHTTPMethod)
		// The path travels escaped (metadata is printable ASCII); routes
		// match it decoded, as the transcoder reads it.
		req.Path = first(md, MDHTTPPath)
		if p, err := url.PathUnescape(req.Path); err == nil {
			req.Path = p
		}
		if q := first(md, MDHTTPQuery); q != "" {
			req.Query, _ = url.ParseQuery(q)
		}
	}
	if needs&needSource != 0 {
		req.SourceIP = sourceIP(ctx, md)
	}
	if needs&needClaims != 0 {
		req.Claims = callinfo.PrincipalFrom(ctx).Claims
	}
	return req
}

// sourceIP is the client's address as the gateway decided it
// (callinfo.Source): the transport peer, or for in-process calls the
// x-forwarded-for hop that the gateway's HTTP side appended, walked back
// over the trusted proxies.
func sourceIP(ctx context.Context, md metadata.MD) netip.Addr {
	return callinfo.SourceOf(ctx, md).Addr
}

func first(md metadata.MD, key string) string {
	if v := md[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// needs says which parts of a Request a table's predicates read.
type needs uint8

const (
	needHTTP needs = 1 << iota
	needSource
	needClaims
	needCEL
)
