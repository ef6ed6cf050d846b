package auth

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"crypto/tls"
	"github.com/gatehouse-dev/gatehouse/internal/testpki"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"net"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const issuer = "https://id.example.test/"

type fixture struct {
	clk      *clock
	js       *jwksServer
	a        *Authenticator
	rsa1     *signer
	ec1      *signer
	fetched  fetchWaiter
	keysFile string
	ic       grpc.UnaryServerInterceptor
	log      *syncLog
}

func hashKey(k string) string {
	h := sha256.Sum256([]byte(k))
	return hex.EncodeToString(h[:])
}

// testRoutes is a route table by method.
func testRoutes(t testing.TB) RouteFunc {
	t.Helper()
	mk := func(s PolicySpec) *Policy {
		p, err := NewPolicy(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	read := mk(PolicySpec{Require: []string{"corp", "partners"}, ForwardClaims: []string{"scope", "plan"}})
	write := mk(PolicySpec{Require: []string{"corp"}, Rules: []string{`"orders:write" in claims.scope.split(" ")`}, ForwardToken: true})
	mtls := mk(PolicySpec{Require: []string{MTLS}, Rules: []string{`peer.uri_sans.exists(u, u.startsWith("spiffe://example.test/"))`}})
	return func(_ context.Context, method string, _ metadata.MD) (Route, bool) {
		switch method {
		case "/shop.Orders/Get":
			return Route{Name: "orders", Policy: read}, true
		case "/shop.Orders/Write":
			return Route{Name: "orders-write", Policy: write}, true
		case "/shop.Internal/Get":
			return Route{Name: "internal", Policy: mtls}, true
		case "/public.P/Get":
			return Route{Name: "public"}, true
		}
		return Route{}, false
	}
}

func newFixture(t *testing.T, guardOpts ...Option) *fixture {
	t.Helper()
	f := &fixture{clk: newClock(), rsa1: newRSA(t, "rsa-1"), ec1: newEC(t, "ec-1"), fetched: make(fetchWaiter, 100), log: &syncLog{}}
	f.js = newJWKSServer(t, jwks(t, f.rsa1, f.ec1))
	f.keysFile = filepath.Join(t.TempDir(), "keys.yaml")
	writeKeys(t, f.keysFile, "acme", "k-live-1")
	a, err := New(Config{
		JWT: []JWTProvider{{
			Name: "corp", Issuer: issuer, Audiences: []string{"gatehouse", "other"},
			JWKSURI: f.js.url(), Algorithms: []string{"RS256", "PS256", "ES256"}, Refresh: 5 * time.Minute,
		}},
		APIKeys:   []APIKeySet{{Name: "partners", KeysFile: f.keysFile, Header: "x-api-key"}},
		ClockSkew: 60 * time.Second,
	}, WithClock(f.clk.Now), WithHTTPClient(f.js.client), WithFetchHook(f.fetched.hook), WithLogger(slog.New(slog.NewTextHandler(f.log, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	f.a = a
	if err := f.fetched.wait(t); err != nil {
		t.Fatalf("first JWKS fetch: %v", err)
	}
	f.ic = UnaryServerInterceptor(a, testRoutes(t), guardOpts...)
	return f
}

func writeKeys(t testing.TB, path string, idKeys ...string) {
	t.Helper()
	var b strings.Builder
	for i := 0; i+1 < len(idKeys); i += 2 {
		fmt.Fprintf(&b, "- id: %s\n  sha256: %s\n  labels: {plan: gold}\n", idKeys[i], hashKey(idKeys[i+1]))
	}
	if b.Len() == 0 {
		b.WriteString("[]\n")
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) claims(mod func(map[string]any)) map[string]any {
	now := f.clk.Now()
	c := map[string]any{
		"iss": issuer, "aud": []string{"gatehouse"}, "sub": "alice",
		"exp": now.Add(10 * time.Minute).Unix(), "iat": now.Unix(), "scope": "orders:read profile",
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func bearer(tok string) metadata.MD { return metadata.Pairs("authorization", "Bearer "+tok) }

func TestAttackTable(t *testing.T) {
	f := newFixture(t)
	now := f.clk.Now()
	var jkuHits atomic.Int64
	jku := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { jkuHits.Add(1) }))
	defer jku.Close()

	rsaPub := &f.rsa1.priv.(*rsa.PrivateKey).PublicKey
	der, _ := x509.MarshalPKIXPublicKey(rsaPub)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	other := newRSA(t, "rsa-1") // same kid, key not in the JWKS

	cases := []struct {
		name string
		md   metadata.MD
		want codes.Code
		why  string // in the logged reason
	}{
		{"valid RS256", bearer(f.rsa1.sign(t, "RS256", f.claims(nil), nil)), codes.OK, ""},
		{"valid ES256", bearer(f.ec1.sign(t, "ES256", f.claims(nil), nil)), codes.OK, ""},
		{"alg none", bearer(rawToken(map[string]any{"alg": "none", "kid": "rsa-1"}, f.claims(nil), nil)), codes.Unauthenticated, "three non-empty segments"},
		{"alg none, fake signature", bearer(rawToken(map[string]any{"alg": "none", "kid": "rsa-1"}, f.claims(nil), []byte("x"))), codes.Unauthenticated, "algorithm none is not allowed"},
		{"HS256 with the RSA public key (PEM)", bearer(rawToken(map[string]any{"alg": "HS256", "kid": "rsa-1"}, f.claims(nil), pubPEM)), codes.Unauthenticated, "algorithm HS256 is not allowed"},
		{"HS256 with the RSA public key (DER)", bearer(rawToken(map[string]any{"alg": "HS256", "kid": "rsa-1"}, f.claims(nil), der)), codes.Unauthenticated, "algorithm HS256 is not allowed"},
		{"alg differs from the JWK's alg (PS256 on an RS256 key)", bearer(f.rsa1.sign(t, "PS256", f.claims(nil), nil)), codes.Unauthenticated, "no key for the token's kid and alg"},
		{"alg of another key type (ES256 naming the RSA kid)", bearer((&signer{kid: "rsa-1", priv: f.ec1.priv}).sign(t, "ES256", f.claims(nil), nil)), codes.Unauthenticated, "no key for the token's kid and alg"},
		{"signed by a key not in the JWKS", bearer(other.sign(t, "RS256", f.claims(nil), nil)), codes.Unauthenticated, "verif"},
		{"no exp", bearer(f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { delete(c, "exp") }), nil)), codes.Unauthenticated, "exp"},
		{"exp just outside the skew", bearer(f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["exp"] = now.Add(-61 * time.Second).Unix() }), nil)), codes.Unauthenticated, "exp"},
		{"exp just inside the skew", bearer(f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["exp"] = now.Add(-59 * time.Second).Unix() }), nil)), codes.OK, ""},
		{"nbf just outside the skew", bearer(f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["nbf"] = now.Add(61 * time.Second).Unix() }), nil)), codes.Unauthenticated, "nbf"},
		{"nbf just inside the skew", bearer(f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["nbf"] = now.Add(59 * time.Second).Unix() }), nil)), codes.OK, ""},
		{"iat in the future beyond the skew", bearer(f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["iat"] = now.Add(61 * time.Second).Unix() }), nil)), codes.Unauthenticated, "iat"},
		{"iat in the future within the skew", bearer(f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["iat"] = now.Add(59 * time.Second).Unix() }), nil)), codes.OK, ""},
		{"wrong aud", bearer(f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["aud"] = "someone-else" }), nil)), codes.Unauthenticated, "audience not accepted"},
		{"empty aud", bearer(f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["aud"] = []string{} }), nil)), codes.Unauthenticated, "audience not accepted"},
		{"no aud", bearer(f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { delete(c, "aud") }), nil)), codes.Unauthenticated, "audience not accepted"},
		{"second accepted aud", bearer(f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["aud"] = "other" }), nil)), codes.OK, ""},
		{"wrong iss", bearer(f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["iss"] = "https://evil.test/" }), nil)), codes.Unauthenticated, "issuer not this provider's"},
		{"jku header", bearer(f.rsa1.sign(t, "RS256", f.claims(nil), map[string]any{"jku": jku.URL})), codes.Unauthenticated, "names its own key"},
		{"x5u header", bearer(f.rsa1.sign(t, "RS256", f.claims(nil), map[string]any{"x5u": jku.URL})), codes.Unauthenticated, "names its own key"},
		{"embedded jwk header", bearer(f.rsa1.sign(t, "RS256", f.claims(nil), map[string]any{"jwk": f.rsa1.public(t)})), codes.Unauthenticated, "names its own key"},
		{"token of only dots", bearer(".."), codes.Unauthenticated, "three non-empty segments"},
		{"token of many dots", bearer(strings.Repeat(".", 4096)), codes.Unauthenticated, "more than three segments"},
		{"1 MB token", bearer(strings.Repeat("A", 1<<20)), codes.Unauthenticated, "token of 1048576 bytes"},
		{"not base64url", bearer("a.b!.c"), codes.Unauthenticated, "not base64url"},
		{"two different bearer tokens", metadata.MD{"authorization": {"Bearer " + f.rsa1.sign(t, "RS256", f.claims(nil), nil), "Bearer x.y.z"}}, codes.Unauthenticated, "credential given more than once"},
		{"the same bearer twice (grpc-gateway)", metadata.MD{"authorization": {"Bearer " + f.rsa1.sign(t, "RS256", f.claims(nil), nil), "Bearer " + f.rsa1.sign(t, "RS256", f.claims(nil), nil)}}, codes.OK, ""},
		{"no credentials", metadata.MD{}, codes.Unauthenticated, "no credential the route accepts"},
		{"basic auth only", metadata.Pairs("authorization", "Basic YTpi"), codes.Unauthenticated, "no credential the route accepts"},
		{"valid API key", metadata.Pairs("x-api-key", "k-live-1"), codes.OK, ""},
		{"wrong API key", metadata.Pairs("x-api-key", "k-live-2"), codes.Unauthenticated, "unknown API key"},
		{"API key hash sent as the key", metadata.Pairs("x-api-key", hashKey("k-live-1")), codes.Unauthenticated, "unknown API key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			out := invoke(t, f.ic, "/shop.Orders/Get", tc.md)
			if out.code != tc.want {
				t.Fatalf("code %v (%q), want %v", out.code, out.msg, tc.want)
			}
			if d := time.Since(start); tc.want != codes.OK && d > 200*time.Millisecond {
				t.Errorf("refusal took %v", d)
			}
			if tc.want == codes.Unauthenticated && !strings.HasPrefix(out.msg, "Bearer realm=\"gatehouse\"") {
				t.Errorf("message %q is not a Bearer challenge", out.msg)
			}
			if tc.why != "" {
				if l := f.log.last(); !strings.Contains(l, tc.why) {
					t.Errorf("logged reason %q does not say %q", l, tc.why)
				}
			}
			if tc.want == codes.OK && out.principal.Subject == "" {
				t.Errorf("no principal in the context")
			}
		})
	}
	if n := jkuHits.Load(); n != 0 {
		t.Errorf("the jku/x5u URL was fetched %d times", n)
	}
}

