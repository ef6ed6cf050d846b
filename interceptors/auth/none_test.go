package auth

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// TestRequireNone checks a route that requires None on a default-deny
// listener: it is served without credentials (a route without an auth
// block is not), its rules still apply, the credentials a caller sends are
// not checked and are stripped unless the route relays them, and None
// cannot be mixed with credentials or forward claims.
func TestRequireNone(t *testing.T) {
	f := newFixture(t)
	mk := func(s PolicySpec) *Policy {
		t.Helper()
		p, err := NewPolicy(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	routes := map[string]*Policy{
		"/login.L/Open":    mk(PolicySpec{Require: []string{None}}),
		"/login.L/Relay":   mk(PolicySpec{Require: []string{None}, ForwardToken: true}),
		"/login.L/Local":   mk(PolicySpec{Require: []string{None}, Rules: []string{`peer.address.startsWith("10.")`}}),
		"/login.L/NoBlock": nil,
	}
	ic := UnaryServerInterceptor(f.a, func(_ context.Context, m string, _ metadata.MD) (Route, bool) {
		p, ok := routes[m]
		return Route{Name: strings.TrimPrefix(m, "/login.L/"), Policy: p}, ok
	}, WithRequireAuth(true))

	cases := []struct {
		name, method string
		md           metadata.MD
		want         codes.Code
		remove       []string
	}{
		{"no credentials", "/login.L/Open", nil, codes.OK, []string{"authorization", "x-api-key"}},
		{"a token that does not verify is not checked, and stripped", "/login.L/Open", bearer("x.y.z"), codes.OK, []string{"authorization", "x-api-key"}},
		{"relayed when the route says so", "/login.L/Relay", bearer("x.y.z"), codes.OK, nil},
		{"a rule that does not hold", "/login.L/Local", nil, codes.PermissionDenied, nil},
		{"no auth block on a default-deny listener", "/login.L/NoBlock", nil, codes.PermissionDenied, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := invoke(t, ic, tc.method, tc.md)
			if out.code != tc.want {
				t.Fatalf("%v %q, want %v", out.code, out.msg, tc.want)
			}
			if tc.want != codes.OK {
				return
			}
			if out.principal.Subject != "" || len(out.forward.Set) != 0 {
				t.Errorf("an identity for a call that presented none: %+v, forward %+v", out.principal, out.forward)
			}
			if !slices.Equal(out.forward.Remove, tc.remove) || len(out.forward.IdentityKeys) == 0 {
				t.Errorf("forward %+v, want removed %v and the identity keys", out.forward, tc.remove)
			}
		})
	}
	// The rule sees the peer: a caller from 10.0.0.0/8 passes.
	inside := &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 4}}
	if out := invokeCtx(t, ic, "/login.L/Local", nil, inside); out.code != codes.OK {
		t.Errorf("a rule that holds: %v %q", out.code, out.msg)
	}
	if f.a.Denials()["rule"] != 1 {
		t.Errorf("denials %v, want one rule", f.a.Denials())
	}

	for _, tc := range []struct {
		spec PolicySpec
		want string
	}{
		{PolicySpec{Require: []string{"corp", None}}, `"none" must be alone`},
		{PolicySpec{Require: []string{None}, ForwardClaims: []string{"sub"}}, "no claims to forward"},
	} {
		if _, err := NewPolicy(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewPolicy(%+v): %v, want %q", tc.spec, err, tc.want)
		}
	}
	if !f.a.Has(None) {
		t.Error("Has(None) is false: the gateway would warn that routes requiring none name an unknown credential")
	}
	if _, err := New(Config{APIKeys: []APIKeySet{{Name: None, Keys: []APIKey{{ID: "a", SHA256: hashKey("k")}}}}}); err == nil {
		t.Error("a credential named none was accepted")
	}
}
