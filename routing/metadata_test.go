package routing

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

func TestSanitizeRequest(t *testing.T) {
	tcp := &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 4321}}
	tcp6 := &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 4321}}
	unix := &peer.Peer{Addr: &net.UnixAddr{Name: "@", Net: "unix"}}
	pipe := &peer.Peer{Addr: fakeAddr("bufconn")}
	d := NewDirector(nil, WithStripKeys("X-Gatehouse-Subject"))

	reserved := []string{
		":authority", ":path", "connection", "keep-alive", "proxy-connection",
		"transfer-encoding", "upgrade", "te", "host", "content-type",
		"content-length", "user-agent", "grpc-timeout", "grpc-encoding",
		"grpc-accept-encoding", "grpc-status", "grpc-message",
		"grpc-status-details-bin", "proxy-authorization", "x-gatehouse-subject",
	}
	trusted, err := callinfo.NewTrustedProxies([]string{"192.0.2.0/24", "10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		peer    *peer.Peer
		d       *Director
		xff     []string
		trusted *callinfo.TrustedProxies // attach the Source the gateway resolves with these
		wantXFF []string
	}{
		{"tcp, no xff", tcp, d, nil, nil, []string{"192.0.2.1"}},
		{"tcp6 replaces an untrusted client's", tcp6, d, []string{"203.0.113.9"}, nil, []string{"2001:db8::1"}},
		{"tcp replaces several", tcp, d, []string{"a", "b"}, nil, []string{"192.0.2.1"}},
		{"unix", unix, d, []string{"203.0.113.9"}, nil, []string{"unix:"}},
		{"in-process keeps the hop the gateway appended", pipe, d, []string{"198.51.100.1, 203.0.113.9"}, nil, []string{"203.0.113.9"}},
		{"in-process without xff", pipe, d, nil, nil, nil},
		{"no peer", nil, d, nil, nil, nil},
		{"disabled", tcp, NewDirector(nil, WithForwardedFor(false), WithStripKeys("x-gatehouse-subject")), []string{"x"}, nil, []string{"x"}},
		{"trusted peer appends from the client on", tcp, d, []string{"198.51.100.7, 203.0.113.9, 10.1.2.3"}, &trusted, []string{"203.0.113.9, 10.1.2.3, 192.0.2.1"}},
		{"trusted in-process hops", pipe, d, []string{"198.51.100.7, 203.0.113.9", "10.1.2.3, 192.0.2.9"}, &trusted, []string{"203.0.113.9, 10.1.2.3, 192.0.2.9"}},
		{"untrusted peer with a source", tcp6, d, []string{"10.1.2.3"}, &trusted, []string{"2001:db8::1"}},
		{"trusted peer with a malformed hop", tcp, d, []string{"198.51.100.7, bogus, 10.1.2.3"}, &trusted, []string{"10.1.2.3, 192.0.2.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md := metadata.MD{"x-keep": {"1", "2"}, "x-keep-bin": {"\x00"}, "grpc-trace-bin": {"t"}}
			for _, k := range reserved {
				md[k] = []string{"v"}
			}
			if tt.xff != nil {
				md["x-forwarded-for"] = append([]string(nil), tt.xff...)
			}
			ctx := context.Background()
			if tt.peer != nil {
				ctx = peer.NewContext(ctx, tt.peer)
			}
			if tt.trusted != nil {
				ctx = callinfo.WithSource(ctx, callinfo.ResolveSource(ctx, md, *tt.trusted))
			}
			got := tt.d.sanitizeRequest(ctx, md)
			want := metadata.MD{"x-keep": {"1", "2"}, "x-keep-bin": {"\x00"}, "grpc-trace-bin": {"t"}}
			if tt.wantXFF != nil {
				want["x-forwarded-for"] = tt.wantXFF
			}
			if len(got) != len(want) {
				t.Fatalf("sanitizeRequest = %v, want %v", got, want)
			}
			for k, v := range want {
				if !equalStrings(got[k], v) {
					t.Fatalf("sanitizeRequest[%s] = %q, want %q (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
}

func TestStripPrefixes(t *testing.T) {
	d := NewDirector(nil, WithForwardedFor(false), WithStripKeys("x-user"), WithStripPrefixes("X-User-Claim-"))
	md := metadata.MD{"x-user": {"admin"}, "x-user-claim-tier": {"gold"}, "x-user-claims": {"kept"}, "x-keep": {"1"}}
	got := d.sanitizeRequest(context.Background(), md)
	if len(got) != 2 || got["x-user-claims"] == nil || got["x-keep"] == nil {
		t.Fatalf("sanitizeRequest = %v, want x-user-claims and x-keep only", got)
	}
}

func TestSanitizeResponse(t *testing.T) {
	md := metadata.MD{"x-h": {"v"}, "content-type": {"application/grpc"}, "grpc-status": {"0"}, ":status": {"200"}}
	got := sanitizeResponse(md)
	if len(got) != 1 || got["x-h"][0] != "v" {
		t.Fatalf("sanitizeResponse = %v, want only x-h", got)
	}
	if sanitizeResponse(nil) != nil {
		t.Fatal("sanitizeResponse(nil) != nil")
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return string(a) }
func (a fakeAddr) String() string  { return string(a) }