func TestChallenges(t *testing.T) {
	f := newFixture(t)
	out := invoke(t, f.ic, "/shop.Orders/Get", nil)
	if out.msg != `Bearer realm="gatehouse"` {
		t.Errorf("missing: %q", out.msg)
	}
	out = invoke(t, f.ic, "/shop.Orders/Get", bearer("x.y.z"))
	if out.msg != `Bearer realm="gatehouse", error="invalid_token"` {
		t.Errorf("invalid: %q", out.msg)
	}
	if d := out.info.Decision(); !d.Denied || d.By != "authentication" {
		t.Errorf("decision %+v", d)
	}
	if n := f.a.Denials(); n["missing_credentials"] != 1 || n["invalid_credentials"] != 1 {
		t.Errorf("denials %v", n)
	}
}

func TestUnknownKidsFetchAtMostOncePerInterval(t *testing.T) {
	f := newFixture(t)
	before := f.js.hits.Load()
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Go(func() {
			s := &signer{kid: fmt.Sprintf("unknown-%d", i), priv: f.ec1.priv}
			out := invoke(t, f.ic, "/shop.Orders/Get", bearer(s.sign(t, "ES256", f.claims(nil), nil)))
			if out.code != codes.Unauthenticated {
				t.Errorf("unknown kid: %v", out.code)
			}
		})
	}
	wg.Wait()
	if n := f.js.hits.Load() - before; n > 1 {
		t.Fatalf("%d JWKS fetches for 1000 unknown kids, want at most 1", n)
	}
	// Within the interval: none more.
	f.clk.Advance(4 * time.Minute)
	for i := range 50 {
		s := &signer{kid: fmt.Sprintf("again-%d", i), priv: f.ec1.priv}
		invoke(t, f.ic, "/shop.Orders/Get", bearer(s.sign(t, "ES256", f.claims(nil), nil)))
	}
	if n := f.js.hits.Load() - before; n > 1 {
		t.Fatalf("%d JWKS fetches within one interval, want at most 1", n)
	}
}

