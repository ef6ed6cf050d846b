package auth

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// TestVerifiedTokensCached checks the cache of verified tokens: the same
// token costs one signature check however often it comes; its expiry,
// checked at every use, refuses it with the error a fresh verification
// gives; a token the provider cannot verify is never remembered.
// (TestRotation covers a key set replaced under a cached token.)
func TestVerifiedTokensCached(t *testing.T) {
	f := newFixture(t)
	p := f.a.jwt["corp"]
	tok := f.ec1.sign(t, "ES256", f.claims(nil), nil)
	for i := range 5 {
		out := invoke(t, f.ic, "/shop.Orders/Get", bearer(tok))
		if out.code != codes.OK || out.principal.Subject != "alice" || out.principal.Claims["scope"] != "orders:read profile" {
			t.Fatalf("call %d: %v %q, principal %+v", i, out.code, out.msg, out.principal)
		}
	}
	if n := p.signatures.Load(); n != 1 {
		t.Errorf("%d signature checks for one token sent 5 times, want 1", n)
	}
	other := f.rsa1.sign(t, "RS256", f.claims(nil), nil)
	if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(other)); out.code != codes.OK {
		t.Fatalf("second token: %v", out.code)
	}
	if n := p.signatures.Load(); n != 2 {
		t.Errorf("%d signature checks after a second token, want 2", n)
	}

	// Past exp and the skew: refused, as an uncached check refuses it.
	f.clk.Advance(10*time.Minute + 61*time.Second)
	cached := invoke(t, f.ic, "/shop.Orders/Get", bearer(tok))
	if cached.code != codes.Unauthenticated {
		t.Fatalf("expired cached token: %v, want UNAUTHENTICATED", cached.code)
	}
	fresh := newFixture(t)
	fresh.clk.Advance(f.clk.Now().Sub(fresh.clk.Now()))
	uncached := invoke(t, fresh.ic, "/shop.Orders/Get", bearer(f.ec1.sign(t, "ES256", expiredClaims(f), nil)))
	if cached.msg == "" || cached.msg != uncached.msg {
		t.Errorf("expired token: %q from the cache, %q from a fresh check", cached.msg, uncached.msg)
	}

	// A bad signature is never remembered: refused every time.
	forged := tok[:len(tok)-4] + "AAAA"
	for range 3 {
		if out := invoke(t, fresh.ic, "/shop.Orders/Get", bearer(forged)); out.code != codes.Unauthenticated {
			t.Fatalf("forged token: %v", out.code)
		}
	}
}

// expiredClaims are f's claims as of the fixture's first moment, expired
// now: the same shape as the cached token's.
func expiredClaims(f *fixture) map[string]any {
	return f.claims(func(c map[string]any) {
		c["exp"] = f.clk.Now().Add(-61*time.Second - time.Second).Unix()
		c["iat"] = f.clk.Now().Add(-11 * time.Minute).Unix()
	})
}

// TestVerifiedCacheBounded fills the cache past its bound.
func TestVerifiedCacheBounded(t *testing.T) {
	var c verifiedCache
	for i := range 3 * maxVerifiedTokens {
		c.put(sha256.Sum256([]byte(fmt.Sprint(i))), verifiedToken{})
	}
	if n := len(c.m); n > maxVerifiedTokens || n < maxVerifiedTokens*7/8 {
		t.Fatalf("%d entries after %d puts, want between %d and %d", n, 3*maxVerifiedTokens, maxVerifiedTokens*7/8, maxVerifiedTokens)
	}
	if _, ok := c.get(sha256.Sum256([]byte(fmt.Sprint(3*maxVerifiedTokens - 1)))); !ok {
		t.Error("the last token put is not there")
	}
}
