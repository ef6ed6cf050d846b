package routing

import (
	"context"
	"net"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

const forwardedForKey = "x-forwarded-for"

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
// configured strip keys and appends the client's address to x-forwarded-for.
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
		}
	}
	if d.opts.forwardedFor {
		if ip := peerAddress(ctx); ip != "" {
			md[forwardedForKey] = appendForwardedFor(md[forwardedForKey], ip)
		}
	}
	return md
}

// appendForwardedFor returns the x-forwarded-for values prior with ip
// appended, joined into one comma-separated value as grpc-gateway writes it.
func appendForwardedFor(prior []string, ip string) []string {
	switch len(prior) {
	case 0:
		return []string{ip}
	case 1:
		if prior[0] == "" {
			return []string{ip}
		}
		return []string{prior[0] + ", " + ip}
	}
	return []string{strings.Join(prior, ", ") + ", " + ip}
}

// peerAddress returns the address of the call's network peer for
// x-forwarded-for: the IP of a TCP peer, "unix:" for a unix socket peer, and
// "" for anything else (an in-process listener, whose caller — the REST
// gateway — sets x-forwarded-for itself).
func peerAddress(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	switch a := p.Addr.(type) {
	case *net.TCPAddr:
		if a == nil || a.IP == nil {
			return ""
		}
		return a.IP.String()
	case *net.UnixAddr:
		return "unix:"
	}
	return ""
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