func TestRotation(t *testing.T) {
	f := newFixture(t)
	old := f.rsa1.sign(t, "RS256", f.claims(nil), nil)
	if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(old)); out.code != codes.OK {
		t.Fatalf("before rotation: %v", out.code)
	}
	rsa2 := newRSA(t, "rsa-2")
	f.js.set(jwks(t, rsa2, f.ec1)) // rsa-1 retired
	if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(rsa2.sign(t, "RS256", f.claims(nil), nil))); out.code != codes.OK {
		t.Fatalf("new kid: %v %q", out.code, out.msg)
	}
	if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(old)); out.code != codes.Unauthenticated {
		t.Fatalf("retired kid: %v", out.code)
	}
}

func TestJWKSDownKeepsCachedKeys(t *testing.T) {
	f := newFixture(t)
	f.js.down.Store(true)
	f.clk.Advance(6 * time.Minute) // the refresh is due
	tok := f.rsa1.sign(t, "RS256", f.claims(nil), nil)
	if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(tok)); out.code != codes.OK {
		t.Fatalf("while refreshing: %v", out.code)
	}
	if err := f.fetched.wait(t); err == nil {
		t.Fatal("the refresh of a down JWKS succeeded")
	}
	if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(tok)); out.code != codes.OK {
		t.Fatalf("after a failed refresh: %v", out.code)
	}
}

