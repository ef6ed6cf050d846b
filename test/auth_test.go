package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/interceptors/auth"
	"github.com/gatehouse-dev/gatehouse/internal/testpki"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// identityGreeter answers SayHello with the identity metadata it received,
// so that tests see what the gateway passed to the backend.
type identityGreeter struct {
	greeterv1.UnimplementedGreeterServiceServer
}

// seenKeys are the metadata keys the identity greeter reports.
var seenKeys = []string{"x-gatehouse-subject", "x-gatehouse-credential", "x-gatehouse-claims-scope", "x-gatehouse-claims-plan", "authorization", "x-api-key", "x-id-token"}

func (identityGreeter) SayHello(ctx context.Context, _ *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	seen := map[string]string{}
	for _, k := range seenKeys {
		if v := md[k]; len(v) > 0 {
			seen[k] = strings.Join(v, "|")
		}
	}
	b, _ := json.Marshal(seen)
	return &greeterv1.SayHelloResponse{Message: string(b)}, nil
}

// authClock is the gateway's authentication clock in these tests.
type authClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *authClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *authClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// jwtKey is a signing key published under a kid.
type jwtKey struct {
	kid  string
	priv any
}

func (k jwtKey) public(t *testing.T) jwk.Key {
	t.Helper()
	j, err := jwk.Import(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := j.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	_ = pk.Set(jwk.KeyIDKey, k.kid)
	switch k.priv.(type) {
	case *rsa.PrivateKey:
		_ = pk.Set(jwk.AlgorithmKey, jwa.RS256())
	case *ecdsa.PrivateKey:
		_ = pk.Set(jwk.AlgorithmKey, jwa.ES256())
	}
	return pk
}

func (k jwtKey) sign(t *testing.T, alg string, claims, hdr map[string]any) string {
	t.Helper()
	payload, _ := json.Marshal(claims)
	h := jws.NewHeaders()
	_ = h.Set(jws.KeyIDKey, k.kid)
	for n, v := range hdr {
		_ = h.Set(n, v)
	}
	a, _ := jwa.LookupSignatureAlgorithm(alg)
	b, err := jws.Sign(payload, jws.WithKey(a, k.priv, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func jwksDoc(t *testing.T, keys ...jwtKey) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		_ = set.AddKey(k.public(t))
	}
	b, _ := json.Marshal(set)
	return b
}

func hmacToken(hdr, claims map[string]any, secret []byte) string {
	hb, _ := json.Marshal(hdr)
	cb, _ := json.Marshal(claims)
	in := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	if secret == nil {
		return in + "."
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// authWorld is a gateway with TLS, mTLS, JWT and API keys in front of the
// identity greeter and the interop TestService.
type authWorld struct {
	g          *edge.Gateway
	clk        *authClock
	edgeCA     *testpki.CA
	clientCert *testpki.Leaf // from the clients' CA
	otherCert  *testpki.Leaf // from another CA
	rsaKey     jwtKey
	ecKey      jwtKey
	jwks       atomic.Pointer[[]byte]
	jwksDown   atomic.Bool
	jwksHits   atomic.Int64
	keysFile   string
	fetched    chan error
}

const testIssuer = "https://id.example.test/"

func newAuthWorld(t *testing.T) *authWorld {
	t.Helper()
	w := &authWorld{clk: &authClock{now: time.Now().Truncate(time.Second)}, fetched: make(chan error, 2000)}
	dir := t.TempDir()
	mustCA := func(name string) *testpki.CA {
		ca, err := testpki.NewCA(name)
		if err != nil {
			t.Fatal(err)
		}
		return ca
	}
	issue := func(ca *testpki.CA, cn string, uris ...string) *testpki.Leaf {
		l, err := ca.Issue(cn, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, uris)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	w.edgeCA = mustCA("edge CA")
	clients, other := mustCA("clients CA"), mustCA("another CA")
	certFile, keyFile, err := issue(w.edgeCA, "edge").WriteFiles(dir, "edge")
	if err != nil {
		t.Fatal(err)
	}
	clientCA := filepath.Join(dir, "clients.pem")
	if err := os.WriteFile(clientCA, clients.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	w.clientCert = issue(clients, "svc", "spiffe://example.test/ns/shop/sa/svc")
	w.otherCert = issue(other, "intruder", "spiffe://example.test/ns/shop/sa/svc")

	// The JWKS: HTTPS on loopback with a certificate from its own CA.
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	w.rsaKey, w.ecKey = jwtKey{kid: "rsa-1", priv: rk}, jwtKey{kid: "ec-1", priv: ek}
	doc := jwksDoc(t, w.rsaKey, w.ecKey)
	w.jwks.Store(&doc)
	jwksCA := mustCA("jwks CA")
	jwksLeaf := issue(jwksCA, "jwks")
	js := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.jwksHits.Add(1)
		if w.jwksDown.Load() {
			http.Error(rw, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = rw.Write(*w.jwks.Load())
	}))
	js.TLS = &tls.Config{Certificates: []tls.Certificate{jwksLeaf.TLS}}
	js.StartTLS()
	t.Cleanup(js.Close)
	jwksTransport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: jwksCA.Pool()}}
	t.Cleanup(jwksTransport.CloseIdleConnections)

	w.keysFile = filepath.Join(dir, "api-keys.yaml")
	w.writeKeys(t, "acme", "k-live-1")

	backend := startBackend(t, func(s *grpc.Server) { greeterv1.RegisterGreeterServiceServer(s, identityGreeter{}) })
	tlsBlock := func(mode string) string {
		return fmt.Sprintf(`{ cert_file: %q, key_file: %q, client_ca_file: %q, client_auth: %s }`, certFile, keyFile, clientCA, mode)
	}
	yaml := fmt.Sprintf(`
listeners:
  - { name: edge, address: "127.0.0.1:0", tls: %s }
  - { name: native, address: "127.0.0.1:0", protocol: grpc, tls: %s }
  - { name: plain, address: "127.0.0.1:0", require_auth: true }
backends: [{ name: b, endpoints: [%q] }]
authentication:
  jwt:
    - name: corp
      issuer: %q
      audiences: ["gatehouse"]
      jwks_uri: %q
      algorithms: [RS256, PS256, ES256]
  api_keys:
    - { name: partners, keys_file: %q, header: x-api-key }
routes:
  - name: greeter-mtls
    match: { service: "examples.greeter.v1.GreeterService", metadata: [{ name: x-mtls, present: true }] }
    backend: b
    auth: { require: [mtls] }
  - name: greeter
    match: { service: "examples.greeter.v1.GreeterService" }
    backend: b
    auth:
      require: [corp, partners]
      rules: ['principal.credential != "jwt:corp" || "greet" in claims.scope.split(" ")']
      forward_claims: [scope, plan]
  - name: open
    match: { method: "/grpc.testing.TestService/UnaryCall" }
    backend: b
  - name: testsvc
    match: { service: "grpc.testing.TestService" }
    backend: b
    auth: { require: [mtls], rules: ['peer.uri_sans.exists(u, u.startsWith("spiffe://example.test/"))'] }
`, tlsBlock("VERIFY_IF_GIVEN"), tlsBlock("REQUIRE_AND_VERIFY"), backend, testIssuer, js.URL+"/jwks.json", w.keysFile)
	w.g = startGateway(t, yaml,
		edge.WithREST(demo.REST()...),
		edge.WithAuthOptions(
			auth.WithClock(w.clk.Now),
			auth.WithHTTPClient(&http.Client{Transport: jwksTransport, Timeout: 5 * time.Second}),
			auth.WithFetchHook(func(_ string, err error) {
				select {
				case w.fetched <- err:
				default:
				}
			}),
		))
	w.waitFetch(t)
	return w
}

func (w *authWorld) waitFetch(t *testing.T) error {
	t.Helper()
	select {
	case err := <-w.fetched:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no JWKS fetch")
		return nil
	}
}

func (w *authWorld) writeKeys(t *testing.T, idKey ...string) {
	t.Helper()
	var b strings.Builder
	for i := 0; i+1 < len(idKey); i += 2 {
		h := sha256.Sum256([]byte(idKey[i+1]))
		fmt.Fprintf(&b, "- id: %s\n  sha256: %s\n  labels: { plan: gold }\n", idKey[i], hex.EncodeToString(h[:]))
	}
	tmp := w.keysFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, w.keysFile); err != nil {
		t.Fatal(err)
	}
}

func (w *authWorld) claims(mod func(map[string]any)) map[string]any {
	now := w.clk.Now()
	c := map[string]any{"iss": testIssuer, "aud": "gatehouse", "sub": "alice", "exp": now.Add(10 * time.Minute).Unix(), "iat": now.Unix(), "scope": "greet read"}
	if mod != nil {
		mod(c)
	}
	return c
}

// tlsConfig is a client's TLS: trusts the edge CA, presents cert if given.
func (w *authWorld) tlsConfig(cert *testpki.Leaf) *tls.Config {
	c := &tls.Config{RootCAs: w.edgeCA.Pool(), ServerName: "localhost"}
	if cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert.TLS, nil }
	}
	return c
}

