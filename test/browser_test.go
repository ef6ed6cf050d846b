package test

// End-to-end tests of what browsers speak (issue 4): gRPC-Web in binary and
// text modes over HTTP/1.1 and HTTP/2, CORS, REST server streams as NDJSON,
// Server-Sent Events and JSON arrays, and bidi streams over WebSocket, all
// through the same gateway assembly the binary runs.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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
		_, _, err := c.Read(ctx)
		var ce websocket.CloseError
		if !asCloseError(err, &ce) || ce.Code != websocket.StatusCode(4000+int(codes.NotFound)) || ce.Reason != "not here" {
			t.Fatalf("close %v, want 4005 not here", err)
		}
	})
	t.Run("bad message", func(t *testing.T) {
		c, ctx := wsDial(t, addr, path, nil)
		_ = c.Write(ctx, websocket.MessageText, []byte(`{"noSuchField":1}`))
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