func TestNoKeysRefused(t *testing.T) {
	js := newJWKSServer(t, nil)
	js.down.Store(true)
	fetched := make(fetchWaiter, 10)
	clk := newClock()
	a, err := New(Config{JWT: []JWTProvider{{Name: "corp", Issuer: issuer, Audiences: []string{"gatehouse"}, JWKSURI: js.url()}}},
		WithClock(clk.Now), WithHTTPClient(js.client), WithFetchHook(fetched.hook))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fetched.wait(t)
	s := newRSA(t, "rsa-1")
	ic := UnaryServerInterceptor(a, testRoutes(t))
	tok := s.sign(t, "RS256", map[string]any{"iss": issuer, "aud": "gatehouse", "sub": "a", "exp": clk.Now().Add(time.Hour).Unix()}, nil)
	if out := invoke(t, ic, "/shop.Orders/Write", bearer(tok)); out.code != codes.Unauthenticated {
		t.Fatalf("with no keys: %v", out.code)
	}
}

func TestAPIKeyRevokedAfterReload(t *testing.T) {
	f := newFixture(t)
	md := metadata.Pairs("x-api-key", "k-live-1")
	out := invoke(t, f.ic, "/shop.Orders/Get", md)
	if out.code != codes.OK || out.principal.Subject != "acme" || out.principal.Credential != "apikey:partners" {
		t.Fatalf("before: %v %+v", out.code, out.principal)
	}
	writeKeys(t, f.keysFile, "other", "k-live-9")
	f.clk.Advance(2 * time.Second) // past the file poll interval
	if out := invoke(t, f.ic, "/shop.Orders/Get", md); out.code != codes.Unauthenticated {
		t.Fatalf("revoked key: %v", out.code)
	}
	if out := invoke(t, f.ic, "/shop.Orders/Get", metadata.Pairs("x-api-key", "k-live-9")); out.code != codes.OK {
		t.Fatalf("new key: %v", out.code)
	}
	// A broken file keeps the last good keys.
	if err := os.WriteFile(f.keysFile, []byte("- {id: x, sha256: nothex}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(2 * time.Second)
	if out := invoke(t, f.ic, "/shop.Orders/Get", metadata.Pairs("x-api-key", "k-live-9")); out.code != codes.OK {
		t.Fatalf("after a broken file: %v", out.code)
	}
}

func TestRulesAndForward(t *testing.T) {
	f := newFixture(t)
	read := f.rsa1.sign(t, "RS256", f.claims(nil), nil)
	out := invoke(t, f.ic, "/shop.Orders/Get", bearer(read))
	if out.code != codes.OK {
		t.Fatal(out.code)
	}
	fw := out.forward
	if fw.Route != "orders" || len(fw.Remove) != 2 || fw.Remove[0] != "authorization" || fw.Remove[1] != "x-api-key" {
		t.Errorf("forward %+v", fw)
	}
	want := map[string]string{"x-gatehouse-subject": "alice", "x-gatehouse-credential": "jwt:corp", "x-gatehouse-claims-scope": "orders:read profile"}
	got := map[string]string{}
	for _, kv := range fw.Set {
		got[kv[0]] = kv[1]
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if out.info.Principal().Subject != "alice" {
		t.Errorf("info principal %+v", out.info.Principal())
	}

	if out := invoke(t, f.ic, "/shop.Orders/Write", bearer(read)); out.code != codes.PermissionDenied || out.msg != msgDenied {
		t.Errorf("rule false: %v %q", out.code, out.msg)
	} else if d := out.info.Decision(); d.By != "orders-write.auth.rules[0]" {
		t.Errorf("decision %+v", d)
	}
	write := f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["scope"] = "orders:write" }), nil)
	out = invoke(t, f.ic, "/shop.Orders/Write", bearer(write))
	if out.code != codes.OK || len(out.forward.Remove) != 0 {
		t.Errorf("rule true: %v, forward %+v", out.code, out.forward)
	}
	// API keys do not satisfy a route that requires corp only.
	if out := invoke(t, f.ic, "/shop.Orders/Write", metadata.Pairs("x-api-key", "k-live-1")); out.code != codes.Unauthenticated {
		t.Errorf("api key on a jwt route: %v", out.code)
	}
	// Public routes pass without credentials and forward nothing.
	if out := invoke(t, f.ic, "/public.P/Get", nil); out.code != codes.OK || out.forward.Route != "public" || len(out.forward.Set) != 0 {
		t.Errorf("public: %v %+v", out.code, out.forward)
	}
}

