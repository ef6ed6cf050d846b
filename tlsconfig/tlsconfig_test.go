package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/testpki"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func mustCA(t *testing.T, name string) *testpki.CA {
	t.Helper()
	ca, err := testpki.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustLeaf(t *testing.T, ca *testpki.CA, cn string, uris ...string) *testpki.Leaf {
	t.Helper()
	l, err := ca.Issue(cn, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, uris)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// handshake runs one TLS handshake over a pipe and returns the server's
// and client's results and the client's view of the server certificate.
func handshake(t *testing.T, server *tls.Config, client *tls.Config) (srvState tls.ConnectionState, srvErr, cliErr error, leaf *x509.Certificate) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	s := tls.Server(a, server)
	c := tls.Client(b, client)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srvErr = s.Handshake()
		if srvErr == nil {
			srvState = s.ConnectionState()
		}
		// Read until the client closes, so that the client's handshake
		// sees a server alert when the server refused.
		_ = s.Close()
	}()
	cliErr = c.Handshake()
	if cliErr == nil {
		leaf = c.ConnectionState().PeerCertificates[0]
		// TLS 1.3: the server's refusal of a client certificate arrives
		// after the client's handshake; a read sees it.
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Read(make([]byte, 1))
	}
	_ = c.Close()
	<-done
	return srvState, srvErr, cliErr, leaf
}

func TestServerReloadsCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "edge CA")
	first := mustLeaf(t, ca, "first")
	certFile, keyFile, err := first.WriteFiles(dir, "edge")
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	srv, err := NewServer(ServerSpec{CertFile: certFile, KeyFile: keyFile, Field: "listeners[0].tls"}, []string{"h2", "http/1.1"}, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	client := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}}
	_, _, cerr, leaf := handshake(t, srv.Config(), client)
	if cerr != nil || leaf.Subject.CommonName != "first" {
		t.Fatalf("first: %v %v", cerr, leaf)
	}
	second := mustLeaf(t, ca, "second")
	if _, _, err := second.WriteFiles(dir, "edge"); err != nil {
		t.Fatal(err)
	}
	// Within the poll interval the old certificate is still served.
	_, _, _, leaf = handshake(t, srv.Config(), client)
	if leaf.Subject.CommonName != "first" {
		t.Fatalf("within the poll interval: %s", leaf.Subject.CommonName)
	}
	clk.Advance(2 * time.Second)
	_, _, _, leaf = handshake(t, srv.Config(), client)
	if leaf.Subject.CommonName != "second" {
		t.Fatalf("after the change: %s", leaf.Subject.CommonName)
	}
	// A broken pair keeps the last good one.
	if err := os.WriteFile(keyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	_, _, cerr, leaf = handshake(t, srv.Config(), client)
	if cerr != nil || leaf.Subject.CommonName != "second" {
		t.Fatalf("after a broken key: %v %v", cerr, leaf)
	}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "edge CA")
	clients := mustCA(t, "clients")
	other := mustCA(t, "another CA")
	certFile, keyFile, _ := mustLeaf(t, ca, "edge").WriteFiles(dir, "edge")
	caFile := filepath.Join(dir, "clients.pem")
	if err := os.WriteFile(caFile, clients.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	good := mustLeaf(t, clients, "svc", "spiffe://example.test/svc")
	bad := mustLeaf(t, other, "intruder", "spiffe://example.test/svc")
	for _, mode := range []string{RequireAndVerify, VerifyIfGiven} {
		srv, err := NewServer(ServerSpec{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile, ClientAuth: mode, Field: "l"}, []string{"h2"})
		if err != nil {
			t.Fatal(err)
		}
		base := tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}}
		withCert := func(l *testpki.Leaf) *tls.Config {
			c := base.Clone()
			if l != nil {
				// Always present it, even when the server's CA list
				// does not name its issuer.
				c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &l.TLS, nil }
			}
			return c
		}
		st, serr, _, _ := handshake(t, srv.Config(), withCert(good))
		if serr != nil || len(st.VerifiedChains) == 0 || st.VerifiedChains[0][0].URIs[0].String() != "spiffe://example.test/svc" {
			t.Errorf("%s, good cert: %v", mode, serr)
		}
		if _, serr, _, _ := handshake(t, srv.Config(), withCert(bad)); serr == nil {
			t.Errorf("%s, cert from another CA: accepted", mode)
		}
		st, serr, _, _ = handshake(t, srv.Config(), withCert(nil))
		switch mode {
		case RequireAndVerify:
			if serr == nil {
				t.Errorf("%s, no cert: accepted", mode)
			}
		case VerifyIfGiven:
			if serr != nil || len(st.VerifiedChains) != 0 {
				t.Errorf("%s, no cert: %v", mode, serr)
			}
		}
	}
}

func TestErrorsNameFields(t *testing.T) {
	_, err := NewServer(ServerSpec{CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key", Field: "listeners[1].tls"}, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "listeners[1].tls.cert_file: ") {
		t.Errorf("missing file: %v", err)
	}
	_, err = NewServer(ServerSpec{CertFile: "a", KeyFile: "b", ClientAuth: RequireAndVerify, Field: "listeners[0].tls"}, nil)
	if err == nil || !strings.Contains(err.Error(), "client_ca_file") {
		t.Errorf("no CA: %v", err)
	}
	_, err = NewClient(ClientSpec{CAFile: "/nonexistent.pem", Field: "backends[2].tls"})
	if err == nil || !strings.HasPrefix(err.Error(), "backends[2].tls.ca_file: ") {
		t.Errorf("backend CA: %v", err)
	}
	t.Setenv("GATEHOUSE_TEST_UNSET", "")
	_, err = NewServer(ServerSpec{CertFile: "${GATEHOUSE_TEST_UNSET}", KeyFile: "x", Field: "l"}, nil)
	if err == nil || !strings.Contains(err.Error(), "GATEHOUSE_TEST_UNSET is not set") {
		t.Errorf("env: %v", err)
	}
}

func TestSecretsFromEnv(t *testing.T) {
	ca := mustCA(t, "edge CA")
	l := mustLeaf(t, ca, "env")
	t.Setenv("EDGE_CERT", string(l.CertPEM))
	t.Setenv("EDGE_KEY", string(l.KeyPEM))
	srv, err := NewServer(ServerSpec{CertFile: "${EDGE_CERT}", KeyFile: "${EDGE_KEY}"}, []string{"h2"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, cerr, leaf := handshake(t, srv.Config(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
	if cerr != nil || leaf.Subject.CommonName != "env" {
		t.Fatalf("%v %v", cerr, leaf)
	}
}

func TestClientConfig(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "backend CA")
	caFile := filepath.Join(dir, "ca.pem")
	_ = os.WriteFile(caFile, ca.PEM, 0o600)
	cert, key, _ := mustLeaf(t, ca, "gateway").WriteFiles(dir, "gw")
	cfg, err := NewClient(ClientSpec{CAFile: caFile, ServerName: "orders.internal", CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "orders.internal" || cfg.RootCAs == nil || cfg.GetClientCertificate == nil || cfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("%+v", cfg)
	}
	c, err := cfg.GetClientCertificate(nil)
	if err != nil || len(c.Certificate) == 0 {
		t.Fatal(err)
	}
	if _, err := NewClient(ClientSpec{CertFile: cert, Field: "backends[0].tls"}); err == nil {
		t.Error("cert without key accepted")
	}
}
