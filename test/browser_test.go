package test

// End-to-end tests of what browsers speak (issue 4): gRPC-Web in binary and
// text modes over HTTP/1.1 and HTTP/2, CORS, REST server streams as NDJSON,
// Server-Sent Events and JSON arrays, and bidi streams over WebSocket, all
// through the same gateway assembly the binary runs.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	"github.com/gatehouse-dev/gatehouse/examples/greeter"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// failingGreeter is the example greeter whose StreamHellos fails on
// request: name "fail" sends half the messages and then fails with
// ABORTED (and an ErrorInfo detail); name "missing" fails with NOT_FOUND
// before any message.
type failingGreeter struct {
	*greeter.Server
}

func (f failingGreeter) StreamHellos(req *greeterv1.StreamHellosRequest, stream grpc.ServerStreamingServer[greeterv1.StreamHellosResponse]) error {
	switch req.GetName() {
	case "missing":
		return status.Error(codes.NotFound, "no such greeter")
	case "fail":
		for i := int32(1); i <= req.GetCount()/2; i++ {
			if err := stream.Send(&greeterv1.StreamHellosResponse{Message: "partial", Index: i}); err != nil {
				return err
			}
		}
		st, _ := status.New(codes.Aborted, "greeter broke: ünïcode 100%").WithDetails(&errdetails.ErrorInfo{Reason: "BROKEN", Domain: "test"})
		return st.Err()
	}
	return f.Server.StreamHellos(req, stream)
}