func TestRequireAuth(t *testing.T) {
	f := newFixture(t, WithRequireAuth(true), WithExempt(func(m string) bool { return strings.HasPrefix(m, "/grpc.health.v1.") }))
	if out := invoke(t, f.ic, "/public.P/Get", nil); out.code != codes.PermissionDenied {
		t.Errorf("route without auth: %v", out.code)
	}
	if out := invoke(t, f.ic, "/nowhere.N/Get", nil); out.code != codes.PermissionDenied {
		t.Errorf("no route: %v", out.code)
	}
	if out := invoke(t, f.ic, "/grpc.health.v1.Health/Check", nil); out.code != codes.OK {
		t.Errorf("health: %v", out.code)
	}
	if out := invoke(t, f.ic, "/shop.Orders/Get", metadata.Pairs("x-api-key", "k-live-1")); out.code != codes.OK {
		t.Errorf("route with auth: %v", out.code)
	}
}

func TestMTLS(t *testing.T) {
	f := newFixture(t)
	ca, err := testpki.NewCA("clients")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("svc", []string{"svc.example.test"}, nil, []string{"spiffe://example.test/ns/shop/sa/svc"})
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(leaf.TLS.Certificate[0])
	tlsPeer := &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 1},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert, ca.Cert}}}},
	}
	out := invokeCtx(t, f.ic, "/shop.Internal/Get", nil, tlsPeer)
	if out.code != codes.OK || out.principal.Subject != "spiffe://example.test/ns/shop/sa/svc" || out.principal.Credential != MTLS {
		t.Fatalf("verified cert: %v %+v", out.code, out.principal)
	}
	// An unverified certificate (no chains) is not an identity.
	unverified := &peer.Peer{Addr: tlsPeer.Addr, AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}}}
	if out := invokeCtx(t, f.ic, "/shop.Internal/Get", nil, unverified); out.code != codes.Unauthenticated {
		t.Errorf("unverified cert: %v", out.code)
	}
	// The REST path's certificate metadata is trusted only in process.
	spoof := CertMetadata([][]*x509.Certificate{{cert}})
	if out := invoke(t, f.ic, "/shop.Internal/Get", spoof); out.code != codes.Unauthenticated {
		t.Errorf("spoofed certificate metadata over the network: %v", out.code)
	}
	inproc := &peer.Peer{Addr: bufconnAddr{}}
	if out := invokeCtx(t, f.ic, "/shop.Internal/Get", spoof, inproc); out.code != codes.OK {
		t.Errorf("certificate metadata in process: %v", out.code)
	}
}

