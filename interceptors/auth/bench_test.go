package auth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"google.golang.org/grpc/metadata"

	"github.com/gatehouse-dev/gatehouse/interceptors/auth"
	"github.com/gatehouse-dev/gatehouse/internal/benchcall"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

const (
	benchIssuer = "https://id.example.test/"
	benchAPIKey = "k-live-1"
	benchMethod = "/shop.Orders/Get"
)

// benchSigner is a private key published in the JWKS file under kid.
type benchSigner struct {
	kid  string
	alg  jwa.SignatureAlgorithm
	priv crypto.Signer
}

// publicJWK returns the signer's public key as a JWK with its kid, alg and
// use.
func (s *benchSigner) publicJWK(b *testing.B) jwk.Key {
	b.Helper()
	k, err := jwk.Import(s.priv.Public())
	if err != nil {
		b.Fatal(err)
	}
	_ = k.Set(jwk.KeyIDKey, s.kid)
	_ = k.Set(jwk.KeyUsageKey, "sig")
	_ = k.Set(jwk.AlgorithmKey, s.alg)
	return k
}

// token signs the claims of a caller "alice" valid for an hour.
func (s *benchSigner) token(b *testing.B) string {
	b.Helper()
	now := time.Now()
	payload, err := json.Marshal(map[string]any{
		"iss": benchIssuer, "aud": []string{"gatehouse"}, "sub": "alice",
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "scope": "orders:read profile",
	})
	if err != nil {
		b.Fatal(err)
	}
	h := jws.NewHeaders()
	_ = h.Set(jws.KeyIDKey, s.kid)
	tok, err := jws.Sign(payload, jws.WithKey(s.alg, s.priv, jws.WithProtectedHeaders(h)))
	if err != nil {
		b.Fatal(err)
	}
	return string(tok)
}

// benchGuard is what the benchmarks share: an Authenticator with a JWT
// provider whose JWKS is a local file and an inline API key set, the
// signers of that JWKS, and a route table where /shop.Orders/Get requires
// either credential and forwards two claims (no network is used).
type benchGuard struct {
	a       *auth.Authenticator
	routes  auth.RouteFunc
	signers []*benchSigner
}

func newBenchGuard(b *testing.B) *benchGuard {
	b.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	g := &benchGuard{signers: []*benchSigner{
		{kid: "ec-1", alg: jwa.ES256(), priv: ec},
		{kid: "rsa-1", alg: jwa.RS256(), priv: rk},
	}}
	set := jwk.NewSet()
	for _, s := range g.signers {
		if err := set.AddKey(s.publicJWK(b)); err != nil {
			b.Fatal(err)
		}
	}
	doc, err := json.Marshal(set)
	if err != nil {
		b.Fatal(err)
	}
	jwksFile := filepath.Join(b.TempDir(), "jwks.json")
	if err := os.WriteFile(jwksFile, doc, 0o600); err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256([]byte(benchAPIKey))
	g.a, err = auth.New(auth.Config{
		JWT: []auth.JWTProvider{{
			Name: "corp", Issuer: benchIssuer, Audiences: []string{"gatehouse"},
			JWKSFile: jwksFile, Algorithms: []string{"RS256", "ES256"},
		}},
		APIKeys: []auth.APIKeySet{{
			Name: "partners", Header: "x-api-key",
			Keys: []auth.APIKey{{ID: "acme", SHA256: hex.EncodeToString(sum[:]), Labels: map[string]string{"plan": "gold"}}},
		}},
		ClockSkew: 60 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(g.a.Close)
	read, err := auth.NewPolicy(auth.PolicySpec{Require: []string{"corp", "partners"}, ForwardClaims: []string{"scope", "plan"}})
	if err != nil {
		b.Fatal(err)
	}
	g.routes = func(context.Context, string, metadata.MD) (auth.Route, bool) {
		return auth.Route{Name: "orders", Policy: read}, true
	}
	return g
}

// credential is one way a caller authenticates, and the subject it
// authenticates as.
type credential struct {
	name    string
	md      metadata.MD
	subject string
}

func (g *benchGuard) credentials(b *testing.B) []credential {
	b.Helper()
	cs := []credential{{name: "apikey", md: metadata.Pairs("x-api-key", benchAPIKey), subject: "acme"}}
	for _, s := range g.signers {
		cs = append(cs, credential{
			name:    "jwt-" + s.alg.String(),
			md:      metadata.Pairs("authorization", "Bearer "+s.token(b)),
			subject: "alice",
		})
	}
	return cs
}

// benchCtx is an incoming call's context from a TCP peer, with a
// callinfo.Info attached as the outer layers attach one.
func benchCtx(md metadata.MD) context.Context {
	ctx, _ := callinfo.With(context.Background())
	return benchcall.Incoming(ctx, md)
}

// checkApproved fails b unless ctx is the context of a call approved for
// the route "orders" as subject.
func checkApproved(b *testing.B, ctx context.Context, subject string) {
	b.Helper()
	if got := callinfo.PrincipalFrom(ctx).Subject; got != subject {
		b.Fatalf("principal subject %q, want %q", got, subject)
	}
	if f, ok := auth.ForwardFrom(ctx); !ok || f.Route != "orders" {
		b.Fatalf("forward %+v (%v), want route orders", f, ok)
	}
}

// BenchmarkStream measures one approved call of one request and one
// response frame: the credential's check (an API key's hash lookup, or a
// JWT's claims: the same token every call, as a client sends it, so its
// signature is checked once and remembered), the route's policy, the
// identity to forward and the stream wrapper, against a bare handler.
func BenchmarkStream(b *testing.B) {
	g := newBenchGuard(b)
	info := benchcall.StreamInfo(benchMethod)
	b.Run("bare", func(b *testing.B) {
		ss := &benchcall.Stream{Ctx: benchCtx(metadata.Pairs("x-api-key", benchAPIKey))}
		benchcall.RunStream(b, benchcall.BareStream, ss, info, benchcall.Echo)
	})
	ic := auth.StreamServerInterceptor(g.a, g.routes)
	for _, c := range g.credentials(b) {
		b.Run(c.name, func(b *testing.B) {
			ss := &benchcall.Stream{Ctx: benchCtx(c.md)}
			benchcall.CheckStream(b, ic, ss, info, func(ctx context.Context) { checkApproved(b, ctx, c.subject) })
			benchcall.RunStream(b, ic, ss, info, benchcall.Echo)
		})
	}
}

// BenchmarkUnary measures one approved unary call through the interceptor,
// against a bare handler.
func BenchmarkUnary(b *testing.B) {
	g := newBenchGuard(b)
	info := benchcall.UnaryInfo(benchMethod)
	req := &benchcall.Frame{N: 64}
	b.Run("bare", func(b *testing.B) {
		ctx := benchCtx(metadata.Pairs("x-api-key", benchAPIKey))
		benchcall.RunUnary(b, benchcall.BareUnary, ctx, req, info, benchcall.EchoUnary)
	})
	ic := auth.UnaryServerInterceptor(g.a, g.routes)
	for _, c := range g.credentials(b) {
		b.Run(c.name, func(b *testing.B) {
			ctx := benchCtx(c.md)
			benchcall.CheckUnary(b, ic, ctx, req, info, func(ctx context.Context) { checkApproved(b, ctx, c.subject) })
			benchcall.RunUnary(b, ic, ctx, req, info, benchcall.EchoUnary)
		})
	}
}
