package auth

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
)

// FuzzBearerToken feeds arbitrary bearer tokens to a provider whose keys
// come from a JWKS file: nothing may panic, and nothing but the one valid
// token's claims may ever be accepted.
func FuzzBearerToken(f *testing.F) {
	clk := newClock()
	s := newRSA(f, "k1")
	dir := f.TempDir()
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks(f, s), 0o600); err != nil {
		f.Fatal(err)
	}
	a, err := New(Config{JWT: []JWTProvider{{Name: "corp", Issuer: issuer, Audiences: []string{"gatehouse"}, JWKSFile: jwksFile}}, ClockSkew: time.Minute},
		WithClock(clk.Now))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(a.Close)
	valid := s.sign(f, "RS256", map[string]any{"iss": issuer, "aud": "gatehouse", "sub": "fuzz", "exp": clk.Now().Add(time.Hour).Unix()}, nil)
	f.Add(valid)
	f.Add("..")
	f.Add("a.b.c")
	f.Add(rawToken(map[string]any{"alg": "none"}, map[string]any{"iss": issuer}, nil))
	f.Add(rawToken(map[string]any{"alg": "HS256", "kid": "k1"}, map[string]any{"iss": issuer, "aud": "gatehouse", "sub": "x", "exp": 1 << 40}, []byte("k")))
	f.Fuzz(func(t *testing.T, tok string) {
		c := &call{a: a, ctx: context.Background(), md: metadata.Pairs("authorization", "Bearer "+tok), done: map[string]*result{}}
		r := c.check("corp")
		if r.err == nil && r.presented && r.principal.Subject != "fuzz" {
			t.Fatalf("accepted a forged token %q: %+v", tok, r.principal)
		}
	})
}
