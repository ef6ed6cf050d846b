package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	"github.com/gatehouse-dev/gatehouse/examples/greeter"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
)

// sourceWorld is a gateway whose routes pick a backend by source_cidrs,
// with an access log, in front of two recording greeters.
type sourceWorld struct {
	g            *edge.Gateway
	main, office *seenGreeter
	log          *syncBuffer
}

func newSourceWorld(t *testing.T, trusted string) *sourceWorld {
	t.Helper()
	w := &sourceWorld{log: &syncBuffer{}}
	start := func(name string) (*seenGreeter, string) {
		g := &seenGreeter{Server: greeter.New(name)}
		return g, startBackend(t, func(s *grpc.Server) { greeterv1.RegisterGreeterServiceServer(s, g) })
	}
	var mainAddr, officeAddr string
	w.main, mainAddr = start("main")
	w.office, officeAddr = start("office")
	w.g = startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}, {name: native, address: "127.0.0.1:0", protocol: grpc}]
backends:
  - {name: main, endpoints: [%q]}
  - {name: office, endpoints: [%q]}
authentication: {trusted_proxies: [%s]}
routes:
  - {name: office, match: {service: "examples.greeter.v1.GreeterService", source_cidrs: ["203.0.113.0/24"]}, backend: office}
  - {name: main, match: {service: "examples.greeter.v1.GreeterService"}, backend: main}
`, mainAddr, officeAddr, trusted), edge.WithREST(demo.REST()...), edge.WithAccessLogger(jsonLogger(w.log)))
	return w
}

// call makes one SayHello with x-forwarded-for xff, over kind ("gRPC" on
// the shared listener, "native gRPC" on the grpc one, or "REST"), and
// returns the route the access log names, its peer, and the
// x-forwarded-for the backend got.
func (w *sourceWorld) call(t *testing.T, kind, xff string) (route, peer, gotXFF string) {
	t.Helper()
	logged := len(w.log.lines(t))
	if kind == "REST" {
		code, body, _ := httpDo(t, http.MethodPost, "http://"+w.g.Addr("edge").String()+"/v1/greeter:sayHello", `{"name":"x"}`,
			"X-Forwarded-For", xff)
		if code != http.StatusOK {
			t.Fatalf("REST: %d %s", code, body)
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", xff)
		listener := "edge" // gRPC on the shared listener: grpc.Server.ServeHTTP
		if kind == "native gRPC" {
			listener = "native" // grpc-go's own transport
		}
		if _, err := greeterv1.NewGreeterServiceClient(dial(t, w.g.Addr(listener).String())).SayHello(ctx, &greeterv1.SayHelloRequest{Name: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	// The access log line is written when the call ends, which the
	// client may see first.
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines := w.log.lines(t)
		if len(lines) > logged {
			l := lines[len(lines)-1]
			route, _ = l["route"].(string)
			peer, _ = l["peer"].(string)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no access log line")
		}
		time.Sleep(5 * time.Millisecond)
	}
	g := w.main
	if route == "office" {
		g = w.office
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.got) == 0 {
		t.Fatalf("backend of route %q got no call", route)
	}
	md := g.got[len(g.got)-1]
	g.got = g.got[:0]
	return route, peer, strings.Join(md.Get("x-forwarded-for"), "|")
}

// TestTrustedProxies: x-forwarded-for is the client's word unless the
// immediate peer is a trusted proxy; then it is walked right to left over
// the trusted hops. The client so found is what routes' source_cidrs see,
// what the access log names and where the x-forwarded-for that the backend
// gets starts; for gRPC and REST alike.
func TestTrustedProxies(t *testing.T) {
	for _, kind := range []string{"gRPC", "native gRPC", "REST"} {
		t.Run(kind+"/untrusted", func(t *testing.T) {
			w := newSourceWorld(t, `"10.0.0.0/8"`) // loopback is no trusted proxy
			route, peer, xff := w.call(t, kind, "203.0.113.5, 10.0.0.2")
			if route != "main" || !strings.HasPrefix(peer, "127.0.0.1") || xff != "127.0.0.1" {
				t.Errorf("spoofed x-forwarded-for from an untrusted client: route %q, peer %q, backend x-forwarded-for %q; want main, 127.0.0.1, 127.0.0.1", route, peer, xff)
			}
		})
		t.Run(kind+"/trusted", func(t *testing.T) {
			w := newSourceWorld(t, `"127.0.0.0/8", "10.0.0.0/8"`)
			route, peer, xff := w.call(t, kind, "198.51.100.66, 203.0.113.5, 10.0.0.2")
			if route != "office" || peer != "203.0.113.5" || xff != "203.0.113.5, 10.0.0.2, 127.0.0.1" {
				t.Errorf("through trusted proxies: route %q, peer %q, backend x-forwarded-for %q; want office, 203.0.113.5, \"203.0.113.5, 10.0.0.2, 127.0.0.1\"", route, peer, xff)
			}
			// The client hop is untrusted: what it says before itself is
			// dropped, and a client outside the CIDR goes to main.
			route, peer, xff = w.call(t, kind, "203.0.113.5, 198.51.100.66")
			if route != "main" || peer != "198.51.100.66" || xff != "198.51.100.66, 127.0.0.1" {
				t.Errorf("client hop outside source_cidrs: route %q, peer %q, backend x-forwarded-for %q", route, peer, xff)
			}
		})
	}
}

// writeECKey writes a P-256 PKCS #8 PEM key and returns it and its path.
func writeECKey(t *testing.T) (*ecdsa.PrivateKey, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gateway-jwt.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return k, path
}

// identityConfig is a gateway with custom identity names and an internal
// JWT in front of the greeter at addr, with an API key "k-live-1"; extra
// goes under backends and routes (one YAML list item each, or "").
func identityConfig(addr, keyFile, extraBackend, extraRoute string) string {
	sum := sha256.Sum256([]byte("k-live-1"))
	return fmt.Sprintf(identityConfigYAML, addr, extraBackend, hex.EncodeToString(sum[:]), keyFile, extraRoute)
}

const identityConfigYAML = `
listeners: [{name: edge, address: "127.0.0.1:0"}]
admin: {address: "127.0.0.1:0"}
backends:
  - {name: greeter, endpoints: [%q]}
  %s
