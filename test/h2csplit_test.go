package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// TestH2CConnectionsSplitByFirstRequest checks which server takes a
// cleartext HTTP/2 connection on a shared listener, end to end: with
// h2c_grpc "native" (the default) a connection whose first request is gRPC,
// or that sends none within read_header_timeout, is grpc-go's (a later REST
// request on it is refused with 415, as documented); a connection opened by
// a REST request stays with net/http and takes gRPC too; with "http" every
// connection takes both. Each case runs on one connection.
func TestH2CConnectionsSplitByFirstRequest(t *testing.T) {
	backend := startBackend(t)
	grpcCall := func(t *testing.T, cc *http2.ClientConn, addr string) (int, string) {
		t.Helper()
		// EmptyCall, hand-framed: a 5-byte prefix and an empty message.
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/grpc.testing.TestService/EmptyCall", bytes.NewReader(make([]byte, 5)))
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
	restCall := func(t *testing.T, cc *http2.ClientConn, addr string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/nothing/here", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("REST request: %v", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	const idle = 300 * time.Millisecond

	for _, tt := range []struct {
		mode  string // h2c_grpc; "" is the default
		steps string // g: gRPC call, r: REST call, i: idle past read_header_timeout
		rest  int    // the status every REST call gets
	}{
		{mode: "", steps: "gr", rest: http.StatusUnsupportedMediaType},
		{mode: "native", steps: "gr", rest: http.StatusUnsupportedMediaType},
		{mode: "", steps: "rgr", rest: http.StatusNotFound},
		{mode: "", steps: "igr", rest: http.StatusUnsupportedMediaType},
		{mode: "http", steps: "gr", rest: http.StatusNotFound},
		{mode: "http", steps: "rgr", rest: http.StatusNotFound},
		{mode: "http", steps: "igr", rest: http.StatusNotFound},
	} {
		t.Run(fmt.Sprintf("%s/%s", tt.mode, tt.steps), func(t *testing.T) {
			mode := ""
			if tt.mode != "" {
				mode = fmt.Sprintf("h2c_grpc: %q", tt.mode)
			}
			g := startGateway(t, fmt.Sprintf(`
listeners:
  - name: edge
    address: "127.0.0.1:0"
    limits: { read_header_timeout: %q }
    %s
backends: [{ name: testsvc, endpoints: [%q] }]
routes: [{ name: testsvc, match: { service: "grpc.testing.TestService" }, backend: testsvc }]
`, idle.String(), mode, backend))
			addr := g.Addr("edge").String()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			tr := &http2.Transport{AllowHTTP: true}
			cc, err := tr.NewClientConn(conn)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			for i, step := range tt.steps {
				switch step {
				case 'g':
					if code, st := grpcCall(t, cc, addr); code != http.StatusOK || st != "0" {
						t.Fatalf("step %d (gRPC): HTTP %d grpc-status %q, want 200 and 0", i, code, st)
					}
				case 'r':
					if code := restCall(t, cc, addr); code != tt.rest {
						t.Fatalf("step %d (REST): HTTP %d, want %d", i, code, tt.rest)
					}
				case 'i':
					time.Sleep(idle + 200*time.Millisecond)
				}
			}
			if st := cc.State(); st.Closed || st.StreamsActive != 0 {
				t.Errorf("connection state after the steps: %+v", st)
			}
		})
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
listeners: [{ name: edge, address: "127.0.0.1:0", h2c_grpc: %q }]
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