// startBrowserGateway runs the interop TestService and the greeter behind
// a gateway with one shared listener, "edge".
func startBrowserGateway(t *testing.T, opts ...edge.Option) (*edge.Gateway, string) {
	t.Helper()
	backend := startBackend(t, func(s *grpc.Server) {
		greeterv1.RegisterGreeterServiceServer(s, failingGreeter{greeter.New("b1")})
	})
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends: [{ name: b, endpoints: ["%s"] }]
routes:
  - { name: greeter, match: { service: "examples.greeter.v1.GreeterService" }, backend: b }
  - { name: testsvc, match: { service: "grpc.testing.TestService" }, backend: b }
`, backend), append([]edge.Option{edge.WithREST(demo.REST()...)}, opts...)...)
	return g, g.Addr("edge").String()
}

// httpClient returns an HTTP/1.1 or h2c (prior knowledge) client whose
// connections are closed when the test ends.
func httpClient(t *testing.T, h2 bool) *http.Client {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: !h2}
	if h2 {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
		tr.TLSClientConfig = &tls.Config{}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// grpcWebResult is a decoded gRPC-Web response.
type grpcWebResult struct {
	httpStatus int
	header     http.Header
	messages   [][]byte
	trailer    map[string]string // from the trailer frame, or trailers-only headers
	inBody     bool              // the trailers came in a trailer frame
}

func (r grpcWebResult) code() codes.Code {
	c, _ := strconv.Atoi(r.trailer["grpc-status"])
	return codes.Code(c)
}

// grpcWebCall makes a hand-framed gRPC-Web call.
func grpcWebCall(t *testing.T, c *http.Client, addr, method string, req proto.Message, text bool, header ...string) grpcWebResult {
	t.Helper()
	payload, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 5+len(payload))
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(payload)))
	copy(frame[5:], payload)
	ct := "application/grpc-web+proto"
	body := frame
	if text {
		ct = "application/grpc-web-text"
		body = []byte(base64.StdEncoding.EncodeToString(frame))
	}
	hr, err := http.NewRequest(http.MethodPost, "http://"+addr+method, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", ct)
	hr.Header.Set("X-Grpc-Web", "1")
	for i := 0; i+1 < len(header); i += 2 {
		hr.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(hr)
	if err != nil {
		t.Fatalf("gRPC-Web %s: %v", method, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	res := grpcWebResult{httpStatus: resp.StatusCode, header: resp.Header, trailer: map[string]string{}}
	if got := resp.Header.Get("Content-Type"); !strings.HasPrefix(got, "application/grpc-web") {
		t.Fatalf("not a gRPC-Web answer: %d, content type %q: %.200s", resp.StatusCode, got, raw)
	}
	if text {
		wantCT := "application/grpc-web-text+proto"
		if got := resp.Header.Get("Content-Type"); got != wantCT {
			t.Fatalf("content type %q, want %q", got, wantCT)
		}
		// Each frame is base64 on its own: decode in padded groups.
		var dec []byte
		for len(raw) > 0 {
			n := strings.IndexByte(string(raw), '=')
			end := len(raw)
			if n >= 0 {
				end = n
				for end < len(raw) && raw[end] == '=' {
					end++
				}
			}
			d, err := base64.StdEncoding.DecodeString(string(raw[:end]))
			if err != nil {
				t.Fatalf("grpc-web-text body: %v", err)
			}
			dec = append(dec, d...)
			raw = raw[end:]
		}
		raw = dec
	}
	for len(raw) > 0 {
		if len(raw) < 5 {
			t.Fatalf("truncated frame header: %x", raw)
		}
		n := binary.BigEndian.Uint32(raw[1:5])
		if uint64(n) > uint64(len(raw)-5) {
			t.Fatalf("frame of %d bytes in %d", n, len(raw)-5)
		}
		data := raw[5 : 5+n]
		if raw[0]&0x80 != 0 {
			res.inBody = true
			for _, line := range strings.Split(string(data), "\r\n") {
				if k, v, ok := strings.Cut(line, ":"); ok {
					res.trailer[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
				}
			}
		} else {
			res.messages = append(res.messages, data)
		}
		raw = raw[5+n:]
	}
	if !res.inBody {
		for _, k := range []string{"grpc-status", "grpc-message", "grpc-status-details-bin"} {
			if v := resp.Header.Get(k); v != "" {
				res.trailer[k] = v
			}
		}
	}
	return res
}

func TestGRPCWeb(t *testing.T) {
	_, addr := startBrowserGateway(t)
	for _, h2 := range []bool{false, true} {
		for _, text := range []bool{false, true} {
			t.Run(fmt.Sprintf("h2=%v/text=%v", h2, text), func(t *testing.T) {
				c := httpClient(t, h2)

				// Unary.
				res := grpcWebCall(t, c, addr, "/examples.greeter.v1.GreeterService/SayHello",
					&greeterv1.SayHelloRequest{Name: "Ada"}, text, "X-Request-Id", "rid-1")
				if res.httpStatus != 200 || res.code() != codes.OK || !res.inBody || len(res.messages) != 1 {
					t.Fatalf("unary: status %d trailer %v messages %d", res.httpStatus, res.trailer, len(res.messages))
				}
				var hello greeterv1.SayHelloResponse
				if err := proto.Unmarshal(res.messages[0], &hello); err != nil || hello.GetMessage() != "Hello, Ada!" {
					t.Fatalf("unary answer %v, %v", &hello, err)
				}
				if got := res.header.Get(greeter.RequestIDSeenKey); got != "rid-1" {
					t.Errorf("backend response header %s = %q, want rid-1", greeter.RequestIDSeenKey, got)
				}

				// Server stream.
				res = grpcWebCall(t, c, addr, "/examples.greeter.v1.GreeterService/StreamHellos",
					&greeterv1.StreamHellosRequest{Name: "Ada", Count: 50}, text)
				if res.code() != codes.OK || len(res.messages) != 50 {
					t.Fatalf("stream: trailer %v, %d messages", res.trailer, len(res.messages))
				}
				for i, m := range res.messages {
					var r greeterv1.StreamHellosResponse
					if err := proto.Unmarshal(m, &r); err != nil || r.GetIndex() != int32(i+1) {
						t.Fatalf("message %d: %v %v", i, &r, err)
					}
				}

				// An error mid-stream, in the trailer frame, with details.
				res = grpcWebCall(t, c, addr, "/examples.greeter.v1.GreeterService/StreamHellos",
					&greeterv1.StreamHellosRequest{Name: "fail", Count: 10}, text)
				if !res.inBody || res.code() != codes.Aborted || len(res.messages) != 5 {
					t.Fatalf("mid-stream error: in body %v, trailer %v, %d messages", res.inBody, res.trailer, len(res.messages))
				}
				if got := res.trailer["grpc-message"]; got != "greeter broke: %C3%BCn%C3%AFcode 100%25" {
					t.Errorf("grpc-message %q not percent-encoded as gRPC requires", got)
				}
				details, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(res.trailer["grpc-status-details-bin"], "="))
				var sp spb.Status
				if err != nil || proto.Unmarshal(details, &sp) != nil || len(sp.GetDetails()) != 1 {
					t.Errorf("grpc-status-details-bin: %v %v", err, &sp)
				}

				// An error before any message: trailers-only, in headers.
				res = grpcWebCall(t, c, addr, "/examples.greeter.v1.GreeterService/StreamHellos",
					&greeterv1.StreamHellosRequest{Name: "missing", Count: 3}, text)
				if res.httpStatus != 200 || res.inBody || res.code() != codes.NotFound || len(res.messages) != 0 {
					t.Fatalf("trailers-only: status %d in body %v trailer %v", res.httpStatus, res.inBody, res.trailer)
				}

				// A method no route takes: UNIMPLEMENTED, as for gRPC.
				res = grpcWebCall(t, c, addr, "/nowhere.v1.Nothing/Call", &greeterv1.SayHelloRequest{}, text)
				if res.code() != codes.Unimplemented {
					t.Fatalf("unrouted: trailer %v", res.trailer)
				}
			})
		}
	}
}

// TestGRPCWebDeadline: grpc-timeout becomes the call's deadline.
func TestGRPCWebDeadline(t *testing.T) {
	_, addr := startBrowserGateway(t)
	res := grpcWebCall(t, httpClient(t, false), addr, "/examples.greeter.v1.GreeterService/StreamHellos",
		&greeterv1.StreamHellosRequest{Name: "Ada", Count: 1000}, false, "Grpc-Timeout", "1n")
	if res.code() != codes.DeadlineExceeded {
		t.Fatalf("trailer %v, want DEADLINE_EXCEEDED", res.trailer)
	}
}

func corsPolicy() edge.CORSPolicy {
	return edge.CORSPolicy{
		AllowedOrigins:   []string{"https://app.example.com", "https://*.example.org"},
		AllowCredentials: true,
		MaxAge:           10 * time.Minute,
		ExposedHeaders:   []string{"x-request-id-seen"},
	}
}

func TestCORS(t *testing.T) {
	var access syncBuffer
	_, addr := startBrowserGateway(t,
		edge.WithAccessLogger(jsonLogger(&access)),
		edge.WithCORS("edge", corsPolicy()),
		edge.WithRouteCORS("testsvc", edge.CORSPolicy{AllowedOrigins: []string{"https://other.example.net"}}),
	)
	base := "http://" + addr
	preflight := func(path, origin string, headers string) (int, http.Header) {
		h := []string{"Origin", origin, "Access-Control-Request-Method", "POST"}
		if headers != "" {
			h = append(h, "Access-Control-Request-Headers", headers)
		}
		code, _, hdr := httpDo(t, http.MethodOptions, base+path, "", h...)
		return code, hdr
	}
	const greet = "/examples.greeter.v1.GreeterService/SayHello"
	for _, origin := range []string{"https://app.example.com", "https://a.example.org", "https://a.b.example.org", "HTTPS://APP.EXAMPLE.COM"} {
		code, h := preflight(greet, origin, "content-type, x-grpc-web, x-user-agent, grpc-timeout")
		if code != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != origin {
			t.Fatalf("preflight from %s: %d %v", origin, code, h)
		}
		if h.Get("Access-Control-Allow-Credentials") != "true" || h.Get("Access-Control-Max-Age") != "600" ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
			h.Get("Access-Control-Allow-Headers") != "content-type, x-grpc-web, x-user-agent, grpc-timeout" {
			t.Errorf("preflight from %s: headers %v", origin, h)
		}
	}
	for _, tc := range []struct{ origin, headers string }{
		{"https://evil.example.com", ""},
		{"https://example.org", ""},    // the wildcard needs a subdomain
		{"http://app.example.com", ""}, // scheme counts
		{"https://app.example.com.evil.net", ""},
		{"https://app.example.com", "x-secret"}, // header not allowed
		{"https://other.example.net", ""},       // only the testsvc route allows it
	} {
		code, h := preflight(greet, tc.origin, tc.headers)
		if code != http.StatusNoContent {
			t.Errorf("preflight from %s: %d", tc.origin, code)
		}
		for k := range h {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("disallowed preflight from %s (%s) got %s", tc.origin, tc.headers, k)
			}
		}
	}
	// Per route: testsvc has its own policy, which replaces the listener's.
	if _, h := preflight("/grpc.testing.TestService/UnaryCall", "https://other.example.net", ""); h.Get("Access-Control-Allow-Origin") != "https://other.example.net" {
		t.Errorf("route policy: %v", h)
	}
	if _, h := preflight("/grpc.testing.TestService/UnaryCall", "https://app.example.com", ""); h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("route policy replaced the listener's, yet app.example.com got %v", h)
	}
	// Preflights never reach the chain, let alone a backend.
	if s := access.String(); s != "" {
		t.Errorf("preflights were logged as calls: %s", s)
	}

	// Actual requests: gRPC-Web and REST.
	c := httpClient(t, false)
	res := grpcWebCall(t, c, addr, greet, &greeterv1.SayHelloRequest{Name: "Ada"}, false, "Origin", "https://a.example.org", "X-Request-Id", "r")
	if res.header.Get("Access-Control-Allow-Origin") != "https://a.example.org" || res.header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("gRPC-Web from allowed origin: %v", res.header)
	}
	exposed := res.header.Get("Access-Control-Expose-Headers")
	for _, h := range []string{"grpc-status", "grpc-message", "grpc-status-details-bin", "ratelimit-remaining", "retry-after", "x-request-id-seen"} {
		if !strings.Contains(exposed, h) {
			t.Errorf("exposed headers %q lack %s", exposed, h)
		}
	}
	res = grpcWebCall(t, c, addr, greet, &greeterv1.SayHelloRequest{Name: "Ada"}, false, "Origin", "https://evil.example.com")
	if res.code() != codes.OK {
		t.Fatalf("the call itself is not refused: %v", res.trailer)
	}
	for k := range res.header {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("disallowed origin got %s", k)
		}
	}
	code, _, h := httpDo(t, http.MethodPost, base+"/v1/greeter:sayHello", `{"name":"Ada"}`, "Origin", "https://app.example.com")
	if code != 200 || h.Get("Access-Control-Allow-Origin") != "https://app.example.com" || h.Get("Vary") == "" {
		t.Fatalf("REST from allowed origin: %d %v", code, h)
	}
}

// TestCORSOffWithoutPolicy: a listener without CORS adds no headers and
// leaves OPTIONS to REST.
func TestCORSOffWithoutPolicy(t *testing.T) {
	_, addr := startBrowserGateway(t)
	code, _, h := httpDo(t, http.MethodOptions, "http://"+addr+"/v1/greeter:sayHello", "",
		"Origin", "https://app.example.com", "Access-Control-Request-Method", "POST")
	if code == http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("no policy, yet %d %v", code, h)
	}
}

// streamRequest starts a REST server stream of StreamHellos and returns
// the response.
func streamRequest(t *testing.T, addr, accept string, name string, count int) *http.Response {
	t.Helper()
	body := fmt.Sprintf(`{"name":%q,"count":%d}`, name, count)
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/examples.greeter.v1.GreeterService/StreamHellos", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	resp, err := httpClient(t, false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// sseEvent is one Server-Sent Event.
type sseEvent struct{ event, data string }

func readSSE(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.data != "" || cur.event != "" {
				if cur.event == "" {
					cur.event = "message"
				}
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "event:"):
			cur.event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			cur.data += strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestServerStreamFormats(t *testing.T) {
	_, addr := startBrowserGateway(t)
	const n = 1000

	t.Run("sse", func(t *testing.T) {
		resp := streamRequest(t, addr, "text/event-stream", "Ada", n)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("%d %v", resp.StatusCode, resp.Header)
		}
		events := readSSE(t, resp.Body)
		if len(events) != n+1 || events[n].event != "end" {
			t.Fatalf("%d events, last %+v", len(events), events[len(events)-1])
		}
		for i, e := range events[:n] {
			var m greeterv1.StreamHellosResponse
			if err := protojson.Unmarshal([]byte(e.data), &m); err != nil || e.event != "message" || m.GetIndex() != int32(i+1) {
				t.Fatalf("event %d: %+v %v", i, e, err)
			}
		}
	})
	t.Run("sse-error", func(t *testing.T) {
		resp := streamRequest(t, addr, "text/event-stream", "fail", 20)
		events := readSSE(t, resp.Body)
		if resp.StatusCode != 200 || len(events) != 11 || events[10].event != "error" {
			t.Fatalf("%d, events %+v", resp.StatusCode, events)
		}
		var st spb.Status
		if err := protojson.Unmarshal([]byte(events[10].data), &st); err != nil || codes.Code(st.GetCode()) != codes.Aborted || len(st.GetDetails()) != 1 {
			t.Fatalf("error event %q: %v", events[10].data, err)
		}
	})
	t.Run("ndjson", func(t *testing.T) {
		resp := streamRequest(t, addr, "application/x-ndjson", "Ada", n)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("%d %v", resp.StatusCode, resp.Header)
		}
		sc := bufio.NewScanner(resp.Body)
		i := 0
		for sc.Scan() {
			var m greeterv1.StreamHellosResponse
			if err := protojson.Unmarshal(sc.Bytes(), &m); err != nil || m.GetIndex() != int32(i+1) {
				t.Fatalf("line %d %q: %v", i, sc.Text(), err)
			}
			i++
		}
		if i != n {
			t.Fatalf("%d lines, want %d", i, n)
		}
	})
	t.Run("ndjson-error", func(t *testing.T) {
		resp := streamRequest(t, addr, "application/x-ndjson", "fail", 20)
		b, _ := io.ReadAll(resp.Body)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		var last struct {
			Error json.RawMessage `json:"error"`
		}
		if len(lines) != 11 || json.Unmarshal([]byte(lines[10]), &last) != nil {
			t.Fatalf("%d lines: %s", len(lines), b)
		}
		var st spb.Status
		if err := protojson.Unmarshal(last.Error, &st); err != nil || codes.Code(st.GetCode()) != codes.Aborted {
			t.Fatalf("error line %s: %v", lines[10], err)
		}
	})
	t.Run("json-array", func(t *testing.T) {
		resp := streamRequest(t, addr, "application/json", "Ada", n)
		var arr []json.RawMessage
		if err := json.NewDecoder(resp.Body).Decode(&arr); err != nil || len(arr) != n || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%d elements: %v", len(arr), err)
		}
		resp = streamRequest(t, addr, "application/json", "fail", 4)
		arr = nil
		if err := json.NewDecoder(resp.Body).Decode(&arr); err != nil || len(arr) != 3 || !strings.Contains(string(arr[2]), `"error"`) {
			t.Fatalf("error array %s: %v", arr, err)
		}
	})
	t.Run("error-before-first-message", func(t *testing.T) {
		for _, accept := range []string{"text/event-stream", "application/x-ndjson", "application/json"} {
			resp := streamRequest(t, addr, accept, "missing", 3)
			b, _ := io.ReadAll(resp.Body)
			var st spb.Status
			if resp.StatusCode != http.StatusNotFound || protojson.Unmarshal(b, &st) != nil || codes.Code(st.GetCode()) != codes.NotFound {
				t.Fatalf("%s: %d %s", accept, resp.StatusCode, b)
			}
		}
		resp := streamRequest(t, addr, "text/event-stream", "", 3) // fails validation
		if resp.StatusCode != http.StatusBadRequest {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("invalid request: %d %s", resp.StatusCode, b)
		}
	})
	t.Run("get-query", func(t *testing.T) { // as EventSource sends it
		code, body, _ := httpDo(t, http.MethodGet, "http://"+addr+"/examples.greeter.v1.GreeterService/StreamHellos?name=Q&count=3", "", "Accept", "text/event-stream")
		if code != 200 || strings.Count(body, "data: {\"message\":\"Hello #") != 3 {
			t.Fatalf("%d %s", code, body)
		}
	})
}

// wsDial opens a WebSocket to a method's path.
func wsDial(t *testing.T, addr, path string, header http.Header) (*websocket.Conn, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c, resp, err := websocket.Dial(ctx, "ws://"+addr+path, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, HTTPHeader: header})
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (%d)", path, err, code)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c, ctx
}

func TestWebSocketBidi(t *testing.T) {
	_, addr := startBrowserGateway(t, edge.WithCORS("edge", corsPolicy()))
	const path = "/grpc.testing.TestService/FullDuplexCall"

	t.Run("to completion", func(t *testing.T) {
		c, ctx := wsDial(t, addr, path, http.Header{"Origin": {"https://app.example.com"}})
		for i := 1; i <= 3; i++ {
			req := fmt.Sprintf(`{"responseParameters":[{"size":%d},{"size":%d}]}`, i, i+10)
			if err := c.Write(ctx, websocket.MessageText, []byte(req)); err != nil {
				t.Fatal(err)
			}
			for _, want := range []int{i, i + 10} {
				_, data, err := c.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var m struct {
					Payload struct {
						Body string `json:"body"`
					} `json:"payload"`
				}
				if err := json.Unmarshal(data, &m); err != nil {
					t.Fatalf("%s: %v", data, err)
				}
				if b, _ := base64.StdEncoding.DecodeString(m.Payload.Body); len(b) != want {
					t.Fatalf("payload of %d bytes, want %d: %s", len(b), want, data)
				}
			}
		}
		if err := c.Write(ctx, websocket.MessageText, nil); err != nil { // half-close
			t.Fatal(err)
		}
		_, _, err := c.Read(ctx)
		if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Fatalf("end of call: %v, want normal closure", err)
		}
	})
	t.Run("to an error", func(t *testing.T) {
		c, ctx := wsDial(t, addr, path, nil)
		_ = c.Write(ctx, websocket.MessageText, []byte(`{"responseParameters":[{"size":1}]}`))
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
		_ = c.Write(ctx, websocket.MessageText, []byte(`{"responseStatus":{"code":5,"message":"not here"}}`))
		// The status as a last message, then the close frame.
		if _, data, err := c.Read(ctx); err != nil || !strings.Contains(string(data), `"error":{"code":5,"message":"not here"}`) {
			t.Fatalf("status message %s: %v", data, err)
		}
		_, _, err := c.Read(ctx)
		var ce websocket.CloseError
		if !asCloseError(err, &ce) || ce.Code != websocket.StatusCode(4000+int(codes.NotFound)) || ce.Reason != "not here" {
			t.Fatalf("close %v, want 4005 not here", err)
		}
	})
	t.Run("bad message", func(t *testing.T) {
		c, ctx := wsDial(t, addr, path, nil)
		_ = c.Write(ctx, websocket.MessageText, []byte(`{"noSuchField":1}`))
		if _, data, err := c.Read(ctx); err != nil || !strings.Contains(string(data), `"error":{"code":3,`) {
			t.Fatalf("status message %s: %v", data, err)
		}
		_, _, err := c.Read(ctx)
		if websocket.CloseStatus(err) != websocket.StatusCode(4000+int(codes.InvalidArgument)) {
			t.Fatalf("close %v, want 4003", err)
		}
	})
	t.Run("server stream", func(t *testing.T) {
		c, ctx := wsDial(t, addr, "/examples.greeter.v1.GreeterService/StreamHellos", nil)
		_ = c.Write(ctx, websocket.MessageText, []byte(`{"name":"W","count":5}`))
		for i := 1; i <= 5; i++ {
			_, data, err := c.Read(ctx)
			if err != nil || !strings.Contains(string(data), fmt.Sprintf(`"index":%d`, i)) {
				t.Fatalf("message %d: %s %v", i, data, err)
			}
		}
		if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Fatalf("end: %v", err)
		}
	})
	t.Run("client closes", func(t *testing.T) {
		c, ctx := wsDial(t, addr, path, nil)
		_ = c.Write(ctx, websocket.MessageText, []byte(`{"responseParameters":[{"size":1}]}`))
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Logf("close: %v", err)
		}
	})
	t.Run("disallowed origin", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		_, resp, err := websocket.Dial(ctx, "ws://"+addr+path, &websocket.DialOptions{
			HTTPClient: &http.Client{Transport: tr}, HTTPHeader: http.Header{"Origin": {"https://evil.example.com"}}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("want 403, got %v %v", resp, err)
		}
	})
}

func asCloseError(err error, ce *websocket.CloseError) bool {
	if err == nil {
		return false
	}
	c := websocket.CloseStatus(err)
	if c == -1 {
		return false
	}
	for e := err; e != nil; {
		if x, ok := e.(websocket.CloseError); ok {
			*ce = x
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return false
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestCORSFromConfig: the cors blocks of gatehouse.yaml, per listener and
// per route, with the key names of issue 4.
func TestCORSFromConfig(t *testing.T) {
	backend := startBackend(t)
	g := startGateway(t, fmt.Sprintf(`
listeners:
  - name: edge
    address: "127.0.0.1:0"
    cors:
      allowed_origins: ["https://app.example.com", "https://*.example.org"]
      allow_credentials: true
      max_age: "2m"
      exposed_headers: ["x-custom"]
backends: [{ name: b, endpoints: ["%s"] }]
routes:
  - name: public
    match: { method: "/grpc.testing.TestService/EmptyCall" }
    backend: b
    cors: { allowed_origins: ["*"], allowed_methods: ["POST"] }
  - { name: testsvc, match: { service: "grpc.testing.TestService" }, backend: b }
`, backend))
	base := "http://" + g.Addr("edge").String()
	pre := func(path, origin string) http.Header {
		code, _, h := httpDo(t, http.MethodOptions, base+path, "", "Origin", origin, "Access-Control-Request-Method", "POST")
		if code != http.StatusNoContent {
			t.Fatalf("preflight %s from %s: %d", path, origin, code)
		}
		return h
	}
	h := pre("/grpc.testing.TestService/UnaryCall", "https://x.example.org")
	if h.Get("Access-Control-Allow-Origin") != "https://x.example.org" || h.Get("Access-Control-Max-Age") != "120" || h.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("listener policy: %v", h)
	}
	if h := pre("/grpc.testing.TestService/UnaryCall", "https://elsewhere.net"); h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("disallowed origin: %v", h)
	}
	h = pre("/grpc.testing.TestService/EmptyCall", "https://elsewhere.net")
	if h.Get("Access-Control-Allow-Origin") != "*" || h.Get("Access-Control-Allow-Methods") != "POST" || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("route policy: %v", h)
	}
	res := grpcWebCall(t, httpClient(t, false), g.Addr("edge").String(), "/grpc.testing.TestService/EmptyCall", &emptypb.Empty{}, false, "Origin", "https://elsewhere.net")
	if res.code() != codes.OK || res.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("gRPC-Web on the public route: %v %v", res.trailer, res.header)
	}

	_, err := config.Parse("bad.yaml", []byte(`
listeners: [{ name: edge, address: "127.0.0.1:0", cors: { allowed_origins: ["*"], allow_credentials: true } }]
`))
	if err == nil || !strings.Contains(err.Error(), "allow_credentials") {
		t.Errorf("credentials with \"*\": %v", err)
	}
}

// wsResult is what a WebSocket call returned: its messages (the status
// message included), and the close frame.
type wsResult struct {
	messages []string
	close    websocket.CloseError
	closed   bool // a close frame arrived
}

// wsRun opens a WebSocket to path, sends send (each one message; "" sends
// an empty message, a half-close), and reads until the socket closes. It
// fails the test when the upgrade fails.
func wsRun(t *testing.T, addr, path string, header http.Header, send ...string) wsResult {
	t.Helper()
	c, ctx := wsDial(t, addr, path, header)
	for _, m := range send {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatalf("send %q: %v", m, err)
		}
	}
	var res wsResult
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			res.closed = asCloseError(err, &res.close)
			if !res.closed {
				t.Fatalf("%s: read: %v", path, err)
			}
			return res
		}
		res.messages = append(res.messages, string(data))
	}
}

// wsStatus is the google.rpc.Status of a failed WebSocket call's last
// message.
func (r wsResult) status(t *testing.T) *spb.Status {
	t.Helper()
	if len(r.messages) == 0 {
		t.Fatalf("no status message before close %v", r.close)
	}
	var env struct {
		Error json.RawMessage `json:"error"`
	}
	var st spb.Status
	last := r.messages[len(r.messages)-1]
	if err := json.Unmarshal([]byte(last), &env); err != nil || env.Error == nil {
		t.Fatalf("last message %s is not {\"error\": status}: %v", last, err)
	}
	if err := protojson.Unmarshal(env.Error, &st); err != nil {
		t.Fatalf("status %s: %v", env.Error, err)
	}
	return &st
}

// accessControl returns the Access-Control-* headers of h.
func accessControl(h http.Header) http.Header {
	out := http.Header{}
	for k, v := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			out[k] = v
		}
	}
	return out
}

// TestCORSRoutePolicyOnRESTPaths: a route's CORS policy applies to its
// methods' REST paths (google.api.http rules), compiled in or from a
// runtime schema, as to their gRPC-Web paths: the route that takes the
// call is found from the REST path and verb (for a preflight, the verb it
// asks for), not left to a catch-all route. A route with "cors: {}" has
// cross-origin access off even when a later catch-all allows "*"; so does
// the WebSocket origin check on a streaming method's REST path.
func TestCORSRoutePolicyOnRESTPaths(t *testing.T) {
	greeterAddr := startBackend(t, func(s *grpc.Server) {
		greeterv1.RegisterGreeterServiceServer(s, failingGreeter{greeter.New("b1")})
	})
	shelfAddr, _ := startShelfBackend(t, "127.0.0.1:0", true) // examples.shelfrt.v1: known from reflection only
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends:
  - { name: greeter, endpoints: [%q] }
  - { name: shelf, endpoints: [%q], schema: { reflection: {} } }
routes:
  - name: hello-off
    match: { method: "/examples.greeter.v1.GreeterService/SayHello" }
    backend: greeter
    cors: {}
  - name: shelf-delete-off
    match: { method: "/examples.shelfrt.v1.ShelfService/DeleteBook" }
    backend: shelf
    cors: {}
  - name: shelf
    match: { service: "examples.shelfrt.v1.ShelfService" }
    backend: shelf
    cors: { allowed_origins: ["https://app.example.com"], allowed_methods: ["GET", "DELETE"] }
  - name: all
    match: { service: "*" }
    backend: greeter
    cors: { allowed_origins: ["*"] }
`, greeterAddr, shelfAddr), edge.WithREST(demo.REST()...))
	addr := g.Addr("edge").String()
	base := "http://" + addr
	if _, ok := g.Schemas().Method("/examples.shelfrt.v1.ShelfService/WatchBooks"); !ok {
		t.Fatalf("the shelf schema did not load: %v", g.SchemaErrors())
	}
	const app, evil = "https://app.example.com", "https://evil.example"

	preflights := []struct {
		name, path, verb, origin string
		wantOrigin               string // "" for no CORS headers at all
	}{
		{"compiled rule, route off", "/v1/greeter:sayHello", "POST", evil, ""},
		{"compiled rule, route off, any origin", "/v1/greeter:sayHello", "POST", app, ""},
		{"gRPC-Web path, route off", "/examples.greeter.v1.GreeterService/SayHello", "POST", evil, ""},
		{"runtime rule, allowed origin", "/v1/shelves/s1/books/b1", "GET", app, app},
		{"runtime rule, disallowed origin", "/v1/shelves/s1/books/b1", "GET", evil, ""},
		{"runtime rule, other verb's route is off", "/v1/shelves/s1/books/b1", "DELETE", app, ""},
		{"runtime stream rule", "/v1/shelves/s1/books:watch", "GET", evil, ""},
		{"catch-all still allows any", "/grpc.testing.TestService/UnaryCall", "POST", evil, "*"},
	}
	for _, tc := range preflights {
		t.Run("preflight/"+tc.name, func(t *testing.T) {
			code, _, h := httpDo(t, http.MethodOptions, base+tc.path, "", "Origin", tc.origin, "Access-Control-Request-Method", tc.verb)
			if code != http.StatusNoContent {
				t.Fatalf("%d", code)
			}
			ac := accessControl(h)
			if tc.wantOrigin == "" && len(ac) != 0 {
				t.Fatalf("want no CORS headers, got %v", ac)
			}
			if tc.wantOrigin != "" && ac.Get("Access-Control-Allow-Origin") != tc.wantOrigin {
				t.Fatalf("want Access-Control-Allow-Origin %s, got %v", tc.wantOrigin, ac)
			}
		})
	}

	actual := []struct {
		name, verb, path, body, origin string
		wantCode                       int
		wantOrigin                     string
	}{
		{"compiled rule, route off", http.MethodPost, "/v1/greeter:sayHello", `{"name":"Ada"}`, evil, 200, ""},
		{"runtime rule, allowed origin", http.MethodGet, "/v1/shelves/s1/books/b1", "", app, 200, app},
		{"runtime rule, disallowed origin", http.MethodGet, "/v1/shelves/s1/books/b1", "", evil, 200, ""},
	}
	for _, tc := range actual {
		t.Run("request/"+tc.name, func(t *testing.T) {
			code, body, h := httpDo(t, tc.verb, base+tc.path, tc.body, "Origin", tc.origin, "Content-Type", "application/json")
			if code != tc.wantCode {
				t.Fatalf("%d %s", code, body)
			}
			if got := h.Get("Access-Control-Allow-Origin"); got != tc.wantOrigin {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q (%v)", got, tc.wantOrigin, accessControl(h))
			}
		})
	}
	t.Run("gRPC-Web, route off", func(t *testing.T) {
		res := grpcWebCall(t, httpClient(t, false), addr, "/examples.greeter.v1.GreeterService/SayHello",
			&greeterv1.SayHelloRequest{Name: "Ada"}, false, "Origin", evil)
		if res.code() != codes.OK || len(accessControl(res.header)) != 0 {
			t.Fatalf("%v %v", res.trailer, accessControl(res.header))
		}
	})

	t.Run("websocket origin on a REST stream path", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		_, resp, err := websocket.Dial(ctx, "ws://"+addr+"/v1/shelves/s1/books:watch", &websocket.DialOptions{
			HTTPClient: &http.Client{Transport: tr}, HTTPHeader: http.Header{"Origin": {evil}}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("origin %s: want 403, got %v %v", evil, resp, err)
		}
		res := wsRun(t, addr, "/v1/shelves/s1/books:watch", http.Header{"Origin": {app}}, `{}`)
		if res.close.Code != websocket.StatusNormalClosure || len(res.messages) != 3 || !strings.Contains(res.messages[0], `"name":"shelves/s1/books/0"`) {
			t.Fatalf("origin %s: %v, %d messages %v", app, res.close, len(res.messages), res.messages)
		}
	})
}

