package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	"github.com/gatehouse-dev/gatehouse/interceptors/auth"
	"github.com/gatehouse-dev/gatehouse/internal/testpki"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Issuers of the providers of the paths world.
const (
	issuerA = "https://a.example.test/"
	issuerB = "https://b.example.test/"
	issuerH = "https://h.example.test/"
)

// pathsWorld is a gateway on one shared TLS listener (client certificates
// verified if given) with three JWT providers that read JWKS files: a and
// b (two issuers, both accepted by the greeter's default route) and h
// (its token in the x-id-token header), and a plaintext listener that
// requires auth. Routes are picked by x-route: relay (a, forward_token),
// hdr (h), mtls (mtls), public (none), else multi (a or b).
type pathsWorld struct {
	*authWorld
	dir                 string
	certFile, keyFile   string
	clientsCA           *testpki.CA
	keyA, keyB, keyH    jwtKey
	jwksA, jwksB, jwksH string
}

func newECKey(t *testing.T, kid string) jwtKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return jwtKey{kid: kid, priv: k}
}

// writeFileAtomically replaces path with data by a rename, so that a poll
// never reads half a file.
func writeFileAtomically(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newPathsWorld(t *testing.T) *pathsWorld {
	t.Helper()
	w := &pathsWorld{authWorld: &authWorld{clk: &authClock{now: time.Now().Truncate(time.Second)}}, dir: t.TempDir()}
	var err error
	if w.edgeCA, err = testpki.NewCA("edge CA"); err != nil {
		t.Fatal(err)
	}
	if w.clientsCA, err = testpki.NewCA("clients CA"); err != nil {
		t.Fatal(err)
	}
	leaf, err := w.edgeCA.Issue("edge-1", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.certFile, w.keyFile, err = leaf.WriteFiles(w.dir, "edge"); err != nil {
		t.Fatal(err)
	}
	clientCA := filepath.Join(w.dir, "clients.pem")
	writeFileAtomically(t, clientCA, w.clientsCA.PEM)

	w.keyA, w.keyB, w.keyH = newECKey(t, "a-1"), newECKey(t, "b-1"), newECKey(t, "h-1")
	w.jwksA, w.jwksB, w.jwksH = filepath.Join(w.dir, "a.json"), filepath.Join(w.dir, "b.json"), filepath.Join(w.dir, "h.json")
	writeFileAtomically(t, w.jwksA, jwksDoc(t, w.keyA))
	writeFileAtomically(t, w.jwksB, jwksDoc(t, w.keyB))
	writeFileAtomically(t, w.jwksH, jwksDoc(t, w.keyH))

	backend := startBackend(t, func(s *grpc.Server) { greeterv1.RegisterGreeterServiceServer(s, identityGreeter{}) })
	greeter := func(route string) string {
		return fmt.Sprintf(`{ service: "examples.greeter.v1.GreeterService", metadata: [{ name: x-route, exact: %s }] }`, route)
	}
	yaml := fmt.Sprintf(`
listeners:
  - { name: edge, address: "127.0.0.1:0", tls: { cert_file: %q, key_file: %q, client_ca_file: %q, client_auth: VERIFY_IF_GIVEN } }
  - { name: plain, address: "127.0.0.1:0", require_auth: true }
backends: [{ name: b, endpoints: [%q] }]
authentication:
  jwt:
    - { name: a, issuer: %q, audiences: [gatehouse], jwks_file: %q, algorithms: [ES256] }
    - { name: b, issuer: %q, audiences: [gatehouse], jwks_file: %q, algorithms: [ES256] }
    - { name: h, issuer: %q, audiences: [gatehouse], jwks_file: %q, algorithms: [ES256], from: { header: x-id-token } }
routes:
  - { name: relay, match: %s, backend: b, auth: { require: [a], forward_token: true } }
  - { name: hdr, match: %s, backend: b, auth: { require: [h], forward_claims: [scope] } }
  - { name: mtls, match: %s, backend: b, auth: { require: [mtls] } }
  - { name: public, match: %s, backend: b, auth: { require: [none] } }
  - { name: multi, match: { service: "examples.greeter.v1.GreeterService" }, backend: b, auth: { require: [a, b] } }
`, w.certFile, w.keyFile, clientCA, backend,
		issuerA, w.jwksA, issuerB, w.jwksB, issuerH, w.jwksH,
		greeter("relay"), greeter("hdr"), greeter("mtls"), greeter("public"))
	w.g = startGateway(t, yaml, edge.WithREST(demo.REST()...), edge.WithAuthOptions(auth.WithClock(w.clk.Now)))
	return w
}

// token signs claims of issuer iss (sub alice, scope greet) with k.
func (w *pathsWorld) token(t *testing.T, k jwtKey, iss string) string {
	t.Helper()
	now := w.clk.Now()
	return k.sign(t, "ES256", map[string]any{
		"iss": iss, "aud": "gatehouse", "sub": "alice", "scope": "greet",
		"exp": now.Add(10 * time.Minute).Unix(), "iat": now.Unix(),
	}, nil)
}

// TestAuthTwoIssuersOnOneRoute: a route that requires two providers takes
// each one's tokens, and refuses a token that claims one issuer but is
// signed with the other's key (under its own kid or the other's).
func TestAuthTwoIssuersOnOneRoute(t *testing.T) {
	w := newPathsWorld(t)
	cc := w.grpcConn(t, "edge", nil)
	cases := []struct {
		name  string
		token string
		want  codes.Code
		cred  string
	}{
		{"issuer a, a's key", w.token(t, w.keyA, issuerA), codes.OK, "jwt:a"},
		{"issuer b, b's key", w.token(t, w.keyB, issuerB), codes.OK, "jwt:b"},
		{"issuer a, b's key under b's kid", w.token(t, w.keyB, issuerA), codes.Unauthenticated, ""},
		{"issuer a, b's key under a's kid", w.token(t, jwtKey{kid: w.keyA.kid, priv: w.keyB.priv}, issuerA), codes.Unauthenticated, ""},
		{"issuer b, a's key under b's kid", w.token(t, jwtKey{kid: w.keyB.kid, priv: w.keyA.priv}, issuerB), codes.Unauthenticated, ""},
		{"issuer h (not on this route), h's key", w.token(t, w.keyH, issuerH), codes.Unauthenticated, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, seen, msg := hello(t, cc, "authorization", "Bearer "+tc.token)
			if code != tc.want {
				t.Fatalf("gRPC: %v %q, want %v", code, msg, tc.want)
			}
			if tc.want == codes.OK && (seen["x-gatehouse-credential"] != tc.cred || seen["x-gatehouse-subject"] != "alice") {
				t.Errorf("backend saw %v, want credential %s", seen, tc.cred)
			}
			resp, _ := w.restHello(t, true, nil, "Authorization", "Bearer "+tc.token)
			if want := map[codes.Code]int{codes.OK: 200, codes.Unauthenticated: 401}[tc.want]; resp.StatusCode != want {
				t.Errorf("REST: %d, want %d", resp.StatusCode, want)
			}
		})
	}
}

// TestAuthNamedHeaderSource: a provider whose token comes from a named
// header reads it there (its whole value), and not from authorization.
func TestAuthNamedHeaderSource(t *testing.T) {
	w := newPathsWorld(t)
	cc := w.grpcConn(t, "edge", nil)
	tok := w.token(t, w.keyH, issuerH)
	code, seen, msg := hello(t, cc, "x-route", "hdr", "x-id-token", tok)
	if code != codes.OK || seen["x-gatehouse-credential"] != "jwt:h" || seen["x-gatehouse-claims-scope"] != "greet" {
		t.Fatalf("token in x-id-token: %v %q %v", code, msg, seen)
	}
	if seen["x-id-token"] != "" {
		t.Errorf("the route does not relay the token, yet the backend saw x-id-token %q", seen["x-id-token"])
	}
	if code, _, _ := hello(t, cc, "x-route", "hdr", "authorization", "Bearer "+tok); code != codes.Unauthenticated {
		t.Errorf("the same token in authorization: %v, want UNAUTHENTICATED", code)
	}
	if code, _, _ := hello(t, cc, "x-route", "hdr", "x-id-token", "Bearer "+tok); code != codes.Unauthenticated {
		t.Errorf("a Bearer prefix in a named header: %v, want UNAUTHENTICATED", code)
	}
	for _, h2 := range []bool{false, true} {
		if resp, seen := w.restHello(t, h2, nil, "X-Route", "hdr", "X-Id-Token", tok); resp.StatusCode != 200 || seen["x-gatehouse-credential"] != "jwt:h" {
			t.Errorf("REST (h2 %v) with the token in X-Id-Token: %d %v", h2, resp.StatusCode, seen)
		}
	}
}

// TestAuthJWKSFileRotatedWhileServing: a JWKS file replaced on disk puts
// the new kid in force and retires the old one, for a token already
// verified and cached too.
func TestAuthJWKSFileRotatedWhileServing(t *testing.T) {
	w := newPathsWorld(t)
	cc := w.grpcConn(t, "edge", nil)
	old := w.token(t, w.keyA, issuerA)
	for range 2 { // the second use comes from the cache of verified tokens
		if code, _, msg := hello(t, cc, "authorization", "Bearer "+old); code != codes.OK {
			t.Fatalf("before rotation: %v %q", code, msg)
		}
	}
	next := newECKey(t, "a-2")
	writeFileAtomically(t, w.jwksA, jwksDoc(t, next))
	w.clk.Advance(2 * time.Second) // past the file poll interval
	// The cached token comes back first: nothing else has read the file.
	if code, _, _ := hello(t, cc, "authorization", "Bearer "+old); code != codes.Unauthenticated {
		t.Errorf("retired kid: %v, want UNAUTHENTICATED", code)
	}
	if code, _, msg := hello(t, cc, "authorization", "Bearer "+w.token(t, next, issuerA)); code != codes.OK {
		t.Errorf("new kid: %v %q", code, msg)
	}
	if resp, _ := w.restHello(t, false, nil, "Authorization", "Bearer "+old); resp.StatusCode != 401 {
		t.Errorf("retired kid over REST: %d", resp.StatusCode)
	}
	// A file that does not parse keeps the keys in force.
	writeFileAtomically(t, w.jwksA, []byte("{not json"))
	w.clk.Advance(2 * time.Second)
	if code, _, _ := hello(t, cc, "authorization", "Bearer "+w.token(t, next, issuerA)); code != codes.OK {
		t.Errorf("after a broken file: %v", code)
	}
}

// TestAuthTokenRelay: forward_token relays the caller's token to the
// backend; without it the token is stripped.
func TestAuthTokenRelay(t *testing.T) {
	w := newPathsWorld(t)
	cc := w.grpcConn(t, "edge", nil)
	tok := w.token(t, w.keyA, issuerA)
	code, seen, msg := hello(t, cc, "x-route", "relay", "authorization", "Bearer "+tok)
	if code != codes.OK || seen["authorization"] != "Bearer "+tok || seen["x-gatehouse-subject"] != "alice" {
		t.Errorf("forward_token: %v %q, backend saw %v", code, msg, seen)
	}
	code, seen, msg = hello(t, cc, "authorization", "Bearer "+tok)
	if code != codes.OK || seen["authorization"] != "" || seen["x-gatehouse-subject"] != "alice" {
		t.Errorf("without forward_token: %v %q, backend saw %v", code, msg, seen)
	}
	for _, h2 := range []bool{false, true} {
		resp, seen := w.restHello(t, h2, nil, "X-Route", "relay", "Authorization", "Bearer "+tok)
		if resp.StatusCode != 200 || seen["authorization"] != "Bearer "+tok {
			t.Errorf("REST (h2 %v) forward_token: %d %v", h2, resp.StatusCode, seen)
		}
		resp, seen = w.restHello(t, h2, nil, "Authorization", "Bearer "+tok)
		if resp.StatusCode != 200 || seen["authorization"] != "" {
			t.Errorf("REST (h2 %v) without forward_token: %d %v", h2, resp.StatusCode, seen)
		}
	}
}

// TestAuthDNSOnlyClientCertificate: a client certificate with a DNS SAN
// and no URI SAN gives the DNS name as the identity.
func TestAuthDNSOnlyClientCertificate(t *testing.T) {
	w := newPathsWorld(t)
	leaf, err := w.clientsCA.Issue("svc", []string{"svc.shop.example.test", "alt.example.test"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	code, seen, msg := hello(t, w.grpcConn(t, "edge", leaf), "x-route", "mtls")
	if code != codes.OK || seen["x-gatehouse-subject"] != "svc.shop.example.test" || seen["x-gatehouse-credential"] != "mtls" {
		t.Errorf("gRPC: %v %q, backend saw %v", code, msg, seen)
	}
	for _, h2 := range []bool{false, true} {
		resp, seen := w.restHello(t, h2, leaf, "X-Route", "mtls")
		if resp.StatusCode != 200 || seen["x-gatehouse-subject"] != "svc.shop.example.test" {
			t.Errorf("REST (h2 %v): %d %v", h2, resp.StatusCode, seen)
		}
	}
	if code, _, _ := hello(t, w.grpcConn(t, "edge", nil), "x-route", "mtls"); code != codes.Unauthenticated {
		t.Errorf("no certificate: %v", code)
	}
}

// TestListenerRefusesOldTLS: a TLS 1.1 (or 1.0) client cannot complete a
// handshake with a listener; TLS 1.2 can.
func TestListenerRefusesOldTLS(t *testing.T) {
	w := newPathsWorld(t)
	addr := w.g.Addr("edge").String()
	for _, tc := range []struct {
		name     string
		min, max uint16
		ok       bool
	}{
		{"TLS 1.0", tls.VersionTLS10, tls.VersionTLS10, false},
		{"TLS 1.1", tls.VersionTLS11, tls.VersionTLS11, false},
		{"TLS 1.2", tls.VersionTLS12, tls.VersionTLS12, true},
		{"TLS 1.3", tls.VersionTLS13, tls.VersionTLS13, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &net.Dialer{Timeout: 5 * time.Second}
			conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{
				RootCAs: w.edgeCA.Pool(), ServerName: "localhost", MinVersion: tc.min, MaxVersion: tc.max,
			})
			if err == nil {
				_ = conn.Close()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("handshake error %v, want success %v", err, tc.ok)
			}
		})
	}
}

// TestListenerCertificateReload: the certificate files of a shared TLS
// listener are replaced while a connection is open. That connection keeps
// working (and still has the old certificate: it was not redialled), and
// the next handshake presents the new certificate.
func TestListenerCertificateReload(t *testing.T) {
	w := newPathsWorld(t)
	addr := w.g.Addr("edge").String()
	tok := w.token(t, w.keyA, issuerA)
	cc := w.grpcConn(t, "edge", nil)
	call := func() (codes.Code, string) {
		t.Helper()
		var p peer.Peer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := greeterv1.NewGreeterServiceClient(cc).SayHello(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok),
			&greeterv1.SayHelloRequest{Name: "x"}, grpc.Peer(&p))
		cn := ""
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			cn = ti.State.PeerCertificates[0].Subject.CommonName
		}
		return status.Code(err), cn
	}
	handshake := func() string {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: w.edgeCA.Pool(), ServerName: "localhost"})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if code, cn := call(); code != codes.OK || cn != "edge-1" {
		t.Fatalf("before the swap: %v, certificate %q", code, cn)
	}

	leaf, err := w.edgeCA.Issue("edge-2", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Key first, then the certificate: between the two the pair does not
	// match, which keeps the old one in force until the next check.
	writeFileAtomically(t, w.keyFile, leaf.KeyPEM)
	writeFileAtomically(t, w.certFile, leaf.CertPEM)
	// The files are checked at most once a second, by a handshake.
	deadline := time.Now().Add(10 * time.Second)
	cn := handshake()
	for cn != "edge-2" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		cn = handshake()
	}
	if cn != "edge-2" {
		t.Fatalf("new handshakes still present %q after the files changed", cn)
	}
	if code, cn := call(); code != codes.OK || cn != "edge-1" {
		t.Errorf("the connection open across the swap: %v, certificate %q (want OK on the same connection, edge-1)", code, cn)
	}
	if resp, _ := w.restHello(t, true, nil, "Authorization", "Bearer "+tok); resp.StatusCode != 200 || resp.TLS == nil ||
		resp.TLS.PeerCertificates[0].Subject.CommonName != "edge-2" {
		t.Errorf("REST after the swap: %d", resp.StatusCode)
	}
}

