package test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	adminv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/admin/v1"
	"github.com/gatehouse-dev/gatehouse/internal/testpki"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// keyHash returns the sha256 of each API key, hex.
func keyHash(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

// adminHTTP makes one request to the admin listener with client and
// returns its status, body and WWW-Authenticate.
func adminHTTP(t *testing.T, client *http.Client, method, url, body string, header ...string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, string(b), resp.Header.Get("WWW-Authenticate")
}

// plainClient is an HTTP client with its own transport, closed when the
// test ends.
func plainClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestAdminAuthAPIKey guards the admin listener with an API key set and a
// rule on its labels: every admin RPC, native and REST, /metrics and
// /debug/pprof/ need a key whose role is ops (none: UNAUTHENTICATED / 401
// with a challenge; a dev key: PERMISSION_DENIED / 403); the probes stay
// open.
func TestAdminAuthAPIKey(t *testing.T) {
	g := startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
authentication:
  api_keys:
    - name: ops-keys
      header: x-admin-key
      keys:
        - {id: alice, sha256: %q, labels: {role: ops}}
        - {id: bob, sha256: %q, labels: {role: dev}}
admin:
  address: "127.0.0.1:0"
  pprof: true
  auth: {require: [ops-keys], rules: ['principal.labels["role"] == "ops"']}
`, keyHash("ops-secret"), keyHash("dev-secret")))
	addr := g.Addr("admin").String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc := dial(t, addr)
	admin := adminv1.NewAdminServiceClient(cc)
	withKey := func(k string) context.Context { return metadata.AppendToOutgoingContext(ctx, "x-admin-key", k) }

	grpcCases := []struct {
		name string
		call func(context.Context) error
		ok   codes.Code // with the ops key
	}{
		{"ListRoutes", func(ctx context.Context) error {
			_, err := admin.ListRoutes(ctx, &adminv1.ListRoutesRequest{})
			return err
		}, codes.OK},
		{"GetConfig", func(ctx context.Context) error {
			_, err := admin.GetConfig(ctx, &adminv1.GetConfigRequest{})
			return err
		}, codes.OK},
		// No config file: past auth, the reload itself is refused.
		{"ReloadConfig", func(ctx context.Context) error {
			_, err := admin.ReloadConfig(ctx, &adminv1.ReloadConfigRequest{})
			return err
		}, codes.FailedPrecondition},
		{"Explain", func(ctx context.Context) error {
			_, err := admin.Explain(ctx, &adminv1.ExplainRequest{Method: "/a.B/C"})
			return err
		}, codes.OK},
	}
	for _, c := range grpcCases {
		t.Run("grpc/"+c.name, func(t *testing.T) {
			for _, k := range []struct {
				key  string
				want codes.Code
			}{{"", codes.Unauthenticated}, {"wrong", codes.Unauthenticated}, {"dev-secret", codes.PermissionDenied}, {"ops-secret", c.ok}} {
				cctx := ctx
				if k.key != "" {
					cctx = withKey(k.key)
				}
				if err := c.call(cctx); status.Code(err) != k.want {
					t.Errorf("key %q: %v, want %v", k.key, err, k.want)
				}
			}
		})
	}

	base := "http://" + addr
	httpCases := []struct{ method, path, body string }{
		{http.MethodGet, "/v1/routes", ""},
		{http.MethodGet, "/v1/config", ""},
		{http.MethodPost, "/v1/config:reload", "{}"},
		{http.MethodPost, "/v1/routes:explain", `{"method": "/a.B/C"}`},
		{http.MethodGet, "/metrics", ""},
		{http.MethodGet, "/debug/pprof/", ""},
		{http.MethodGet, "/debug/pprof/cmdline", ""},
	}
	client := plainClient(t)
	for _, c := range httpCases {
		t.Run("http"+c.path, func(t *testing.T) {
			code, body, challenge := adminHTTP(t, client, c.method, base+c.path, c.body)
			if code != http.StatusUnauthorized || !strings.HasPrefix(challenge, "APIKey ") || !strings.Contains(body, `"code":16`) {
				t.Errorf("no key: %d %q %.200s; want 401 with an APIKey challenge and a google.rpc.Status", code, challenge, body)
			}
			if code, body, _ := adminHTTP(t, client, c.method, base+c.path, c.body, "x-admin-key", "dev-secret"); code != http.StatusForbidden {
				t.Errorf("dev key: %d %.200s; want 403", code, body)
			}
			want := http.StatusOK
			if c.path == "/v1/config:reload" {
				want = http.StatusBadRequest // FAILED_PRECONDITION: no config file
			}
			if code, body, _ := adminHTTP(t, client, c.method, base+c.path, c.body, "x-admin-key", "ops-secret"); code != want {
				t.Errorf("ops key: %d %.200s; want %d", code, body, want)
			}
		})
	}

	t.Run("probes open", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz"} {
			if code, body, _ := adminHTTP(t, client, http.MethodGet, base+p, ""); code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusNotFound {
				t.Errorf("%s: %d %.200s, want the probe's answer", p, code, body)
			}
		}
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("grpc.health.v1 Check without a key: %v", err)
		}
	})
}

// TestAdminMutualTLS serves the admin listener over TLS with client
// certificates verified if given, and requires one (mtls): a client with a
// certificate from the clients' CA reaches ListRoutes and /metrics, one
// without gets UNAUTHENTICATED / 401, one with a certificate from another
// CA cannot connect; the probes answer over TLS without a certificate.
func TestAdminMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := testpki.NewCA("admin CA")
	if err != nil {
		t.Fatal(err)
	}
	clients, err := testpki.NewCA("clients CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *testpki.CA, cn string) *testpki.Leaf {
		l, err := ca.Issue(cn, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	certFile, keyFile, err := issue(ca, "admin").WriteFiles(dir, "admin")
	if err != nil {
		t.Fatal(err)
	}
	clientCA := filepath.Join(dir, "clients.pem")
	if err := os.WriteFile(clientCA, clients.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ops, intruder := issue(clients, "ops"), issue(other, "ops")
	g := startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
admin:
  address: "127.0.0.1:0"
  tls: {cert_file: %q, key_file: %q, client_ca_file: %q, client_auth: VERIFY_IF_GIVEN}
  auth: {require: [mtls]}
`, certFile, keyFile, clientCA))
	addr := g.Addr("admin").String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tlsFor := func(cert *testpki.Leaf) *tls.Config {
		c := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
		if cert != nil {
			c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert.TLS, nil }
		}
		return c
	}
	grpcConn := func(cert *testpki.Leaf) *grpc.ClientConn {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsFor(cert))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return cc
	}
	httpClient := func(cert *testpki.Leaf) *http.Client {
		tr := &http.Transport{TLSClientConfig: tlsFor(cert)}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}

	if _, err := adminv1.NewAdminServiceClient(grpcConn(ops)).ListRoutes(ctx, &adminv1.ListRoutesRequest{}); err != nil {
		t.Errorf("ListRoutes with a client certificate: %v", err)
	}
	if _, err := adminv1.NewAdminServiceClient(grpcConn(nil)).ListRoutes(ctx, &adminv1.ListRoutesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListRoutes without a client certificate: %v, want UNAUTHENTICATED", err)
	}
	if _, err := adminv1.NewAdminServiceClient(grpcConn(intruder)).ListRoutes(ctx, &adminv1.ListRoutesRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("ListRoutes with a certificate from another CA: %v, want the handshake to fail", err)
	}
	if _, err := healthpb.NewHealthClient(grpcConn(nil)).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health Check over TLS without a certificate: %v", err)
	}
	base := "https://" + addr
	for _, p := range []string{"/metrics", "/v1/routes"} {
		if code, body, _ := adminHTTP(t, httpClient(ops), http.MethodGet, base+p, ""); code != http.StatusOK {
			t.Errorf("%s with a client certificate: %d %.200s", p, code, body)
		}
		if code, _, challenge := adminHTTP(t, httpClient(nil), http.MethodGet, base+p, ""); code != http.StatusUnauthorized || challenge == "" {
			t.Errorf("%s without a client certificate: %d (challenge %q), want 401", p, code, challenge)
		}
	}
	if code, body, _ := adminHTTP(t, httpClient(nil), http.MethodGet, base+"/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz over TLS: %d %.200s", code, body)
	}
	// A plaintext request to the TLS port gets net/http's 400, never the
	// probe's answer.
	if code, _, _ := adminHTTP(t, plainClient(t), http.MethodGet, "http://"+addr+"/healthz", ""); code == http.StatusOK {
		t.Error("the admin listener answered plaintext HTTP with admin.tls set")
	}
}

// TestAdminAuthRefusedAtStart: admin.auth naming a credential the
// authentication section lacks, or mtls on an admin listener that verifies
// no client certificates, stops the gateway from starting, naming the
// field.
func TestAdminAuthRefusedAtStart(t *testing.T) {
	for _, c := range []struct{ name, auth, want string }{
		{"unknown credential", "{require: [nobody]}", `admin.auth.require[0]: unknown credential "nobody"`},
		{"mtls without client certificates", "{require: [mtls]}", "admin.auth.require[0]: mtls needs admin.tls with client_ca_file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := configParse(fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
admin: {address: "127.0.0.1:0", auth: %s}
`, c.auth))
			if err != nil {
				t.Skipf("the loader refuses it already: %v", err)
			}
			g, err := edge.New(cfg)
			if err == nil {
				defer func() { _ = g.Shutdown(context.Background()) }()
				err = g.Start(context.Background())
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New and Start = %v, want an error containing %q", err, c.want)
			}
		})
	}
}
