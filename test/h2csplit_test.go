package test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	"github.com/gatehouse-dev/gatehouse/internal/testpki"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// TestH2CConnectionsSplitByFirstRequest checks which server takes an
// HTTP/2 connection on a shared listener, end to end: with grpc_connections
// "native" (the default) a connection whose first request is gRPC is
// grpc-go's (a later REST request on it is refused with 415, as
// documented); one opened by a REST request, or that sends none within
// read_header_timeout, goes to the HTTP server and takes gRPC too; with
// "http" every connection takes both. Plaintext and TLS alike; each case
// runs on one connection.
func TestH2CConnectionsSplitByFirstRequest(t *testing.T) {
	backend := startBackend(t)
	const idle = 300 * time.Millisecond

	tlsYAML, roots := edgeCert(t)

	for _, tt := range []struct {
		mode  string // grpc_connections; "" is the default
		steps string // g: gRPC call, r: REST call, i: idle past read_header_timeout
		rest  int    // the status every REST call gets
	}{
		{mode: "", steps: "gr", rest: http.StatusUnsupportedMediaType},
		{mode: "native", steps: "gr", rest: http.StatusUnsupportedMediaType},
		{mode: "", steps: "rgr", rest: http.StatusNotFound},
		{mode: "", steps: "igr", rest: http.StatusNotFound}, // no request in time: the HTTP server's
		{mode: "http", steps: "gr", rest: http.StatusNotFound},
		{mode: "http", steps: "rgr", rest: http.StatusNotFound},
		{mode: "http", steps: "igr", rest: http.StatusNotFound},
	} {
		for _, secure := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/%s/tls=%v", tt.mode, tt.steps, secure), func(t *testing.T) {
				mode, tlsBlock := "", ""
				if tt.mode != "" {
					mode = fmt.Sprintf("grpc_connections: %q", tt.mode)
				}
				if secure {
					tlsBlock = "tls: " + tlsYAML
				}
				g := startGateway(t, fmt.Sprintf(`
listeners:
  - name: edge
    address: "127.0.0.1:0"
    limits: { read_header_timeout: %q }
    %s
    %s
backends: [{ name: testsvc, endpoints: [%q] }]
routes: [{ name: testsvc, match: { service: "grpc.testing.TestService" }, backend: testsvc }]
`, idle.String(), mode, tlsBlock, backend))
				runSteps(t, g.Addr("edge").String(), secure, roots, tt.steps, tt.rest, idle)
			})
		}
	}
}

