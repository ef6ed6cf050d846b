package routing

import (
	"context"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

const forwardedForKey = callinfo.ForwardedForKey

// isReservedKey reports whether the lowercase metadata key k must never cross
// the gateway in either direction: HTTP/2 pseudo headers, hop-by-hop headers
// (the list Caddy's reverse proxy strips, plus host) and the headers that
// gRPC itself owns on each hop.
func isReservedKey(k string) bool {
	if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "x-gatehouse-") {
		// x-gatehouse-* is the gateway's own prefix: what it sets for the
		// router (REST attributes) or for backends (identity) must never be
		// a client's word.
		return true
	}
	switch k {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding",
		"upgrade", "te", "trailer", "proxy-authenticate", "proxy-authorization",
		"alt-svc", "host", "content-type", "content-length", "user-agent",
		"grpc-timeout", "grpc-encoding", "grpc-accept-encoding",
		"grpc-message-type", "grpc-status", "grpc-message",
		"grpc-status-details-bin", "grpc-previous-rpc-attempts",
		"grpc-retry-pushback-ms", "grpc-internal-encoding-request":
		return true
	}
	return false
}

// sanitizeRequest turns the incoming metadata md of a call into the metadata
// to send to the backend, in place: it deletes reserved keys and the
// configured strip keys and sets x-forwarded-for to the hops from the
// client to the gateway (callinfo.Source: with none attached, the transport
// peer alone).
// md must be owned by the caller (metadata.FromIncomingContext returns a
// copy). Value slices are never modified in place, only replaced, so md may
// share them with other maps.
func (d *Director) sanitizeRequest(ctx context.Context, md metadata.MD) metadata.MD {
	for k := range md {
		if isReservedKey(k) {
			delete(md, k)
			continue
		}
		if _, ok := d.opts.stripKeys[k]; ok {
			delete(md, k)
			continue
		}
		for _, p := range d.opts.stripPrefixes {
			if strings.HasPrefix(k, p) {
				delete(md, k)
				break
			}
		}
	}
	if d.opts.forwardedFor {
		if _, ok := peer.FromContext(ctx); ok {
			// The hops from the client the gateway believes to its peer;
			// an untrusted client's own x-forwarded-for never crosses.
			if s := callinfo.SourceOf(ctx, md); s.ForwardedFor != "" {
				md[forwardedForKey] = []string{s.ForwardedFor}
			} else {
				delete(md, forwardedForKey)
			}
		}
	}
	return md
}

// sanitizeResponse removes reserved keys from backend header or trailer
// metadata md, in place (grpc-go hands out copies), and returns it.
func sanitizeResponse(md metadata.MD) metadata.MD {
	for k := range md {
		if isReservedKey(k) {
			delete(md, k)
		}
	}
	return md
}