// TestAuthRequireNoneOnDefaultDenyListener: a route that requires "none"
// opts out of its listener's require_auth, over gRPC and REST; the
// credentials its callers send are not checked and do not reach the
// backend; the other routes on that listener still require theirs.
func TestAuthRequireNoneOnDefaultDenyListener(t *testing.T) {
	w := newPathsWorld(t)
	plain := w.grpcConn(t, "plain", nil)
	if code, seen, msg := hello(t, plain, "x-route", "public"); code != codes.OK || len(seen) != 0 {
		t.Errorf("public route without credentials: %v %q, backend saw %v", code, msg, seen)
	}
	if code, seen, msg := hello(t, plain, "x-route", "public", "authorization", "Bearer x.y.z", "x-gatehouse-subject", "root"); code != codes.OK || len(seen) != 0 {
		t.Errorf("public route with an unchecked token and a spoofed identity: %v %q, backend saw %v", code, msg, seen)
	}
	if code, _, _ := hello(t, plain); code != codes.Unauthenticated {
		t.Errorf("a route that requires a or b, without credentials: %v", code)
	}
	url := "http://" + w.g.Addr("plain").String() + "/v1/greeter:sayHello"
	if code, body, _ := httpDo(t, "POST", url, `{"name":"x"}`, "X-Route", "public", "Authorization", "Bearer x.y.z"); code != 200 || strings.Contains(body, "authorization") {
		t.Errorf("REST on the public route: %d %s", code, body)
	}
	if code, _, _ := httpDo(t, "POST", url, `{"name":"x"}`); code != 401 {
		t.Errorf("REST on a route with auth, without credentials: %d", code)
	}
}