// runSteps makes the calls of steps (g: gRPC, r: REST, i: stay idle past
// the read-header timeout) on one HTTP/2 connection to addr, over TLS
// (ALPN h2) when secure: every gRPC call must succeed and every REST call
// get status rest.
func runSteps(t *testing.T, addr string, secure bool, roots *x509.CertPool, steps string, rest int, idle time.Duration) {
	t.Helper()
	scheme := "http"
	grpcCall := func(t *testing.T, cc *http2.ClientConn) (int, string) {
		t.Helper()
		// EmptyCall, hand-framed: a 5-byte prefix and an empty message.
		req, _ := http.NewRequest(http.MethodPost, scheme+"://"+addr+"/grpc.testing.TestService/EmptyCall", bytes.NewReader(make([]byte, 5)))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("TE", "trailers")
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("gRPC request: %v", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Trailer.Get("Grpc-Status") + resp.Header.Get("Grpc-Status")
	}
	restCall := func(t *testing.T, cc *http2.ClientConn) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, scheme+"://"+addr+"/v1/nothing/here", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("REST request: %v", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	var conn net.Conn
	var err error
	if secure {
		scheme = "https"
		tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Fatalf("ALPN: %q, want h2", p)
		}
		conn = tc
	} else if conn, err = net.Dial("tcp", addr); err != nil {
		t.Fatal(err)
	}
	tr := &http2.Transport{AllowHTTP: true}
	cc, err := tr.NewClientConn(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for i, step := range steps {
		switch step {
		case 'g':
			if code, st := grpcCall(t, cc); code != http.StatusOK || st != "0" {
				t.Fatalf("step %d (gRPC): HTTP %d grpc-status %q, want 200 and 0", i, code, st)
			}
		case 'r':
			if code := restCall(t, cc); code != rest {
				t.Fatalf("step %d (REST): HTTP %d, want %d", i, code, rest)
			}
		case 'i':
			time.Sleep(idle + 200*time.Millisecond)
		}
	}
	if st := cc.State(); st.Closed || st.StreamsActive != 0 {
		t.Errorf("connection state after the steps: %+v", st)
	}
}

// TestSharedListenerServesGRPCClients drives a grpc-go client through a
// plaintext shared listener (natively served by default) with unary and
// streaming calls, and a REST client over HTTP/1.1 and h2c at the same time
// on the same port.
func TestSharedListenerServesGRPCClients(t *testing.T) {
	backend := startBackend(t)
	for _, mode := range []string{"native", "http"} {
		t.Run(mode, func(t *testing.T) {
			g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0", grpc_connections: %q }]
backends: [{ name: testsvc, endpoints: [%q] }]
routes: [{ name: testsvc, match: { service: "grpc.testing.TestService" }, backend: testsvc }]
`, mode, backend))
			addr := g.Addr("edge").String()
			tc := testgrpc.NewTestServiceClient(dial(t, addr))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 1000, Payload: &testpb.Payload{Body: make([]byte, 100)}})
			if err != nil || len(resp.GetPayload().GetBody()) != 1000 {
				t.Fatalf("UnaryCall: %v, %d bytes", err, len(resp.GetPayload().GetBody()))
			}
			const n = 500
			params := make([]*testpb.ResponseParameters, n)
			for i := range params {
				params[i] = &testpb.ResponseParameters{Size: int32(i + 1)}
			}
			st, err := tc.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				m, err := st.Recv()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if len(m.GetPayload().GetBody()) != i+1 {
					t.Fatalf("message %d: %d bytes, want %d", i, len(m.GetPayload().GetBody()), i+1)
				}
			}
			if _, err := st.Recv(); err != io.EOF {
				t.Fatalf("end of stream: %v, want EOF", err)
			}
			for _, h2 := range []bool{false, true} {
				code, body := httpGet(t, httpClient(t, h2), "http://"+addr+"/v1/nothing/here")
				if code != http.StatusNotFound || !strings.Contains(body, `"code"`) {
					t.Errorf("REST (h2c %v): HTTP %d %q, want 404 with a google.rpc.Status", h2, code, body)
				}
			}
		})
	}
}

// httpGet returns the status and body of a GET with c.
func httpGet(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// edgeCert writes a certificate for localhost and 127.0.0.1 and returns a
// listener's tls block (YAML flow style) for it and the pool that trusts it.
func edgeCert(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	ca, err := testpki.NewCA("edge CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("localhost", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := leaf.WriteFiles(t.TempDir(), "edge")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("{ cert_file: %q, key_file: %q }", certFile, keyFile), ca.Pool()
}

// TestShutdownEndsIdleHTTP2Connections: Shutdown of a TLS shared listener
// returns at once, not at its deadline, when a browser-like HTTP/2
// connection (first request REST, so served by the split's HTTP/2 server
// outside net/http's own tracking) and a gRPC client's connection (native)
// are open and idle: both get GOAWAY and close.
func TestShutdownEndsIdleHTTP2Connections(t *testing.T) {
	backend := startBackend(t)
	tlsYAML, roots := edgeCert(t)
	cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0", tls: %s }]
backends: [{ name: testsvc, endpoints: [%q] }]
routes: [{ name: testsvc, match: { service: "grpc.testing.TestService" }, backend: testsvc }]
`, tlsYAML, backend)))
	if err != nil {
		t.Fatal(err)
	}
	g, err := edge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	addr := g.Addr("edge").String()
	open := func(first func(*http2.ClientConn)) *http2.ClientConn {
		tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		cc, err := (&http2.Transport{}).NewClientConn(tc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		first(cc)
		return cc
	}
	rest := open(func(cc *http2.ClientConn) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/v1/nothing/here", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || resp.TLS == nil {
			t.Fatalf("REST over h2: %d (TLS %v)", resp.StatusCode, resp.TLS != nil)
		}
	})
	grpcConn := open(func(cc *http2.ClientConn) {
		req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/grpc.testing.TestService/EmptyCall", bytes.NewReader(make([]byte, 5)))
		req.Header.Set("Content-Type", "application/grpc")
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if st := resp.Trailer.Get("Grpc-Status"); st != "0" {
			t.Fatalf("gRPC over h2: grpc-status %q", st)
		}
	})

	// The servers close an idle connection a second after its GOAWAY
	// unless the client closes it first (this client does not): about 2 s
	// in all, far below the deadline.
	const grace = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	began := time.Now()
	if err := g.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if took := time.Since(began); took > grace/2 {
		t.Errorf("Shutdown took %v with two idle connections open", took)
	}
	for name, cc := range map[string]*http2.ClientConn{"REST": rest, "gRPC": grpcConn} {
		deadline := time.Now().Add(2 * time.Second)
		for !cc.State().Closed && !cc.State().Closing && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if st := cc.State(); !st.Closed && !st.Closing {
			t.Errorf("%s connection after Shutdown: %+v, want closed (GOAWAY)", name, st)
		}
	}
}

// TestShutdownDrainsRESTOverTLSHTTP2: a REST request still arriving on a
// TLS HTTP/2 connection (served by the split's HTTP/2 server, which
// net/http does not track) holds Shutdown until it has been answered.
func TestShutdownDrainsRESTOverTLSHTTP2(t *testing.T) {
	backend := startBackend(t, func(s *grpc.Server) { greeterv1.RegisterGreeterServiceServer(s, identityGreeter{}) })
	tlsYAML, roots := edgeCert(t)
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0", tls: %s }]
backends: [{ name: b, endpoints: [%q] }]
routes: [{ name: greeter, match: { service: "examples.greeter.v1.GreeterService" }, backend: b }]
`, tlsYAML, backend), edge.WithREST(demo.REST()...))
	addr := g.Addr("edge").String()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	type answer struct {
		code  int
		proto string
		err   error
	}
	got := make(chan answer, 1)
	body, w := io.Pipe()
	go func() {
		resp, err := (&http.Client{Transport: tr}).Post("https://"+addr+"/v1/greeter:sayHello", "application/json", body)
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		got <- answer{code: resp.StatusCode, proto: resp.Proto}
	}()
	if _, err := io.WriteString(w, `{"name":`); err != nil { // the request is on its way
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- g.Shutdown(ctx)
	}()
	waitRefused(t, addr)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a REST request arriving", err)
	case a := <-got:
		t.Fatalf("the request ended during the drain: %+v", a)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := io.WriteString(w, `"Ada"}`); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	if a := <-got; a.err != nil || a.code != http.StatusOK || a.proto != "HTTP/2.0" {
		t.Errorf("in-flight REST request: %+v, want 200 over HTTP/2.0", a)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Shutdown did not return after the request finished")
	}
}
