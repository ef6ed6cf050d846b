package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
	"github.com/gatehouse-dev/gatehouse/internal/testpki"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1_800_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// signer is a private key published under a kid.
type signer struct {
	kid  string
	alg  string // the JWK's alg; "" to publish none
	priv any
}

func newRSA(t testing.TB, kid string) *signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{kid: kid, alg: "RS256", priv: k}
}

func newEC(t testing.TB, kid string) *signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{kid: kid, alg: "ES256", priv: k}
}

// public returns the signer's public JWK.
func (s *signer) public(t testing.TB) jwk.Key {
	t.Helper()
	k, err := jwk.Import(s.priv)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	_ = pk.Set(jwk.KeyIDKey, s.kid)
	_ = pk.Set(jwk.KeyUsageKey, "sig")
	if s.alg != "" {
		alg, _ := jwa.LookupSignatureAlgorithm(s.alg)
		_ = pk.Set(jwk.AlgorithmKey, alg)
	}
	return pk
}

// jwks returns a JWKS of the signers' public keys.
func jwks(t testing.TB, ss ...*signer) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, s := range ss {
		_ = set.AddKey(s.public(t))
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sign signs claims with alg, adding hdr to the protected header.
func (s *signer) sign(t testing.TB, alg string, claims map[string]any, hdr map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	h := jws.NewHeaders()
	_ = h.Set(jws.KeyIDKey, s.kid)
	for k, v := range hdr {
		_ = h.Set(k, v)
	}
	a, ok := jwa.LookupSignatureAlgorithm(alg)
	if !ok {
		t.Fatalf("alg %q", alg)
	}
	b, err := jws.Sign(payload, jws.WithKey(a, s.priv, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// rawToken builds a compact token with any header, signed with HMAC-SHA256
// over secret (or unsigned when secret is nil).
func rawToken(hdr, claims map[string]any, secret []byte) string {
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

// jwksServer is an HTTPS JWKS endpoint on loopback, with a certificate
// from a test CA; its keys can be replaced and it can be taken down.
type jwksServer struct {
	srv    *httptest.Server
	doc    atomic.Pointer[[]byte]
	down   atomic.Bool
	hits   atomic.Int64
	client *http.Client
}

func newJWKSServer(t testing.TB, doc []byte) *jwksServer {
	t.Helper()
	ca, err := testpki.NewCA("jwks test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("jwks", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	js := &jwksServer{}
	js.doc.Store(&doc)
	js.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		js.hits.Add(1)
		if js.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*js.doc.Load())
	}))
	js.srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS12}
	js.srv.StartTLS()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}
	js.client = &http.Client{Transport: tr, Timeout: 5 * time.Second}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		js.srv.Close()
	})
	return js
}

func (js *jwksServer) set(doc []byte) { js.doc.Store(&doc) }

func (js *jwksServer) url() string { return js.srv.URL + "/.well-known/jwks.json" }

// fetchWaiter receives one value per finished JWKS fetch.
type fetchWaiter chan error

func (w fetchWaiter) hook(_ string, err error) {
	select {
	case w <- err:
	default:
	}
}

func (w fetchWaiter) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-w:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no JWKS fetch finished")
		return nil
	}
}

// outcome is what a checked call got.
type outcome struct {
	code      codes.Code
	msg       string
	principal callinfo.Principal
	forward   Forward
	info      *callinfo.Info
}

// invoke runs a unary call through the interceptor with md as incoming
// metadata, from a TCP peer.
func invoke(t testing.TB, ic grpc.UnaryServerInterceptor, method string, md metadata.MD) outcome {
	t.Helper()
	return invokeCtx(t, ic, method, md, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}})
}

func invokeCtx(t testing.TB, ic grpc.UnaryServerInterceptor, method string, md metadata.MD, p *peer.Peer) outcome {
	t.Helper()
	ctx, info := callinfo.With(context.Background())
	ctx = metadata.NewIncomingContext(ctx, md)
	ctx = peer.NewContext(ctx, p)
	var out outcome
	out.info = info
	_, err := ic(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, _ any) (any, error) {
		out.principal = callinfo.PrincipalFrom(ctx)
		out.forward, _ = ForwardFrom(ctx)
		return nil, nil
	})
	st := status.Convert(err)
	out.code, out.msg = st.Code(), st.Message()
	return out
}