rest: {forward_headers: [x-api-key, x-user, x-user-credential, x-user-claim-plan, x-internal-jwt]}
authentication:
  api_keys:
    - name: partners
      header: x-api-key
      keys: [{id: acme, sha256: %q, labels: {plan: gold}}]
  identity: {subject_header: x-user, credential_header: x-user-credential, claims_prefix: x-user-claim-}
  internal_jwt: {signing_key_file: %q, key_id: gw-1, audience: backends, lifetime: 30s, header: x-internal-jwt}
routes:
  - name: hello
    match: {service: "examples.greeter.v1.GreeterService"}
    backend: greeter
    auth: {require: [partners], forward_claims: [plan]}
  %s
`

// TestIdentityHeadersAndInternalJWT: the identity goes to the backend under
// the configured names, inbound metadata under those names is removed
// whichever way it came, and the backend gets a short-lived token signed by
// the gateway that it verifies with the gateway's public key.
func TestIdentityHeadersAndInternalJWT(t *testing.T) {
	key, keyFile := writeECKey(t)
	backend, addr := startGreeter(t)
	g := startGateway(t, identityConfig(addr, keyFile, "", ""), edge.WithREST(demo.REST()...))
	spoof := []string{"x-user", "root", "x-user-credential", "jwt:admin", "x-user-claim-plan", "platinum",
		"x-user-claim-admin", "true", "x-internal-jwt", "Bearer forged", "x-gatehouse-subject", "root"}

	check := func(t *testing.T, md metadata.MD) {
		t.Helper()
		want := map[string]string{"x-user": "acme", "x-user-credential": "apikey:partners", "x-user-claim-plan": "gold"}
		for k, v := range want {
			if got := md.Get(k); len(got) != 1 || got[0] != v {
				t.Errorf("%s = %q, want [%s]", k, got, v)
			}
		}
		for _, k := range []string{"x-user-claim-admin", "x-gatehouse-subject", "x-api-key"} {
			if got := md.Get(k); len(got) != 0 {
				t.Errorf("%s = %q reached the backend", k, got)
			}
		}
		vals := md.Get("x-internal-jwt")
		if len(vals) != 1 || !strings.HasPrefix(vals[0], "Bearer ") {
			t.Fatalf("x-internal-jwt = %q, want one Bearer token", vals)
		}
		raw := strings.TrimPrefix(vals[0], "Bearer ")
		tok, err := jwt.ParseString(raw, jwt.WithKey(jwa.ES256(), &key.PublicKey), jwt.WithValidate(true),
			jwt.WithIssuer("gatehouse"), jwt.WithAudience("backends"), jwt.WithRequiredClaim(jwt.ExpirationKey))
		if err != nil {
			t.Fatalf("the backend cannot verify the internal JWT: %v", err)
		}
		sub, _ := tok.Subject()
		iat, _ := tok.IssuedAt()
		exp, _ := tok.Expiration()
		var plan string
		_ = tok.Get("plan", &plan)
		if sub != "acme" || plan != "gold" || exp.Sub(iat) != 30*time.Second || time.Since(iat) > time.Minute {
			t.Errorf("internal JWT: sub %q plan %q iat %v exp %v", sub, plan, iat, exp)
		}
		msg, err := jws.Parse([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		if kid, _ := msg.Signatures()[0].ProtectedHeaders().KeyID(); kid != "gw-1" {
			t.Errorf("kid = %q, want gw-1", kid)
		}
	}

	t.Run("gRPC", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, append([]string{"x-api-key", "k-live-1"}, spoof...)...)
		if _, err := greeterv1.NewGreeterServiceClient(dial(t, g.Addr("edge").String())).SayHello(ctx, &greeterv1.SayHelloRequest{Name: "x"}); err != nil {
			t.Fatal(err)
		}
		check(t, backend.last())
	})
	t.Run("REST", func(t *testing.T) {
		hdr := []string{"X-Api-Key", "k-live-1"}
		for i := 0; i+1 < len(spoof); i += 2 {
			hdr = append(hdr, spoof[i], spoof[i+1])
		}
		hdr = append(hdr, "Grpc-Metadata-X-User", "root")
		code, body, _ := httpDo(t, http.MethodPost, "http://"+g.Addr("edge").String()+"/v1/greeter:sayHello", `{"name":"x"}`, hdr...)
		if code != http.StatusOK {
			t.Fatalf("REST: %d %s", code, body)
		}
		check(t, backend.last())
	})
	t.Run("refused calls get no token", func(t *testing.T) {
		n := len(backend.got)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, spoof...)
		_, err := greeterv1.NewGreeterServiceClient(dial(t, g.Addr("edge").String())).SayHello(ctx, &greeterv1.SayHelloRequest{Name: "x"})
		if status.Code(err) != codes.Unauthenticated || len(backend.got) != n {
			t.Errorf("spoofed identity without a credential: %v", err)
		}
	})
}

// TestInternalJWTKeyFileMissing: a signing key that is not there stops the
// start with an error that names the field.
func TestInternalJWTKeyFileMissing(t *testing.T) {
	cfg, err := configParse(identityConfig("127.0.0.1:1", filepath.Join(t.TempDir(), "absent.pem"), "", ""))
	if err != nil {
		t.Fatal(err)
	}
	g, err := edge.New(cfg)
	if err == nil {
		_ = g.Shutdown(context.Background())
		t.Fatal("the gateway started without its internal JWT signing key")
	}
	if !strings.Contains(err.Error(), "authentication.internal_jwt.signing_key_file") {
		t.Errorf("error %q does not name the field", err)
	}
}

// TestAuthAndBreakerMetrics scrapes /metrics after refused calls and after
// a backend's circuit breaker opens.
func TestAuthAndBreakerMetrics(t *testing.T) {
	fs := &faultServer{unary: func(context.Context, int64) error { return status.Error(codes.Unavailable, "down") }}
	faulty, _ := startFault(t, fs)
	_, keyFile := writeECKey(t)
	_, addr := startGreeter(t)
	g := startGateway(t, identityConfig(addr, keyFile,
		fmt.Sprintf(`- {name: faulty, endpoints: [%q], circuit_breaker: {consecutive_failures: 2, open_for: 60s}}`, faulty),
		`- {name: testsvc, match: {service: grpc.testing.TestService}, backend: faulty}`))

	cc := dial(t, g.Addr("edge").String())
	before := scrape(t, g)
	if v := value(t, before, "gatehouse_upstream_breaker_state", map[string]string{"backend": "faulty"}); v != 0 {
		t.Errorf("breaker state before any call = %v, want 0 (closed)", v)
	}
	if _, ok := before["gatehouse_upstream_breaker_state"]; !ok {
		t.Error("gatehouse_upstream_breaker_state is missing")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gc := greeterv1.NewGreeterServiceClient(cc)
	for i, md := range [][]string{nil, nil, {"x-api-key", "wrong"}} {
		_, err := gc.SayHello(metadata.AppendToOutgoingContext(ctx, md...), &greeterv1.SayHelloRequest{Name: "x"})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("call %d: %v, want UNAUTHENTICATED", i, err)
		}
	}
	tc := testgrpc.NewTestServiceClient(cc)
	for range 3 {
		_ = unaryOK(ctx, tc)
	}

	after := scrape(t, g)
	for _, c := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"reason": "missing_credentials", "route": "hello"}, 2},
		{map[string]string{"reason": "invalid_credentials", "route": "hello"}, 1},
	} {
		if got := value(t, after, "gatehouse_auth_failures_total", c.labels) - value(t, before, "gatehouse_auth_failures_total", c.labels); got != c.want {
			t.Errorf("gatehouse_auth_failures_total%v moved by %v, want %v", c.labels, got, c.want)
		}
	}
	if v := value(t, after, "gatehouse_upstream_breaker_state", map[string]string{"backend": "faulty"}); v != 2 {
		t.Errorf("breaker state after failures = %v, want 2 (open)", v)
	}
	if f := after["gatehouse_upstream_breaker_state"]; f != nil {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "backend" && l.GetValue() == "greeter" {
					t.Error("a backend without a breaker reports a breaker state")
				}
			}
		}
	}
	if n := fs.unaryN.Load(); n != 2 {
		t.Errorf("the faulty backend got %d calls, want 2 before the breaker opened", n)
	}
}
