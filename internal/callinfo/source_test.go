package callinfo

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

type addr struct{ network, s string }

func (a addr) Network() string { return a.network }
func (a addr) String() string  { return a.s }

func TestResolveSource(t *testing.T) {
	trusted, err := NewTrustedProxies([]string{"10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	tcp := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 4711} }
	pipe := addr{"bufconn", "bufconn"}
	tests := []struct {
		name     string
		peer     net.Addr
		xff      []string
		trusted  TrustedProxies
		wantAddr string
		wantXFF  string
		direct   bool
	}{
		{"no peer", nil, []string{"203.0.113.1"}, trusted, "invalid IP", "", false},
		{"untrusted tcp peer", tcp("198.51.100.1"), []string{"203.0.113.1"}, trusted, "198.51.100.1", "198.51.100.1", true},
		{"none trusted", tcp("10.1.1.1"), []string{"203.0.113.1"}, TrustedProxies{}, "10.1.1.1", "10.1.1.1", true},
		{"trusted peer, client hop", tcp("10.1.1.1"), []string{"198.51.100.9, 203.0.113.1"}, trusted, "203.0.113.1", "203.0.113.1, 10.1.1.1", false},
		{"trusted hops skipped", tcp("10.1.1.1"), []string{"203.0.113.1, 10.2.2.2", "192.0.2.5"}, trusted, "203.0.113.1", "203.0.113.1, 10.2.2.2, 192.0.2.5, 10.1.1.1", false},
		{"all trusted: the leftmost", tcp("10.1.1.1"), []string{"10.3.3.3, 10.2.2.2"}, trusted, "10.3.3.3", "10.3.3.3, 10.2.2.2, 10.1.1.1", false},
		{"trusted peer without xff", tcp("10.1.1.1"), nil, trusted, "10.1.1.1", "10.1.1.1", false},
		{"malformed hop stops at the proxy", tcp("10.1.1.1"), []string{"203.0.113.1, unknown"}, trusted, "10.1.1.1", "10.1.1.1", false},
		{"hops with ports and brackets", tcp("10.1.1.1"), []string{"[2001:db8::7]:80, 203.0.113.1:4711"}, trusted, "203.0.113.1", "203.0.113.1, 10.1.1.1", false},
		{"v6 hops", tcp("2001:db8::1"), []string{"2001:db9::1, [2001:db8::7]"}, trusted, "2001:db9::1", "2001:db9::1, 2001:db8::7, 2001:db8::1", false},
		{"mapped v4 peer", tcp("::ffff:10.1.1.1"), []string{"203.0.113.1"}, trusted, "203.0.113.1", "203.0.113.1, 10.1.1.1", false},
		{"ServeHTTP peer", addr{"tcp", "198.51.100.1:4711"}, []string{"203.0.113.1"}, trusted, "198.51.100.1", "198.51.100.1", true},
		{"in-process: the last hop is the HTTP peer", pipe, []string{"203.0.113.1, 198.51.100.1"}, trusted, "198.51.100.1", "198.51.100.1", false},
		{"in-process through a trusted proxy", pipe, []string{"198.51.100.7, 203.0.113.1, 10.1.1.1"}, trusted, "203.0.113.1", "203.0.113.1, 10.1.1.1", false},
		{"in-process without xff", pipe, nil, trusted, "invalid IP", "", false},
		{"unix peer", &net.UnixAddr{Name: "/run/g.sock", Net: "unix"}, []string{"203.0.113.1"}, trusted, "invalid IP", "unix:", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.peer != nil {
				ctx = peer.NewContext(ctx, &peer.Peer{Addr: tt.peer})
			}
			md := metadata.MD{}
			for _, v := range tt.xff {
				md.Append(ForwardedForKey, v)
			}
			s := ResolveSource(ctx, md, tt.trusted)
			if s.Addr.String() != tt.wantAddr || s.ForwardedFor != tt.wantXFF || s.Direct != tt.direct {
				t.Errorf("ResolveSource = {%s %q %v}, want {%s %q %v}", s.Addr, s.ForwardedFor, s.Direct, tt.wantAddr, tt.wantXFF, tt.direct)
			}
		})
	}
}

func TestResolveSourceBoundsHops(t *testing.T) {
	trusted, _ := NewTrustedProxies([]string{"10.0.0.0/8"})
	md := metadata.MD{}
	for range 1000 {
		md.Append(ForwardedForKey, "10.9.9.9")
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("10.1.1.1")}})
	if s := ResolveSource(ctx, md, trusted); s.Addr.String() != "10.9.9.9" || len(s.ForwardedFor) > 20*(maxHops+1) {
		t.Errorf("ResolveSource over 1000 trusted hops = %s, %d bytes of x-forwarded-for", s.Addr, len(s.ForwardedFor))
	}
}

func TestNewTrustedProxies(t *testing.T) {
	if _, err := NewTrustedProxies([]string{"10.0.0.0/8", "proxy"}); err == nil {
		t.Error("a host name was taken as a CIDR")
	}
}

func TestClientAddrWithSource(t *testing.T) {
	tcp := &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("10.1.1.1"), Port: 4711}}
	trusted, _ := NewTrustedProxies([]string{"10.0.0.0/8"})
	md := metadata.Pairs(ForwardedForKey, "203.0.113.1")
	ctx := metadata.NewIncomingContext(peer.NewContext(context.Background(), tcp), md)
	if got := ClientAddr(WithSource(ctx, ResolveSource(ctx, md, trusted))); got != "203.0.113.1" {
		t.Errorf("through a trusted proxy: ClientAddr = %q", got)
	}
	if got := ClientAddr(WithSource(ctx, ResolveSource(ctx, md, TrustedProxies{}))); got != "10.1.1.1:4711" {
		t.Errorf("untrusted: ClientAddr = %q", got)
	}
	served := peer.NewContext(context.Background(), &peer.Peer{Addr: addr{"tcp", "198.51.100.1:4711"}})
	if got := ClientAddr(metadata.NewIncomingContext(served, md)); got != "198.51.100.1:4711" {
		t.Errorf("ServeHTTP peer without a source: ClientAddr = %q, want the peer, not x-forwarded-for", got)
	}
}