type bufconnAddr struct{}

func (bufconnAddr) Network() string { return "bufconn" }
func (bufconnAddr) String() string  { return "bufconn" }

func TestQuerySourceOnlyInProcess(t *testing.T) {
	js := newJWKSServer(t, nil)
	s := newRSA(t, "k")
	js.set(jwks(t, s))
	clk := newClock()
	fetched := make(fetchWaiter, 10)
	a, err := New(Config{JWT: []JWTProvider{{Name: "corp", Issuer: issuer, Audiences: []string{"gatehouse"}, JWKSURI: js.url(), Query: "access_token"}}},
		WithClock(clk.Now), WithHTTPClient(js.client), WithFetchHook(fetched.hook))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fetched.wait(t)
	p, _ := NewPolicy(PolicySpec{Require: []string{"corp"}})
	ic := UnaryServerInterceptor(a, func(context.Context, string, metadata.MD) (Route, bool) { return Route{Name: "r", Policy: p}, true })
	tok := s.sign(t, "RS256", map[string]any{"iss": issuer, "aud": "gatehouse", "sub": "q", "exp": clk.Now().Add(time.Hour).Unix()}, nil)
	md := metadata.Pairs(mdHTTPQuery, url.Values{"access_token": {tok}}.Encode())
	if out := invokeCtx(t, ic, "/a.B/C", md, &peer.Peer{Addr: bufconnAddr{}}); out.code != codes.OK {
		t.Errorf("query token in process: %v %q", out.code, out.msg)
	}
	if out := invoke(t, ic, "/a.B/C", md); out.code != codes.Unauthenticated {
		t.Errorf("query metadata over the network: %v", out.code)
	}
}

func TestNewErrorsNameTheField(t *testing.T) {
	_, err := New(Config{APIKeys: []APIKeySet{{Name: "p", KeysFile: "/nonexistent/keys.yaml", KeysFileField: "authentication.api_keys[0].keys_file"}}})
	if err == nil || !strings.Contains(err.Error(), "authentication.api_keys[0].keys_file") {
		t.Fatalf("error %v", err)
	}
}

// syncLog keeps log lines.
type syncLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, string(p))
	l.mu.Unlock()
	return len(p), nil
}

func (l *syncLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == 0 {
		return ""
	}
	return l.lines[len(l.lines)-1]
}
