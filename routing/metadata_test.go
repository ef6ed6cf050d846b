package routing

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
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
	tests := []struct {
		name    string
		peer    *peer.Peer
		d       *Director
		xff     []string
		wantXFF []string
	}{
		{"tcp, no xff", tcp, d, nil, []string{"192.0.2.1"}},
		{"tcp6 appends", tcp6, d, []string{"203.0.113.9"}, []string{"203.0.113.9, 2001:db8::1"}},
		{"tcp joins several", tcp, d, []string{"a", "b"}, []string{"a, b, 192.0.2.1"}},
		{"unix", unix, d, nil, []string{"unix:"}},
		{"in-process untouched", pipe, d, []string{"203.0.113.9"}, []string{"203.0.113.9"}},
		{"no peer", nil, d, nil, nil},
		{"disabled", tcp, NewDirector(nil, WithForwardedFor(false), WithStripKeys("x-gatehouse-subject")), []string{"x"}, []string{"x"}},
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