func (w *authWorld) grpcConn(t *testing.T, listener string, cert *testpki.Leaf) *grpc.ClientConn {
	t.Helper()
	var creds grpc.DialOption
	if listener == "plain" {
		return dial(t, w.g.Addr(listener).String())
	}
	creds = grpc.WithTransportCredentials(credentials.NewTLS(w.tlsConfig(cert)))
	cc, err := grpc.NewClient(w.g.Addr(listener).String(), creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// hello calls SayHello over gRPC with md and returns the code and the
// identity the backend saw.
func hello(t *testing.T, cc *grpc.ClientConn, md ...string) (codes.Code, map[string]string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := greeterv1.NewGreeterServiceClient(cc).SayHello(metadata.AppendToOutgoingContext(ctx, md...), &greeterv1.SayHelloRequest{Name: "x"})
	if err != nil {
		st := status.Convert(err)
		return st.Code(), nil, st.Message()
	}
	seen := map[string]string{}
	_ = json.Unmarshal([]byte(resp.GetMessage()), &seen)
	return codes.OK, seen, ""
}

// restHello calls POST /v1/greeter:sayHello over HTTPS (HTTP/2 when h2).
func (w *authWorld) restHello(t *testing.T, h2 bool, cert *testpki.Leaf, header ...string) (*http.Response, map[string]string) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: w.tlsConfig(cert), DisableKeepAlives: true}
	var p http.Protocols
	if h2 {
		p.SetHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	tr.Protocols = &p
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, "https://"+w.g.Addr("edge").String()+"/v1/greeter:sayHello", strings.NewReader(`{"name":"x"}`))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("REST: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	seen := map[string]string{}
	if resp.StatusCode == http.StatusOK {
		var r struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &r)
		_ = json.Unmarshal([]byte(r.Message), &seen)
	}
	return resp, seen
}