// TestAuthKeyFilesFromEnvironment: keys_file and jwks_file given as
// "${ENV_VAR}" take the variable's value as the file's content, as
// certificates and keys do, from the config file to the call.
func TestAuthKeyFilesFromEnvironment(t *testing.T) {
	key := newECKey(t, "env-1")
	t.Setenv("GATEHOUSE_TEST_JWKS", string(jwksDoc(t, key)))
	h := sha256.Sum256([]byte("k-env-1"))
	t.Setenv("GATEHOUSE_TEST_API_KEYS", "- { id: acme, sha256: "+hex.EncodeToString(h[:])+" }\n")
	backend := startBackend(t, func(s *grpc.Server) { greeterv1.RegisterGreeterServiceServer(s, identityGreeter{}) })
	clk := &authClock{now: time.Now().Truncate(time.Second)}
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends: [{ name: b, endpoints: [%q] }]
authentication:
  jwt: [{ name: corp, issuer: %q, audiences: [gatehouse], jwks_file: "${GATEHOUSE_TEST_JWKS}", algorithms: [ES256] }]
  api_keys: [{ name: partners, keys_file: "${GATEHOUSE_TEST_API_KEYS}" }]
routes: [{ name: greeter, match: { service: "examples.greeter.v1.GreeterService" }, backend: b, auth: { require: [corp, partners] } }]
`, backend, issuerA), edge.WithAuthOptions(auth.WithClock(clk.Now)))
	cc := dial(t, g.Addr("edge").String())
	tok := key.sign(t, "ES256", map[string]any{"iss": issuerA, "aud": "gatehouse", "sub": "alice", "exp": clk.Now().Add(time.Hour).Unix()}, nil)
	if code, seen, msg := hello(t, cc, "authorization", "Bearer "+tok); code != codes.OK || seen["x-gatehouse-subject"] != "alice" {
		t.Errorf("JWT against the JWKS from the environment: %v %q %v", code, msg, seen)
	}
	if code, seen, msg := hello(t, cc, "x-api-key", "k-env-1"); code != codes.OK || seen["x-gatehouse-subject"] != "acme" {
		t.Errorf("API key from the environment: %v %q %v", code, msg, seen)
	}
}
