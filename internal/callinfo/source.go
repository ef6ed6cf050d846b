package callinfo

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// ForwardedForKey is the metadata key of the hops a call passed through.
const ForwardedForKey = "x-forwarded-for"

// TrustedProxies is the set of proxies whose x-forwarded-for the gateway
// believes. The zero value trusts none: every client's x-forwarded-for is
// its own word, and its source is its transport peer.
type TrustedProxies struct {
	prefixes []netip.Prefix
}

// NewTrustedProxies parses CIDRs such as "10.0.0.0/8" or "2001:db8::/32".
func NewTrustedProxies(cidrs []string) (TrustedProxies, error) {
	t := TrustedProxies{prefixes: make([]netip.Prefix, 0, len(cidrs))}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return TrustedProxies{}, fmt.Errorf("trusted proxy %q: want a CIDR such as 10.0.0.0/8", c)
		}
		t.prefixes = append(t.prefixes, p.Masked())
	}
	return t, nil
}

// Contains reports whether a is a trusted proxy.
func (t TrustedProxies) Contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Source is where a call comes from, as the gateway decides it: its client
// is the first hop, walking x-forwarded-for from the gateway outwards, that
// is not a trusted proxy.
type Source struct {
	// Addr is the client's IP address; invalid when unknown (no peer, a
	// unix socket peer).
	Addr netip.Addr
	// ForwardedFor is the x-forwarded-for the backend gets: the hops from
	// the client to the gateway's immediate peer, comma-separated. What an
	// untrusted hop claimed about the hops before it is dropped. "" when
	// the call has no peer.
	ForwardedFor string
	// Direct is true when the client is the transport peer itself (a TCP
	// peer that is no trusted proxy).
	Direct bool
}

type sourceKey struct{}

// WithSource returns ctx carrying s. The gateway resolves each call's
// source once, before anything reads it.
func WithSource(ctx context.Context, s Source) context.Context {
	return context.WithValue(ctx, sourceKey{}, s)
}

// SourceOf returns the source attached to ctx by WithSource, or else the
// source resolved from ctx's peer and md with no trusted proxies.
func SourceOf(ctx context.Context, md metadata.MD) Source {
	if s, ok := ctx.Value(sourceKey{}).(Source); ok {
		return s
	}
	return ResolveSource(ctx, md, TrustedProxies{})
}

// maxHops bounds the x-forwarded-for hops examined per call.
const maxHops = 32

// ResolveSource decides where a call comes from. The hops are the
// x-forwarded-for values of md, in order, then the transport peer; for a
// call over the in-process connection (REST, gRPC-Web, WebSocket), whose
// x-forwarded-for the gateway's HTTP side wrote with the HTTP peer last,
// that last hop is the peer. The hops are walked right to left from the
// peer: the client is the first one that is not a trusted proxy, or the
// last readable one when every hop is trusted. A hop that is not an IP
// address ends the walk at the trusted proxy that reported it.
func ResolveSource(ctx context.Context, md metadata.MD, trusted TrustedProxies) Source {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return Source{}
	}
	xff := md[ForwardedForKey]
	var hops []string // right to left
	if p.Addr.Network() == "bufconn" {
		hops = lastHops(xff, trusted)
		if len(hops) == 0 {
			return Source{}
		}
	} else {
		ip, ok := transportIP(p.Addr)
		if !ok {
			label := ""
			if _, unix := p.Addr.(*net.UnixAddr); unix {
				label = "unix:"
			}
			return Source{ForwardedFor: label}
		}
		if !trusted.Contains(ip) {
			return Source{Addr: ip, ForwardedFor: ip.String(), Direct: true}
		}
		hops = append([]string{ip.String()}, lastHops(xff, trusted)...)
	}
	return walk(hops)
}

// walk picks the client from hops, given right to left, each trusted except
// possibly the last: the last readable one.
func walk(hops []string) Source {
	s := Source{}
	chain := make([]string, 0, len(hops))
	for _, h := range hops {
		a, ok := parseHop(h)
		if !ok {
			break
		}
		s.Addr = a
		chain = append(chain, a.String())
	}
	if len(chain) == 0 {
		return s
	}
	for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
		chain[i], chain[j] = chain[j], chain[i]
	}
	s.ForwardedFor = strings.Join(chain, ", ")
	return s
}

// lastHops returns the x-forwarded-for hops right to left, up to and
// including the first that is not a trusted proxy (or is no address).
func lastHops(values []string, trusted TrustedProxies) []string {
	var out []string
	for i := len(values) - 1; i >= 0 && len(out) < maxHops; i-- {
		v := values[i]
		for len(out) < maxHops {
			h := v
			j := strings.LastIndexByte(v, ',')
			if j >= 0 {
				h, v = v[j+1:], v[:j]
			}
			if h = strings.TrimSpace(h); h != "" {
				out = append(out, h)
				if a, ok := parseHop(h); !ok || !trusted.Contains(a) {
					return out
				}
			}
			if j < 0 {
				break
			}
		}
	}
	return out
}

// parseHop reads one x-forwarded-for hop: an IP address, possibly with a
// port ("192.0.2.1:4711", "[2001:db8::1]:4711") or in brackets.
func parseHop(h string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if len(h) > 2 && h[0] == '[' && h[len(h)-1] == ']' {
		if a, err := netip.ParseAddr(h[1 : len(h)-1]); err == nil {
			return a.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}

// transportIP is the IP of a TCP peer: a *net.TCPAddr (grpc-go's own
// transport) or an "ip:port" string of network "tcp" (grpc.Server.ServeHTTP,
// which the shared listener uses).
func transportIP(a net.Addr) (netip.Addr, bool) {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, ok := netip.AddrFromSlice(ta.IP)
		return ip.Unmap(), ok
	}
	if a.Network() != "tcp" && a.Network() != "tcp4" && a.Network() != "tcp6" {
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap().WithZone(""), true
}