func TestAuthAttackTable(t *testing.T) {
	w := newAuthWorld(t)
	cc := w.grpcConn(t, "edge", nil)
	now := w.clk.Now()
	var jkuHits atomic.Int64
	jku := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { jkuHits.Add(1) }))
	defer jku.Close()
	der, _ := x509.MarshalPKIXPublicKey(&w.rsaKey.priv.(*rsa.PrivateKey).PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	cases := []struct {
		name  string
		token string
		want  codes.Code
	}{
		{"valid", w.rsaKey.sign(t, "RS256", w.claims(nil), nil), codes.OK},
		{"alg none", hmacToken(map[string]any{"alg": "none", "kid": "rsa-1"}, w.claims(nil), nil), codes.Unauthenticated},
		{"HS256 signed with the RSA public key", hmacToken(map[string]any{"alg": "HS256", "kid": "rsa-1"}, w.claims(nil), pubPEM), codes.Unauthenticated},
		{"alg differs from its JWK's", w.rsaKey.sign(t, "PS256", w.claims(nil), nil), codes.Unauthenticated},
		{"ES256 naming an RSA kid", jwtKey{kid: "rsa-1", priv: w.ecKey.priv}.sign(t, "ES256", w.claims(nil), nil), codes.Unauthenticated},
		{"no exp", w.rsaKey.sign(t, "RS256", w.claims(func(c map[string]any) { delete(c, "exp") }), nil), codes.Unauthenticated},
		{"exp just outside the skew", w.rsaKey.sign(t, "RS256", w.claims(func(c map[string]any) { c["exp"] = at(-61 * time.Second) }), nil), codes.Unauthenticated},
		{"exp just inside the skew", w.rsaKey.sign(t, "RS256", w.claims(func(c map[string]any) { c["exp"] = at(-59 * time.Second) }), nil), codes.OK},
		{"nbf just outside the skew", w.rsaKey.sign(t, "RS256", w.claims(func(c map[string]any) { c["nbf"] = at(61 * time.Second) }), nil), codes.Unauthenticated},
		{"nbf just inside the skew", w.rsaKey.sign(t, "RS256", w.claims(func(c map[string]any) { c["nbf"] = at(59 * time.Second) }), nil), codes.OK},
		{"wrong aud", w.rsaKey.sign(t, "RS256", w.claims(func(c map[string]any) { c["aud"] = "other" }), nil), codes.Unauthenticated},
		{"empty aud", w.rsaKey.sign(t, "RS256", w.claims(func(c map[string]any) { c["aud"] = []string{} }), nil), codes.Unauthenticated},
		{"wrong iss", w.rsaKey.sign(t, "RS256", w.claims(func(c map[string]any) { c["iss"] = "https://evil.test/" }), nil), codes.Unauthenticated},
		{"jku header", w.rsaKey.sign(t, "RS256", w.claims(nil), map[string]any{"jku": jku.URL}), codes.Unauthenticated},
		{"x5u header", w.rsaKey.sign(t, "RS256", w.claims(nil), map[string]any{"x5u": jku.URL}), codes.Unauthenticated},
		{"embedded jwk", w.rsaKey.sign(t, "RS256", w.claims(nil), map[string]any{"jwk": w.rsaKey.public(t)}), codes.Unauthenticated},
		{"token of only dots", "..", codes.Unauthenticated},
		{"rule says no (no greet scope)", w.rsaKey.sign(t, "RS256", w.claims(func(c map[string]any) { c["scope"] = "read" }), nil), codes.PermissionDenied},
	}
	httpFor := map[codes.Code]int{codes.OK: 200, codes.Unauthenticated: 401, codes.PermissionDenied: 403}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, _, msg := hello(t, cc, "authorization", "Bearer "+tc.token)
			if got != tc.want {
				t.Errorf("gRPC: %v (%q), want %v", got, msg, tc.want)
			}
			for _, h2 := range []bool{false, true} {
				resp, _ := w.restHello(t, h2, nil, "Authorization", "Bearer "+tc.token)
				if resp.StatusCode != httpFor[tc.want] {
					t.Errorf("REST (h2 %v): %d, want %d", h2, resp.StatusCode, httpFor[tc.want])
				}
				if h2 && resp.ProtoMajor != 2 {
					t.Errorf("REST over TLS negotiated %s, want HTTP/2", resp.Proto)
				}
				if tc.want == codes.Unauthenticated && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
					t.Errorf("401 without a Bearer challenge: %q", resp.Header.Values("WWW-Authenticate"))
				}
			}
		})
	}
	if jkuHits.Load() != 0 {
		t.Errorf("the token's jku/x5u URL was fetched")
	}
	// No credentials at all: 401 with a challenge.
	if got, _, _ := hello(t, cc); got != codes.Unauthenticated {
		t.Errorf("no credentials: %v", got)
	}
	resp, _ := w.restHello(t, false, nil)
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="gatehouse"` {
		t.Errorf("no credentials over REST: %d %q", resp.StatusCode, resp.Header.Values("WWW-Authenticate"))
	}
}

func TestAuthOversizedTokensRefusedFast(t *testing.T) {
	w := newAuthWorld(t)
	cc := w.grpcConn(t, "edge", nil)
	big := "Bearer " + strings.Repeat("A", 1<<20)
	start := time.Now()
	if got, _, _ := hello(t, cc, "authorization", big); got == codes.OK {
		t.Error("1 MB token accepted over gRPC")
	}
	if resp, _ := w.restHello(t, false, nil, "Authorization", big); resp.StatusCode == 200 {
		t.Error("1 MB token accepted over REST")
	}
	// Within the header limit, still over the token limit.
	mid := "Bearer " + strings.Repeat("A.", 5000)
	if got, _, _ := hello(t, cc, "authorization", mid); got != codes.Unauthenticated {
		t.Errorf("10 kB token: %v", got)
	}
	if got, _, _ := hello(t, cc, "authorization", "Bearer "+strings.Repeat(".", 8000)); got != codes.Unauthenticated {
		t.Errorf("dots: %v", got)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("refusals took %v", d)
	}
}

func TestAuthIdentityToBackend(t *testing.T) {
	w := newAuthWorld(t)
	tok := w.rsaKey.sign(t, "RS256", w.claims(nil), nil)
	cc := w.grpcConn(t, "edge", nil)
	spoof := []string{"x-gatehouse-subject", "root", "x-gatehouse-credential", "jwt:admin", "x-gatehouse-claims-scope", "admin"}

	code, seen, _ := hello(t, cc, append([]string{"authorization", "Bearer " + tok}, spoof...)...)
	if code != codes.OK || seen["x-gatehouse-subject"] != "alice" || seen["x-gatehouse-credential"] != "jwt:corp" ||
		seen["x-gatehouse-claims-scope"] != "greet read" || seen["authorization"] != "" {
		t.Errorf("gRPC with a spoofed identity as metadata: %v %v", code, seen)
	}
	code, seen, _ = hello(t, cc, append([]string{"x-api-key", "k-live-1"}, spoof...)...)
	if code != codes.OK || seen["x-gatehouse-subject"] != "acme" || seen["x-gatehouse-credential"] != "apikey:partners" ||
		seen["x-gatehouse-claims-plan"] != "gold" || seen["x-gatehouse-claims-scope"] != "" || seen["x-api-key"] != "" {
		t.Errorf("API key with a spoofed identity: %v %v", code, seen)
	}
	for _, h2 := range []bool{false, true} {
		resp, seen := w.restHello(t, h2, nil, "Authorization", "Bearer "+tok,
			"X-Gatehouse-Subject", "root", "Grpc-Metadata-X-Gatehouse-Subject", "root",
			"Grpc-Metadata-X-Gatehouse-Claims-Scope", "admin", "X-Gatehouse-Tls-Verified", "1",
			"X-Gatehouse-Tls-Uri-San", "spiffe://example.test/admin")
		if resp.StatusCode != 200 || seen["x-gatehouse-subject"] != "alice" || seen["x-gatehouse-claims-scope"] != "greet read" || seen["authorization"] != "" {
			t.Errorf("REST (h2 %v) with spoofed identity headers: %d %v", h2, resp.StatusCode, seen)
		}
		// Spoofed certificate headers do not make an mTLS caller.
		resp, _ = w.restHello(t, h2, nil, "X-Mtls", "1", "X-Gatehouse-Tls-Verified", "1",
			"Grpc-Metadata-X-Gatehouse-Tls-Verified", "1", "X-Gatehouse-Tls-Uri-San", "spiffe://example.test/admin")
		if resp.StatusCode != 401 {
			t.Errorf("REST (h2 %v) with spoofed certificate headers on an mtls route: %d", h2, resp.StatusCode)
		}
	}
	// A route without auth: the spoofed identity does not reach the backend
	// either (the director strips x-gatehouse-*); the interop server echoes
	// nothing, so check that the call works and the identity keys are the
	// gateway's (covered by routing's director tests).
	if _, err := testgrpc.NewTestServiceClient(cc).UnaryCall(metadata.AppendToOutgoingContext(context.Background(), spoof...), nil); status.Code(err) == codes.Unauthenticated {
		t.Errorf("open route refused: %v", err)
	}
}

func TestAuthMutualTLS(t *testing.T) {
	w := newAuthWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	empty := func(cc *grpc.ClientConn) codes.Code {
		_, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testgrpc.Empty{})
		return status.Code(err)
	}
	// REQUIRE_AND_VERIFY (native listener).
	if got := empty(w.grpcConn(t, "native", w.clientCert)); got != codes.OK {
		t.Errorf("native, client cert: %v", got)
	}
	if got := empty(w.grpcConn(t, "native", nil)); got != codes.Unavailable {
		t.Errorf("native, no client cert: %v, want the handshake refused", got)
	}
	if got := empty(w.grpcConn(t, "native", w.otherCert)); got != codes.Unavailable {
		t.Errorf("native, cert from another CA: %v", got)
	}
	// VERIFY_IF_GIVEN (shared listener): no cert is no identity.
	if got := empty(w.grpcConn(t, "edge", w.clientCert)); got != codes.OK {
		t.Errorf("edge, client cert: %v", got)
	}
	if got := empty(w.grpcConn(t, "edge", nil)); got != codes.Unauthenticated {
		t.Errorf("edge, no client cert: %v", got)
	}
	if got := empty(w.grpcConn(t, "edge", w.otherCert)); got != codes.Unavailable {
		t.Errorf("edge, cert from another CA: %v", got)
	}
	// REST: the certificate the HTTP listener verified makes the identity.
	for _, h2 := range []bool{false, true} {
		resp, seen := w.restHello(t, h2, w.clientCert, "X-Mtls", "1")
		if resp.StatusCode != 200 || seen["x-gatehouse-subject"] != "spiffe://example.test/ns/shop/sa/svc" || seen["x-gatehouse-credential"] != "mtls" {
			t.Errorf("REST (h2 %v) with a client cert: %d %v", h2, resp.StatusCode, seen)
		}
		if resp, _ := w.restHello(t, h2, nil, "X-Mtls", "1"); resp.StatusCode != 401 {
			t.Errorf("REST (h2 %v) without a client cert: %d", h2, resp.StatusCode)
		}
	}
	tr := &http.Transport{TLSClientConfig: w.tlsConfig(w.otherCert), DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	if _, err := (&http.Client{Transport: tr}).Get("https://" + w.g.Addr("edge").String() + "/healthz"); err == nil {
		t.Error("REST with a cert from another CA: handshake accepted")
	}
}

func TestAuthRequireAuthListener(t *testing.T) {
	w := newAuthWorld(t)
	plain := w.grpcConn(t, "plain", nil)
	if _, err := testgrpc.NewTestServiceClient(plain).UnaryCall(context.Background(), &testgrpc.SimpleRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("route without auth on a require_auth listener: %v", err)
	}
	if _, err := testgrpc.NewTestServiceClient(w.grpcConn(t, "edge", nil)).UnaryCall(context.Background(), &testgrpc.SimpleRequest{}); err != nil {
		t.Errorf("the same route on another listener: %v", err)
	}
	if code, seen, _ := hello(t, plain, "x-api-key", "k-live-1"); code != codes.OK || seen["x-gatehouse-subject"] != "acme" {
		t.Errorf("route with auth on a require_auth listener: %v %v", code, seen)
	}
	if _, err := healthpb.NewHealthClient(plain).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health on a require_auth listener: %v", err)
	}
	if code, body, _ := httpDo(t, http.MethodPost, "http://"+w.g.Addr("plain").String()+"/v1/greeter:sayHello", `{"name":"x"}`); code != 401 {
		t.Errorf("REST without credentials on a require_auth listener: %d %s", code, body)
	}
}

func TestAuthKeysAndJWKSLifecycle(t *testing.T) {
	w := newAuthWorld(t)
	cc := w.grpcConn(t, "edge", nil)

	// An API key revoked by a reload of the keys file.
	if code, _, _ := hello(t, cc, "x-api-key", "k-live-1"); code != codes.OK {
		t.Fatalf("API key: %v", code)
	}
	w.writeKeys(t, "acme", "k-live-2")
	w.clk.Advance(2 * time.Second)
	if code, _, _ := hello(t, cc, "x-api-key", "k-live-1"); code != codes.Unauthenticated {
		t.Errorf("revoked API key: %v", code)
	}
	if code, _, _ := hello(t, cc, "x-api-key", "k-live-2"); code != codes.OK {
		t.Errorf("new API key: %v", code)
	}

	// 1000 unknown kids: at most one JWKS fetch.
	before := w.jwksHits.Load()
	var wg sync.WaitGroup
	var notRefused atomic.Int64
	for i := range 1000 {
		wg.Go(func() {
			tok := jwtKey{kid: fmt.Sprintf("unknown-%d", i), priv: w.ecKey.priv}.sign(t, "ES256", w.claims(nil), nil)
			if code, _, _ := hello(t, cc, "authorization", "Bearer "+tok); code != codes.Unauthenticated {
				notRefused.Add(1)
			}
		})
	}
	wg.Wait()
	if n := w.jwksHits.Load() - before; n > 1 {
		t.Errorf("%d JWKS fetches for 1000 unknown kids, want at most 1", n)
	}
	if notRefused.Load() != 0 {
		t.Errorf("%d unknown-kid tokens not refused", notRefused.Load())
	}
	drain := func() {
		for len(w.fetched) > 0 {
			<-w.fetched
		}
	}
	drain()

	// JWKS down: the cached keys keep working.
	tok := w.rsaKey.sign(t, "RS256", w.claims(nil), nil)
	w.jwksDown.Store(true)
	w.clk.Advance(6 * time.Minute) // the refresh is due
	if code, _, _ := hello(t, cc, "authorization", "Bearer "+tok); code != codes.OK {
		t.Errorf("JWKS down, keys cached: %v", code)
	}
	if err := w.waitFetch(t); err == nil {
		t.Error("the refresh of a down JWKS succeeded")
	}
	tok = w.rsaKey.sign(t, "RS256", w.claims(nil), nil)
	if code, _, _ := hello(t, cc, "authorization", "Bearer "+tok); code != codes.OK {
		t.Errorf("JWKS down after a failed refresh: %v", code)
	}

	// Rotation: the new kid is accepted, the retired one refused.
	w.jwksDown.Store(false)
	w.clk.Advance(6 * time.Minute)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	next := jwtKey{kid: "rsa-2", priv: rk}
	doc := jwksDoc(t, next, w.ecKey)
	w.jwks.Store(&doc)
	oldTok := w.rsaKey.sign(t, "RS256", w.claims(nil), nil)
	newTok := next.sign(t, "RS256", w.claims(nil), nil)
	if code, _, msg := hello(t, cc, "authorization", "Bearer "+newTok); code != codes.OK {
		t.Errorf("rotated-in kid: %v %s", code, msg)
	}
	if code, _, _ := hello(t, cc, "authorization", "Bearer "+oldTok); code != codes.Unauthenticated {
		t.Errorf("retired kid: %v", code)
	}
	if n := w.g.Authenticator().Denials(); n["invalid_credentials"] == 0 {
		t.Errorf("denials not counted: %v", n)
	}
}

func TestBackendTLS(t *testing.T) {
	dir := t.TempDir()
	backendCA, err := testpki.NewCA("backend CA")
	if err != nil {
		t.Fatal(err)
	}
	gatewayCA, err := testpki.NewCA("gateway client CA")
	if err != nil {
		t.Fatal(err)
	}
	wrongCA, err := testpki.NewCA("wrong CA")
	if err != nil {
		t.Fatal(err)
	}
	srvLeaf, err := backendCA.Issue("backend", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gwLeaf, err := gatewayCA.Issue("gateway", nil, nil, []string{"spiffe://example.test/gatehouse"})
	if err != nil {
		t.Fatal(err)
	}
	gwCert, gwKey, err := gwLeaf.WriteFiles(dir, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	caFile, wrongFile := filepath.Join(dir, "backend-ca.pem"), filepath.Join(dir, "wrong-ca.pem")
	_ = os.WriteFile(caFile, backendCA.PEM, 0o600)
	_ = os.WriteFile(wrongFile, wrongCA.PEM, 0o600)

	// A backend that requires the gateway's client certificate.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var sawClient atomic.Value
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{srvLeaf.TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    gatewayCA.Pool(),
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 && len(cs.PeerCertificates[0].URIs) > 0 {
				sawClient.Store(cs.PeerCertificates[0].URIs[0].String())
			}
			return nil
		},
	})))
	greeterv1.RegisterGreeterServiceServer(s, identityGreeter{})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	plain := startBackend(t, func(s *grpc.Server) { greeterv1.RegisterGreeterServiceServer(s, identityGreeter{}) })

	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends:
  - { name: secure, endpoints: [%q], tls: { ca_file: %q, client_cert_file: %q, client_key_file: %q } }
  - { name: wrong, endpoints: [%q], tls: { ca_file: %q, client_cert_file: %q, client_key_file: %q } }
  - { name: plain, endpoints: [%q] }
routes:
  - { name: secure, match: { service: "examples.greeter.v1.GreeterService", metadata: [{ name: x-to, exact: secure }] }, backend: secure }
  - { name: wrong, match: { service: "examples.greeter.v1.GreeterService", metadata: [{ name: x-to, exact: wrong }] }, backend: wrong }
  - { name: plain, match: { service: "examples.greeter.v1.GreeterService" }, backend: plain }
`, lis.Addr().String(), caFile, gwCert, gwKey, lis.Addr().String(), wrongFile, gwCert, gwKey, plain))
	cc := dial(t, g.Addr("edge").String())
	if code, _, msg := hello(t, cc, "x-to", "secure"); code != codes.OK {
		t.Errorf("TLS backend with a client certificate: %v %s", code, msg)
	}
	if v, _ := sawClient.Load().(string); v != "spiffe://example.test/gatehouse" {
		t.Errorf("backend saw client certificate %q", v)
	}
	if code, _, _ := hello(t, cc, "x-to", "wrong"); code != codes.Unavailable {
		t.Errorf("TLS backend whose certificate the CA does not sign: %v", code)
	}
	if code, _, msg := hello(t, cc); code != codes.OK {
		t.Errorf("plaintext backend beside TLS ones: %v %s", code, msg)
	}
}

func TestListenerTLSFileErrorsNameTheField(t *testing.T) {
	cfg := `
listeners: [{ name: edge, address: "127.0.0.1:0", tls: { cert_file: /nonexistent/edge.crt, key_file: /nonexistent/edge.key } }]
backends: [{ name: b, endpoints: ["127.0.0.1:1"] }]
routes: [{ name: r, backend: b }]
`
	c, err := configParse(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g, err := edge.New(c)
	if err != nil {
		t.Fatal(err)
	}
	err = g.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "listeners[0].tls.cert_file") {
		t.Errorf("start: %v", err)
	}
	_ = g.Shutdown(context.Background())
}

func configParse(yaml string) (*configv1.Config, error) {
	return config.Parse("test.yaml", []byte(yaml))
}