// TestWebSocketPathParams: the variables of the REST path a WebSocket
// opens on are set in the first request message, as grpc-gateway sets path
// fields (a message that sets one itself is refused, as a REST body is);
// an empty first message to a method that takes one request sends the
// request built from the path.
func TestWebSocketPathParams(t *testing.T) {
	shelfAddr, _ := startShelfBackend(t, "127.0.0.1:0", false) // compiled in: examples.shelf.v1
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends: [{ name: shelf, endpoints: [%q] }]
routes: [{ name: shelf, match: { service: "examples.shelf.v1.ShelfService" }, backend: shelf }]
`, shelfAddr))
	addr := g.Addr("edge").String()
	for _, tc := range []struct {
		name, first string
	}{
		{"from the path", `{}`},
		{"empty first message", ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := wsRun(t, addr, "/v1/shelves/s1/books:watch", nil, tc.first)
			if res.close.Code != websocket.StatusNormalClosure || len(res.messages) != 3 {
				t.Fatalf("close %v, messages %v", res.close, res.messages)
			}
			for i, m := range res.messages {
				if want := fmt.Sprintf(`"name":"shelves/s1/books/%d"`, i); !strings.Contains(m, want) {
					t.Errorf("message %d %s, want %s", i, m, want)
				}
			}
		})
	}
	// A field set by both the path and the message is refused, as in a
	// REST body.
	res := wsRun(t, addr, "/v1/shelves/s1/books:watch", nil, `{"parent":"shelves/other"}`)
	if res.close.Code != websocket.StatusCode(4000+int(codes.InvalidArgument)) || len(res.messages) != 1 ||
		!strings.Contains(res.status(t).GetMessage(), `"parent"`) {
		t.Fatalf("path and message: close %v, messages %v", res.close, res.messages)
	}
	// The automatic /pkg.Service/Method path has no variables: the
	// message is the whole request.
	res = wsRun(t, addr, "/examples.shelf.v1.ShelfService/WatchBooks", nil, `{"parent":"shelves/m"}`)
	if res.close.Code != websocket.StatusNormalClosure || len(res.messages) != 3 || !strings.Contains(res.messages[2], `"name":"shelves/m/books/2"`) {
		t.Fatalf("close %v, messages %v", res.close, res.messages)
	}
}

// TestGRPCWebMediaTypeCase: media types are case-insensitive (RFC 9110
// §8.3.1), so gRPC-Web in any case is gRPC-Web, not REST; a codec other
// than proto (+json, the Connect-style JSON form) is 415.
func TestGRPCWebMediaTypeCase(t *testing.T) {
	_, addr := startBrowserGateway(t)
	c := httpClient(t, false)
	const method = "/examples.greeter.v1.GreeterService/SayHello"
	for _, tc := range []struct {
		ct   string
		text bool
	}{
		{"Application/gRPC-Web+proto", false},
		{"APPLICATION/GRPC-WEB", false},
		{"application/grpc-web+PROTO; charset=utf-8", false},
		{"Application/gRPC-Web-Text", true},
		{"application/GRPC-WEB-TEXT+proto", true},
	} {
		t.Run(tc.ct, func(t *testing.T) {
			res := grpcWebCall(t, c, addr, method, &greeterv1.SayHelloRequest{Name: "Ada"}, tc.text, "Content-Type", tc.ct)
			if res.httpStatus != 200 || res.code() != codes.OK || len(res.messages) != 1 {
				t.Fatalf("%d %v %d messages", res.httpStatus, res.trailer, len(res.messages))
			}
		})
	}
	for _, ct := range []string{"application/grpc-web+json", "Application/gRPC-Web-Text+JSON"} {
		t.Run(ct, func(t *testing.T) {
			code, body, _ := httpDo(t, http.MethodPost, "http://"+addr+method, `{"name":"Ada"}`, "Content-Type", ct)
			if code != http.StatusUnsupportedMediaType {
				t.Fatalf("%d %s, want 415", code, body)
			}
		})
	}
}

// TestWebSocketStatusDetails: a WebSocket call that fails ends with a last
// message {"error": google.rpc.Status}, details included (a close frame's
// reason has room for 123 bytes of message only), then the close frame
// 4000 + code; a successful one sends no such message.
func TestWebSocketStatusDetails(t *testing.T) {
	_, addr := startBrowserGateway(t)
	const path = "/examples.greeter.v1.GreeterService/StreamHellos"

	res := wsRun(t, addr, path, nil, `{"name":"fail","count":4}`)
	if res.close.Code != websocket.StatusCode(4000+int(codes.Aborted)) || len(res.messages) != 3 {
		t.Fatalf("close %v, messages %v", res.close, res.messages)
	}
	for _, m := range res.messages[:2] {
		if !strings.Contains(m, `"message":"partial"`) {
			t.Fatalf("message %s", m)
		}
	}
	st := res.status(t)
	if codes.Code(st.GetCode()) != codes.Aborted || st.GetMessage() != "greeter broke: ünïcode 100%" || len(st.GetDetails()) != 1 {
		t.Fatalf("status %v", st)
	}
	var info errdetails.ErrorInfo
	if err := st.GetDetails()[0].UnmarshalTo(&info); err != nil || info.GetReason() != "BROKEN" {
		t.Fatalf("detail %v: %v", st.GetDetails()[0], err)
	}
	if res.close.Reason != st.GetMessage() {
		t.Errorf("close reason %q, want the status message", res.close.Reason)
	}

	// Before any message: the status message alone.
	res = wsRun(t, addr, path, nil, `{"name":"missing","count":3}`)
	if res.close.Code != websocket.StatusCode(4000+int(codes.NotFound)) || len(res.messages) != 1 || codes.Code(res.status(t).GetCode()) != codes.NotFound {
		t.Fatalf("close %v, messages %v", res.close, res.messages)
	}
	// A long message: cut in the close frame, whole in the status message.
	long := strings.Repeat("é", 100)
	res = wsRun(t, addr, "/grpc.testing.TestService/FullDuplexCall", nil, fmt.Sprintf(`{"responseStatus":{"code":9,"message":%q}}`, long))
	if res.close.Code != websocket.StatusCode(4000+int(codes.FailedPrecondition)) || res.status(t).GetMessage() != long ||
		len(res.close.Reason) > 123 || !strings.HasPrefix(long, res.close.Reason) || res.close.Reason == "" {
		t.Fatalf("close %v, messages %v", res.close, res.messages)
	}
	// Success: messages only.
	res = wsRun(t, addr, path, nil, `{"name":"Ada","count":2}`)
	if res.close.Code != websocket.StatusNormalClosure || len(res.messages) != 2 {
		t.Fatalf("close %v, messages %v", res.close, res.messages)
	}
}

// mdGreeter answers SayHello, and StreamHellos with one message, with the
// metadata it received (mdSeenKeys) as a JSON object in the message, so
// that tests see what the gateway passed to the backend.
type mdGreeter struct {
	greeterv1.UnimplementedGreeterServiceServer
}

// mdSeenKeys are the metadata keys mdGreeter reports.
var mdSeenKeys = []string{
	"x-gatehouse-subject", "x-gatehouse-credential", "x-gatehouse-claims-plan", "x-gatehouse-spoof",
	"grpc-metadata-x-gatehouse-subject", "x-api-key", "authorization",
	"traceparent", "tracestate", "baggage",
}

func seenMetadata(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	seen := map[string]string{}
	for _, k := range mdSeenKeys {
		if v := md.Get(k); len(v) > 0 {
			seen[k] = strings.Join(v, "|")
		}
	}
	b, _ := json.Marshal(seen)
	return string(b)
}

func (mdGreeter) SayHello(ctx context.Context, _ *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	return &greeterv1.SayHelloResponse{Message: seenMetadata(ctx)}, nil
}

func (mdGreeter) StreamHellos(_ *greeterv1.StreamHellosRequest, s grpc.ServerStreamingServer[greeterv1.StreamHellosResponse]) error {
	return s.Send(&greeterv1.StreamHellosResponse{Message: seenMetadata(s.Context()), Index: 1})
}

// browserOutcome is one browser call's result, whatever its transport.
type browserOutcome struct {
	code    codes.Code
	seen    map[string]string // the backend's metadata, on success
	headers http.Header       // gRPC-Web: response headers and trailers
}

// TestBrowserTransportsEnterTheChain: gRPC-Web (binary and text) and
// WebSocket calls pass the same checks as gRPC and REST calls (issue 5's
// one policy path): authentication, identity passed to the backend with
// spoofed identity headers removed, rate limits with their headers, an
// audit record per call, and the W3C trace context of the caller carried
// to the backend in the same trace. A WebSocket, which a browser cannot
// give headers, may carry a JWT in the query string.
func TestBrowserTransportsEnterTheChain(t *testing.T) {
	col := startCollector(t, false)
	backend := startBackend(t, func(s *grpc.Server) { greeterv1.RegisterGreeterServiceServer(s, mdGreeter{}) })
	dir := t.TempDir()
	auditFile := filepath.Join(dir, "audit.jsonl")
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := jwtKey{kid: "browser-1", priv: ek}
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwksDoc(t, key), 0o600); err != nil {
		t.Fatal(err)
	}
	const apiKey = "k-browser-1"
	sum := sha256.Sum256([]byte(apiKey))
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends: [{ name: b, endpoints: [%q] }]
authentication:
  api_keys:
    - { name: partners, header: x-api-key, keys: [{ id: acme, sha256: %q, labels: { plan: gold } }] }
  jwt:
    - name: qs
      issuer: "https://id.browser.test/"
      audiences: ["gatehouse"]
      jwks_file: %q
      from: { query: access_token }
routes:
  - name: greeter
    match: { service: "examples.greeter.v1.GreeterService" }
    backend: b
    auth: { require: [partners, qs], forward_claims: [plan] }
quota:
  policies:
    - { name: per-tenant, key: 'metadata["x-tenant"]', rate: { requests: 2, per: "1h", burst: 2 }, routes: [greeter] }
audit: { file: %q, fsync: PER_RECORD }
telemetry:
  tracing: { otlp: { endpoint: %q }, sampling_ratio: 1 }
`, backend, hex.EncodeToString(sum[:]), jwksFile, auditFile, col.addr))
	addr := g.Addr("edge").String()
	hc := httpClient(t, false)

	grpcWeb := func(text bool) func(t *testing.T, query string, header ...string) browserOutcome {
		return func(t *testing.T, _ string, header ...string) browserOutcome {
			res := grpcWebCall(t, hc, addr, "/examples.greeter.v1.GreeterService/SayHello", &greeterv1.SayHelloRequest{Name: "Ada"}, text, header...)
			out := browserOutcome{code: res.code(), headers: res.header.Clone()}
			for k, v := range res.trailer {
				out.headers.Set(k, v)
			}
			if out.code == codes.OK {
				var m greeterv1.SayHelloResponse
				if len(res.messages) != 1 || proto.Unmarshal(res.messages[0], &m) != nil || json.Unmarshal([]byte(m.GetMessage()), &out.seen) != nil {
					t.Fatalf("answer %v", res.messages)
				}
			}
			return out
		}
	}
	socket := func(t *testing.T, query string, header ...string) browserOutcome {
		h := http.Header{}
		for i := 0; i+1 < len(header); i += 2 {
			h.Set(header[i], header[i+1])
		}
		res := wsRun(t, addr, "/examples.greeter.v1.GreeterService/StreamHellos"+query, h, `{"name":"Ada","count":1}`)
		out := browserOutcome{code: codes.OK}
		if res.close.Code != websocket.StatusNormalClosure {
			out.code = codes.Code(res.close.Code - 4000)
			if st := res.status(t); codes.Code(st.GetCode()) != out.code {
				t.Fatalf("status message %v, close %v", st, res.close)
			}
			return out
		}
		var m greeterv1.StreamHellosResponse
		if len(res.messages) != 1 || protojson.Unmarshal([]byte(res.messages[0]), &m) != nil || json.Unmarshal([]byte(m.GetMessage()), &out.seen) != nil {
			t.Fatalf("answer %v", res.messages)
		}
		return out
	}
	transports := []struct {
		name string
		call func(t *testing.T, query string, header ...string) browserOutcome
	}{
		{"grpc-web", grpcWeb(false)},
		{"grpc-web-text", grpcWeb(true)},
		{"websocket", socket},
	}

	type auditWant struct {
		allowed bool
		by      string
		code    string
	}
	wantAudit := map[string]auditWant{} // by request ID
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			rid := func(s string) string { return tr.name + "-" + s }
			tenant := func(s string) string { return tr.name + "-" + s }

			// No credentials.
			out := tr.call(t, "", "X-Tenant", tenant("anon"), "X-Request-Id", rid("anon"))
			if out.code != codes.Unauthenticated {
				t.Errorf("no API key: %v, want UNAUTHENTICATED", out.code)
			}
			wantAudit[rid("anon")] = auditWant{false, "authentication", "Unauthenticated"}

			// A valid key, and an identity the client made up.
			out = tr.call(t, "", "X-Api-Key", apiKey, "X-Tenant", tenant("key"), "X-Request-Id", rid("key"),
				"X-Gatehouse-Subject", "root", "X-Gatehouse-Spoof", "1", "X-Gatehouse-Claims-Plan", "platinum",
				"Grpc-Metadata-X-Gatehouse-Subject", "root")
			want := map[string]string{"x-gatehouse-subject": "acme", "x-gatehouse-credential": "apikey:partners", "x-gatehouse-claims-plan": "gold"}
			if out.code != codes.OK {
				t.Fatalf("valid API key: %v", out.code)
			}
			for k, v := range want {
				if out.seen[k] != v {
					t.Errorf("backend saw %s = %q, want %q (all: %v)", k, out.seen[k], v, out.seen)
				}
			}
			for _, k := range []string{"x-gatehouse-spoof", "grpc-metadata-x-gatehouse-subject", "x-api-key"} {
				if v, ok := out.seen[k]; ok {
					t.Errorf("backend saw %s = %q", k, v)
				}
			}
			wantAudit[rid("key")] = auditWant{true, "", "OK"}

			// A rate limit of two calls: the third is refused.
			for i := 1; i <= 3; i++ {
				id := rid(fmt.Sprintf("rl-%d", i))
				out = tr.call(t, "", "X-Api-Key", apiKey, "X-Tenant", tenant("rl"), "X-Request-Id", id)
				wantCode := codes.OK
				if i == 3 {
					wantCode = codes.ResourceExhausted
				}
				if out.code != wantCode {
					t.Fatalf("call %d under a limit of 2: %v, want %v", i, out.code, wantCode)
				}
				if out.headers != nil { // gRPC-Web: the RateLimit headers
					if got := out.headers.Get("Ratelimit-Policy"); got != `"per-tenant";q=2;w=3600` {
						t.Errorf("call %d: RateLimit-Policy %q (headers %v)", i, got, out.headers)
					}
					if got, want := out.headers.Get("Ratelimit"), fmt.Sprintf(`"per-tenant";r=%d;`, max(0, 2-i)); !strings.HasPrefix(got, want) {
						t.Errorf("call %d: RateLimit %q, want %s...", i, got, want)
					}
				}
				if i < 3 {
					wantAudit[id] = auditWant{true, "", "OK"}
				} else {
					wantAudit[id] = auditWant{false, "quota:per-tenant", "ResourceExhausted"}
				}
			}

			// The caller's trace context reaches the backend, in the same
			// trace, under the gateway's spans.
			traceID := fmt.Sprintf("%032x", sha256.Sum256([]byte(tr.name)))[:32]
			const clientSpan = "00f067aa0ba902b7"
			out = tr.call(t, "", "X-Api-Key", apiKey, "X-Tenant", tenant("trace"), "X-Request-Id", rid("trace"),
				"Traceparent", "00-"+traceID+"-"+clientSpan+"-01", "Tracestate", "vendor=browser", "Baggage", "tenant=acme")
			if out.code != codes.OK {
				t.Fatalf("traced call: %v", out.code)
			}
			tp := out.seen["traceparent"]
			if len(tp) != 55 || tp[3:35] != traceID || tp[36:52] == clientSpan {
				t.Errorf("backend got traceparent %q, want trace %s with the gateway's span as parent", tp, traceID)
			}
			if out.seen["tracestate"] != "vendor=browser" || out.seen["baggage"] != "tenant=acme" {
				t.Errorf("backend got tracestate %q, baggage %q", out.seen["tracestate"], out.seen["baggage"])
			}
			spans := col.trace(t, traceID, 2)
			if srv := spanByKind(t, spans, tracepb.Span_SPAN_KIND_SERVER); len(srv) != 1 || hex.EncodeToString(srv[0].GetParentSpanId()) != clientSpan {
				t.Errorf("server span %v, want one whose parent is the client's span", srv)
			}
			wantAudit[rid("trace")] = auditWant{true, "", "OK"}
		})
	}

	t.Run("websocket token in the query", func(t *testing.T) {
		now := time.Now()
		tok := key.sign(t, "ES256", map[string]any{
			"iss": "https://id.browser.test/", "aud": "gatehouse", "sub": "ws-user", "plan": "silver",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		}, nil)
		out := socket(t, "?access_token="+tok, "X-Tenant", "ws-query", "X-Request-Id", "ws-query")
		if out.code != codes.OK || out.seen["x-gatehouse-subject"] != "ws-user" || out.seen["x-gatehouse-credential"] != "jwt:qs" ||
			out.seen["x-gatehouse-claims-plan"] != "silver" {
			t.Fatalf("JWT in the query: %v %v", out.code, out.seen)
		}
		out = socket(t, "?access_token=not-a-token", "X-Tenant", "ws-query", "X-Request-Id", "ws-bad-query")
		if out.code != codes.Unauthenticated {
			t.Fatalf("bad JWT in the query: %v", out.code)
		}
		wantAudit["ws-query"] = auditWant{true, "", "OK"}
		wantAudit["ws-bad-query"] = auditWant{false, "authentication", "Unauthenticated"}
	})

	// One audit record per call, with its decision and outcome.
	records := map[string]map[string]any{}
	deadline := time.Now().Add(10 * time.Second)
	for len(records) < len(wantAudit) && time.Now().Before(deadline) {
		records = map[string]map[string]any{}
		b, _ := os.ReadFile(auditFile)
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var r map[string]any
			if json.Unmarshal([]byte(line), &r) == nil {
				if id, _ := r["request_id"].(string); id != "" {
					records[id] = r
				}
			}
		}
		if len(records) < len(wantAudit) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	for id, w := range wantAudit {
		r, ok := records[id]
		if !ok {
			t.Errorf("no audit record for call %s", id)
			continue
		}
		d, _ := r["decision"].(map[string]any)
		o, _ := r["outcome"].(map[string]any)
		by, _ := d["by"].(string)
		if d["allowed"] != w.allowed || by != w.by || o["code"] != w.code {
			t.Errorf("audit record of %s: decision %v outcome %v, want %+v", id, d, o, w)
		}
	}
}
