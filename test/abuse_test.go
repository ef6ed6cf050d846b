package test

// Abuse tests (issue 11): hostile input at the edge, spoken raw (HTTP/2
// frames through golang.org/x/net/http2's Framer and hpack over a plain TCP
// connection, HTTP/1.1 bytes over TCP) so that nothing a well-behaved client
// library would refuse to send is left untested. Every case asserts the
// answer the gateway gives and that nothing reached the backend that should
// not have: the backend counts stream opens, messages received and calls
// handled, and the TCP connections the gateway opened to it.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	"github.com/gatehouse-dev/gatehouse/examples/library"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"
)

// abuseMaxMsg is the abuse listeners' message limit; small, so that floods
// past it are cheap to send.
const abuseMaxMsg = 64 << 10

// countingBackend serves the interop TestService and the example library
// service and counts what reaches it.
type countingBackend struct {
	addr     string
	streams  atomic.Int64 // streams opened (HEADERS seen), whatever follows
	messages atomic.Int64 // request messages decoded by a handler
	handled  atomic.Int64 // unary calls whose handler ran
	conns    atomic.Int64 // TCP connections accepted
	running  atomic.Int64 // stream handlers running now
	peak     atomic.Int64 // most stream handlers running at once
	mu       sync.Mutex
	deadline time.Duration // time left on the last unary call's deadline; -1 when none
	lastID   string        // id of the last GetBook call
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type countingStream struct {
	grpc.ServerStream
	b *countingBackend
}

func (s countingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.b.messages.Add(1)
	}
	return err
}

// startCountingBackend starts the counting backend on a free loopback port.
func startCountingBackend(t *testing.T) *countingBackend {
	t.Helper()
	b := &countingBackend{deadline: -2}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := library.NewGRPCServer(library.New(),
		grpc.InTapHandle(func(ctx context.Context, _ *tap.Info) (context.Context, error) {
			b.streams.Add(1)
			return ctx, nil
		}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			b.messages.Add(1)
			b.handled.Add(1)
			b.mu.Lock()
			b.deadline = -1
			if d, ok := ctx.Deadline(); ok {
				b.deadline = time.Until(d)
			}
			if g, ok := req.(interface{ GetId() string }); ok {
				b.lastID = g.GetId()
			}
			b.mu.Unlock()
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			n := b.running.Add(1)
			defer b.running.Add(-1)
			for p := b.peak.Load(); n > p && !b.peak.CompareAndSwap(p, n); p = b.peak.Load() {
			}
			return h(srv, countingStream{ss, b})
		}),
		grpc.MaxRecvMsgSize(16<<20),
	)
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(countingListener{lis, &b.conns})
	}()
	t.Cleanup(func() { s.Stop(); <-done })
	b.addr = lis.Addr().String()
	return b
}

func (b *countingBackend) lastDeadline() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.deadline
}

// abuseConfig is a gateway with a shared and a native listener, both with
// small limits and short timeouts, in front of b.
func abuseConfig(b *countingBackend) string {
	limits := fmt.Sprintf(`{ max_message_bytes: %d, read_header_timeout: "300ms", max_concurrent_streams: 10, keepalive: { ping_interval: "1s", ping_timeout: "1s" } }`, abuseMaxMsg)
	return fmt.Sprintf(`
listeners:
  - name: shared
    address: "127.0.0.1:0"
    limits: %[1]s
  - name: native
    address: "127.0.0.1:0"
    protocol: grpc
    limits: %[1]s
admin: { address: "127.0.0.1:0" }
backends:
  - name: b
    endpoints: [%[2]q]
routes:
  - name: all
    match: { service: "*" }
    backend: b
    timeout: { max: "2s" }
`, limits, b.addr)
}

// abuseGateway starts a counting backend and the abuse gateway in front of
// it, waits until a call goes through on both listeners, and resets the
// backend's counters.
func abuseGateway(t *testing.T, extra ...string) (*countingBackend, map[string]string) {
	t.Helper()
	b := startCountingBackend(t)
	cfg := abuseConfig(b)
	for _, e := range extra {
		cfg += e
	}
	g := startGateway(t, cfg, withDemoREST())
	addrs := map[string]string{"shared": g.Addr("shared").String(), "native": g.Addr("native").String()}
	for _, a := range addrs {
		cc := dial(t, a)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testpb.Empty{}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			t.Fatalf("warm-up call: %v", err)
		}
		_ = cc.Close()
	}
	b.streams.Store(0)
	b.messages.Store(0)
	b.handled.Store(0)
	b.peak.Store(0)
	addrs["admin"] = g.Addr("admin").String() // after the warm-up, which dials the others
	return b, addrs
}

func withDemoREST() edge.Option { return edge.WithREST(demo.REST()...) }

// h2 is a raw HTTP/2 client connection.
type h2 struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	addr string
}

// dialH2 opens a TCP connection to addr and sends the client preface and
// an empty SETTINGS frame.
func dialH2(t *testing.T, addr string) *h2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	h := &h2{t: t, c: c, addr: addr}
	h.fr = http2.NewFramer(c, c)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	h.enc = hpack.NewEncoder(&h.hbuf)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

// block hpack-encodes fields ("name", "value" pairs).
func (h *h2) block(fields ...string) []byte {
	h.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return append([]byte(nil), h.hbuf.Bytes()...)
}

// grpcHeaders are the request headers of a gRPC call to method, then extra.
func (h *h2) grpcHeaders(method string, extra ...string) []string {
	return append([]string{":method", "POST", ":scheme", "http", ":path", method, ":authority", h.addr,
		"content-type", "application/grpc", "te", "trailers"}, extra...)
}

func (h *h2) headers(id uint32, endStream bool, fields ...string) {
	h.t.Helper()
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.block(fields...), EndStream: endStream, EndHeaders: true}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *h2) data(id uint32, endStream bool, p []byte) {
	// Write errors are not fatal: the server may close first, which wait sees.
	h.t.Helper()
	for len(p) > 16<<10 {
		if err := h.fr.WriteData(id, false, p[:16<<10]); err != nil {
			return
		}
		p = p[16<<10:]
	}
	_ = h.fr.WriteData(id, endStream, p)
}

// grpcFrame is a gRPC length-prefixed message.
func grpcFrame(flag byte, length uint32, payload []byte) []byte {
	out := make([]byte, 5, 5+len(payload))
	out[0] = flag
	binary.BigEndian.PutUint32(out[1:], length)
	return append(out, payload...)
}

// h2Result is what came back on one stream, or on the connection.
type h2Result struct {
	status     string // :status
	grpcStatus string // grpc-status, from headers or trailers
	grpcMsg    string
	rst        http2.ErrCode // RST_STREAM code; 0 when none
	rstSeen    bool
	goAway     bool
	goAwayCode http2.ErrCode
	goAwayData string
	closed     bool // the connection ended (EOF or reset)
	body       []byte
}

func (r h2Result) String() string {
	var parts []string
	if r.status != "" {
		parts = append(parts, ":status "+r.status)
	}
	if r.grpcStatus != "" {
		c, _ := strconv.Atoi(r.grpcStatus)
		parts = append(parts, fmt.Sprintf("grpc-status %s (%s)", codes.Code(c), r.grpcMsg))
	}
	if r.rstSeen {
		parts = append(parts, "RST_STREAM "+r.rst.String())
	}
	if r.goAway {
		parts = append(parts, fmt.Sprintf("GOAWAY %s %q", r.goAwayCode, r.goAwayData))
	}
	if r.closed {
		parts = append(parts, "connection closed")
	}
	return strings.Join(parts, ", ")
}

func (r h2Result) code() codes.Code {
	c, err := strconv.Atoi(r.grpcStatus)
	if err != nil {
		return codes.Code(999)
	}
	return codes.Code(c)
}

// wait reads frames until stream id ends (END_STREAM or RST_STREAM), the
// connection ends, or d passes. id 0 waits for the connection to end (or a
// GOAWAY, when untilGoAway).
func (h *h2) wait(id uint32, d time.Duration) h2Result {
	h.t.Helper()
	var r h2Result
	deadline := time.Now().Add(d)
	_ = h.c.SetReadDeadline(deadline)
	defer h.c.SetReadDeadline(time.Time{})
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return r
			}
			r.closed = true
			return r
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = h.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = h.fr.WritePing(true, f.Data)
			}
		case *http2.GoAwayFrame:
			r.goAway, r.goAwayCode, r.goAwayData = true, f.ErrCode, string(f.DebugData())
			if id != 0 && f.LastStreamID < id {
				return r
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				r.rst, r.rstSeen = f.ErrCode, true
				return r
			}
		case *http2.DataFrame:
			if f.StreamID == id {
				r.body = append(r.body, f.Data()...)
				if len(f.Data()) > 0 {
					_ = h.fr.WriteWindowUpdate(0, uint32(len(f.Data())))
					_ = h.fr.WriteWindowUpdate(id, uint32(len(f.Data())))
				}
				if f.StreamEnded() {
					return r
				}
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				for _, hf := range f.Fields {
					switch hf.Name {
					case ":status":
						r.status = hf.Value
					case "grpc-status":
						r.grpcStatus = hf.Value
					case "grpc-message":
						r.grpcMsg = hf.Value
					}
				}
				if f.StreamEnded() {
					return r
				}
			}
		}
	}
}

// call sends one gRPC call with the given body on a fresh connection and
// returns what came back.
func rawCall(t *testing.T, addr string, body []byte, endStream bool, extra ...string) h2Result {
	t.Helper()
	h := dialH2(t, addr)
	h.headers(1, false, h.grpcHeaders("/grpc.testing.TestService/UnaryCall", extra...)...)
	h.data(1, endStream, body)
	return h.wait(1, 5*time.Second)
}

func simpleRequest(t *testing.T) []byte {
	b, err := proto.Marshal(&testpb.SimpleRequest{ResponseSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gzipped(t *testing.T, n int) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zero := make([]byte, 64<<10)
	for n > 0 {
		k := min(n, len(zero))
		_, _ = zw.Write(zero[:k])
		n -= k
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// logCase records a case's outcome for the closing note (go test -v).
func logCase(t *testing.T, name string, got any) {
	t.Helper()
	t.Logf("CASE %s: %v", name, got)
}

var listenerKinds = []string{"shared", "native"}

func TestAbuseMessageFraming(t *testing.T) {
	b, addrs := abuseGateway(t)
	valid := simpleRequest(t)
	bomb := gzipped(t, 32<<20) // 32 MiB of zeros, about 32 KiB compressed
	if len(bomb) >= abuseMaxMsg {
		t.Fatalf("bomb of %d bytes is not under the limit", len(bomb))
	}
	cases := []struct {
		name      string
		body      []byte
		endStream bool
		extra     []string
		want      codes.Code
	}{
		{"length prefix over the limit", grpcFrame(0, abuseMaxMsg+1, make([]byte, 100)), false, nil, codes.ResourceExhausted},
		{"gzip bomb inflating past the limit", grpcFrame(1, uint32(len(bomb)), bomb), true, []string{"grpc-encoding", "gzip"}, codes.ResourceExhausted},
		{"compressed flag with identity encoding", grpcFrame(1, uint32(len(valid)), valid), true, nil, codes.Internal},
		{"unknown grpc-encoding", grpcFrame(1, uint32(len(valid)), valid), true, []string{"grpc-encoding", "x-bogus"}, codes.Unimplemented},
		{"bad payload flag", grpcFrame(2, uint32(len(valid)), valid), true, nil, codes.Internal},
		{"frame cut off mid-message", grpcFrame(0, 100, valid[:min(5, len(valid))]), true, nil, codes.Internal},
	}
	for _, kind := range listenerKinds {
		for _, tc := range cases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				b.messages.Store(0)
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				before := ms.TotalAlloc
				got := rawCall(t, addrs[kind], tc.body, tc.endStream, tc.extra...)
				runtime.ReadMemStats(&ms)
				logCase(t, kind+"/"+tc.name, fmt.Sprintf("%v; allocated %d KiB; backend messages %d", got, (ms.TotalAlloc-before)>>10, b.messages.Load()))
				if got.code() != tc.want {
					t.Errorf("got %v, want grpc-status %s", got, tc.want)
				}
				if n := b.messages.Load(); n != 0 {
					t.Errorf("backend received %d messages, want 0", n)
				}
				if alloc := ms.TotalAlloc - before; alloc > 16<<20 {
					t.Errorf("allocated %d MiB serving the call, want a bounded amount", alloc>>20)
				}
			})
		}
	}
}

func TestAbuseProtocol(t *testing.T) {
	b, addrs := abuseGateway(t)
	valid := simpleRequest(t)
	msg := grpcFrame(0, uint32(len(valid)), valid)
	const method = "/grpc.testing.TestService/UnaryCall"
	cases := []struct {
		name   string
		fields func(h *h2) []string
		want   map[string]string // by listener kind: ":status N" or "grpc-status CODE" or "RST_STREAM CODE"
	}{
		{"wrong content-type", func(h *h2) []string {
			f := h.grpcHeaders(method)
			f[9] = "text/plain"
			return f
		}, map[string]string{
			// A shared listener takes what is not gRPC for REST: a POST to a
			// path no REST route has is 404 (a REST auto-mapped method would
			// take it as JSON; curl's default form content type must work).
			"shared": ":status 404", "native": ":status 415"}},
		{"wrong verb", func(h *h2) []string {
			f := h.grpcHeaders(method)
			f[1] = "GET"
			return f
		}, map[string]string{"shared": ":status 405", "native": ":status 405"}},
		{"malformed grpc-timeout", func(h *h2) []string {
			return h.grpcHeaders(method, "grpc-timeout", "1x")
		}, map[string]string{"shared": ":status 400", "native": ":status 400"}},
	}
	for _, kind := range listenerKinds {
		for _, tc := range cases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				b.streams.Store(0)
				b.messages.Store(0)
				h := dialH2(t, addrs[kind])
				h.headers(1, false, tc.fields(h)...)
				h.data(1, true, msg)
				got := h.wait(1, 5*time.Second)
				logCase(t, kind+"/"+tc.name, fmt.Sprintf("%v; backend streams %d, messages %d", got, b.streams.Load(), b.messages.Load()))
				if w := tc.want[kind]; !strings.Contains(got.String(), w) {
					t.Errorf("got %v, want %s", got, w)
				}
				if n, m := b.streams.Load(), b.messages.Load(); n != 0 || m != 0 {
					t.Errorf("backend saw %d streams and %d messages, want none", n, m)
				}
			})
		}
	}
	for _, kind := range listenerKinds {
		t.Run(kind+"/huge grpc-timeout capped at the route's max", func(t *testing.T) {
			h := dialH2(t, addrs[kind])
			h.headers(1, false, h.grpcHeaders(method, "grpc-timeout", "99999999H")...)
			h.data(1, true, msg)
			got := h.wait(1, 5*time.Second)
			left := b.lastDeadline()
			logCase(t, kind+"/huge grpc-timeout", fmt.Sprintf("%v; backend deadline in %v", got, left.Round(time.Millisecond)))
			if got.code() != codes.OK {
				t.Errorf("got %v, want OK", got)
			}
			if left <= 0 || left > 2*time.Second {
				t.Errorf("backend deadline in %v, want at most the route's max, 2s", left)
			}
		})
	}
}

func TestAbuseHeaders(t *testing.T) {
	b, addrs := abuseGateway(t)
	valid := simpleRequest(t)
	msg := grpcFrame(0, uint32(len(valid)), valid)
	const method = "/grpc.testing.TestService/UnaryCall"
	many := func(n, size int) []string {
		var f []string
		for i := range n {
			f = append(f, fmt.Sprintf("x-h-%03d", i), strings.Repeat("v", size))
		}
		return f
	}
	cases := []struct {
		name  string
		extra []string
	}{
		{"101 headers", many(101, 1)},
		{"60 KiB of headers", many(60, 1<<10)},
	}
	for _, kind := range listenerKinds {
		for _, tc := range cases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				b.streams.Store(0)
				b.messages.Store(0)
				h := dialH2(t, addrs[kind])
				h.headers(1, false, h.grpcHeaders(method, tc.extra...)...)
				h.data(1, true, msg)
				got := h.wait(1, 5*time.Second)
				logCase(t, kind+"/"+tc.name, fmt.Sprintf("%v; backend streams %d, messages %d", got, b.streams.Load(), b.messages.Load()))
				refused := got.status == "431" || got.rstSeen || got.closed || (got.grpcStatus != "" && got.code() != codes.OK)
				if !refused {
					t.Errorf("got %v, want 431, a reset or an error status", got)
				}
				if n, m := b.streams.Load(), b.messages.Load(); n != 0 || m != 0 {
					t.Errorf("backend saw %d streams and %d messages, want none", n, m)
				}
			})
		}
		t.Run(kind+"/CONTINUATION flood", func(t *testing.T) {
			b.streams.Store(0)
			h := dialH2(t, addrs[kind])
			first := h.block(h.grpcHeaders(method)...)
			if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: false}); err != nil {
				t.Fatal(err)
			}
			// Each CONTINUATION carries fresh literal fields, never ending the
			// block: an unbounded header list unless the server stops it.
			chunk := h.block(many(16, 900)...)
			sent := 0
			start := time.Now()
			var werr error
			for sent < 64<<20 && time.Since(start) < 5*time.Second {
				_ = h.c.SetWriteDeadline(time.Now().Add(time.Second))
				if werr = h.fr.WriteContinuation(1, false, chunk); werr != nil {
					break
				}
				sent += len(chunk)
			}
			_ = h.c.SetWriteDeadline(time.Time{})
			got := h.wait(0, 3*time.Second)
			logCase(t, kind+"/CONTINUATION flood", fmt.Sprintf("%v; sent %d KiB before the server stopped reading (write error %v); backend streams %d", got, sent>>10, werr, b.streams.Load()))
			if werr == nil {
				t.Errorf("the server read %d MiB of one header block", sent>>20)
			}
			if !got.closed && !got.goAway {
				t.Errorf("connection neither closed nor sent GOAWAY: %v", got)
			}
			if n := b.streams.Load(); n != 0 {
				t.Errorf("backend saw %d streams, want none", n)
			}
		})
	}
}

// floodOutcome keeps writing fn's frames (never reading) until a write
// fails or 5s pass, then polls for up to 3s whether the server closed the
// connection ("closed") or just stopped reading it ("stalled").
func floodOutcome(h *h2, fn func(i int) error) (sent int, outcome string) {
	if tc, ok := h.c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4 << 10) // a client that does not read: fill up fast
	}
	start := time.Now()
	var err error
	for time.Since(start) < 5*time.Second {
		_ = h.c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		if err = fn(sent); err != nil {
			break
		}
		sent++
	}
	for end := time.Now().Add(3 * time.Second); ; {
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return sent, "closed"
		}
		if time.Now().After(end) {
			break
		}
		_ = h.c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, err = h.c.Write([]byte{0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}) // a PING
	}
	// The server still takes frames, or the flooding client's own kernel
	// stopped sending (its receive buffer full of unread answers, it drops
	// the ACKs that would free its send buffer; the server then sees an
	// idle connection). Either way the server must close the connection:
	// read what it sent until EOF or a reset, or until it is clearly kept.
	_ = h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err = io.Copy(io.Discard, h.c); err == nil || !isTimeout(err) {
		return sent, "closed"
	}
	return sent, "kept open"
}

func TestAbuseFloods(t *testing.T) {
	b, addrs := abuseGateway(t)
	const fdx = "/grpc.testing.TestService/FullDuplexCall"

	// healthy checks that a well-behaved client still gets through and
	// that the gateway kept its backend connections.
	healthy := func(t *testing.T, kind string, conns int64) {
		t.Helper()
		cc := dial(t, addrs[kind])
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Errorf("a well-behaved call after the flood: %v", err)
		}
		if n := b.conns.Load(); n != conns {
			t.Errorf("backend connections accepted: %d before the flood, %d after; want them kept", conns, n)
		}
	}

	for _, kind := range listenerKinds {
		t.Run(kind+"/rapid reset", func(t *testing.T) {
			conns := b.conns.Load()
			b.peak.Store(0)
			h := dialH2(t, addrs[kind])
			const streams = 2000
			var werr error
			start := time.Now()
			for i := range streams {
				id := uint32(2*i + 1)
				if werr = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.block(h.grpcHeaders(fdx)...), EndHeaders: true}); werr != nil {
					break
				}
				if werr = h.fr.WriteRSTStream(id, http2.ErrCodeCancel); werr != nil {
					break
				}
			}
			got := h.wait(0, 3*time.Second)
			logCase(t, kind+"/rapid reset", fmt.Sprintf("%v; %d streams opened and reset in %v (write error %v); backend stream handlers peak %d, streams %d", got, streams, time.Since(start).Round(time.Millisecond), werr, b.peak.Load(), b.streams.Load()))
			// grpc-go alone never sends GOAWAY, and net/http only when
			// resets outpace its handlers (debug data ""); the rapid-reset
			// guard (edge/h2guard.go) does once most of 500 streams were
			// reset prematurely ("rapid reset"), and closes the connection.
			wantData := map[string]bool{"rapid reset": true}
			if kind == "shared" {
				wantData[""] = true // net/http's own, when it comes first
			}
			if !got.goAway || got.goAwayCode != http2.ErrCodeEnhanceYourCalm || !wantData[got.goAwayData] || !got.closed {
				t.Errorf("got %v, want GOAWAY ENHANCE_YOUR_CALM \"rapid reset\" and the connection closed", got)
			}
			if p := b.peak.Load(); p > 10 {
				t.Errorf("backend stream handlers peaked at %d, more than the stream cap of 10", p)
			}
			// The flood counter fired, for this listener.
			if n := value(t, scrapeAt(t, addrs["admin"]), "gatehouse_http2_rapid_reset_total", map[string]string{"listener": kind}); n < 1 {
				t.Errorf("gatehouse_http2_rapid_reset_total{listener=%q} = %v, want at least 1", kind, n)
			}
			healthy(t, kind, conns)
		})
		for _, fl := range []struct {
			name string
			want string // by what the server does to a flood it has to answer
			fn   func(h *h2, i int) error
		}{
			// A shared listener (net/http) closes a client that stops
			// reading when its control-frame queue overflows, when nothing
			// could be written for the write-byte timeout, or when its
			// keepalive ping goes unanswered; grpc-go sends GOAWAY
			// too_many_pings for PINGs and closes at TCP_USER_TIMEOUT (the
			// ping timeout) for SETTINGS.
			{"PING flood, not reading", "closed",
				func(h *h2, i int) error { return h.fr.WritePing(false, [8]byte{byte(i)}) }},
			{"SETTINGS flood, not reading", "closed",
				func(h *h2, i int) error {
					return h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(65535 + i%2)})
				}},
		} {
			t.Run(kind+"/"+fl.name, func(t *testing.T) {
				conns := b.conns.Load()
				h := dialH2(t, addrs[kind])
				start := time.Now()
				sent, outcome := floodOutcome(h, func(i int) error { return fl.fn(h, i) })
				logCase(t, kind+"/"+fl.name, fmt.Sprintf("%s after %d frames in %v", outcome, sent, time.Since(start).Round(time.Millisecond)))
				if outcome != fl.want {
					t.Errorf("connection %s, want %s", outcome, fl.want)
				}
				healthy(t, kind, conns)
			})
		}
	}
	// grpc-go enforces its keepalive policy on native listeners; the
	// connection guard (edge/h2guard.go) enforces the same one on the
	// HTTP/2 connections of shared listeners, whose net/http has none.
	for _, kind := range listenerKinds {
		t.Run(kind+"/pings with no streams", func(t *testing.T) {
			h := dialH2(t, addrs[kind])
			var got h2Result
			for i := 0; i < 5 && !got.goAway && !got.closed; i++ {
				_ = h.fr.WritePing(false, [8]byte{byte(i)})
				got = h.wait(0, 200*time.Millisecond)
			}
			logCase(t, kind+"/pings with no streams", got)
			if !got.goAway || got.goAwayCode != http2.ErrCodeEnhanceYourCalm || got.goAwayData != "too_many_pings" {
				t.Errorf("got %v, want GOAWAY ENHANCE_YOUR_CALM \"too_many_pings\"", got)
			}
		})
	}
}

// rawHTTP1All sends req on a fresh TCP connection and returns the status
// lines of every answer, comma-separated, and whether the server closed the
// connection after them (within 2s).
func rawHTTP1All(t *testing.T, addr, req string) (statusLines string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var got []string
	for {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := br.Peek(1); err != nil {
			closed = err == io.EOF || !isTimeout(err)
			break
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			got = append(got, "unreadable answer: "+err.Error())
			closed = true
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		got = append(got, resp.Status)
	}
	if len(got) == 0 {
		return "no answer", closed
	}
	return strings.Join(got, ", "), closed
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestAbuseSmuggling(t *testing.T) {
	b, addrs := abuseGateway(t)
	addr := addrs["shared"]
	book := `{"title":"Dune","author":"Frank Herbert","year":1965}`
	smuggled := "GET /v1/books HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := []struct {
		name       string
		req        string
		wantStatus string
		wantClosed bool
		wantCalls  int64
	}{
		{"duplicate Content-Length, different values",
			"POST /v1/books HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nContent-Length: " + strconv.Itoa(len(book)) + "\r\n\r\n" + book,
			"400 Bad Request", true, 0},
		{"Transfer-Encoding chunked, identity",
			"POST /v1/books HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			"501 Not Implemented", true, 0},
		{"two Transfer-Encoding fields",
			"POST /v1/books HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			"501 Not Implemented", true, 0},
		{"malformed chunk size",
			"POST /v1/books HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + book + "\r\n0\r\n\r\n",
			"400 Bad Request", true, 0},
		{"chunk longer than its size",
			"POST /v1/books HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n" + book + "\r\n0\r\n\r\n",
			"400 Bad Request", true, 0},
		{"space before the colon",
			"POST /v1/books HTTP/1.1\r\nHost: x\r\nContent-Length : 4\r\n\r\n" + book,
			"400 Bad Request", true, 0},
		// RFC 9112 lets a server take Transfer-Encoding over Content-Length
		// (net/http does, and keeps the connection); the edge refuses it.
		{"Content-Length with Transfer-Encoding",
			"POST /v1/books HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
				strconv.FormatInt(int64(len(book)), 16) + "\r\n" + book + "\r\n0\r\n\r\n" + smuggled,
			"400 Bad Request", true, 0},
		{"Transfer-Encoding before Content-Length, lower case",
			"POST /v1/books HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n" + smuggled,
			"400 Bad Request", true, 0},
		// The second request on a kept-alive connection is checked too.
		{"smuggling in a pipelined second request",
			"GET /v1/books HTTP/1.1\r\nHost: x\r\n\r\n" +
				"POST /v1/books HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(book)) + "\r\n\r\n" + book +
				"POST /v1/books HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
			"200 OK, 200 OK, 400 Bad Request", true, 2}, // the first two answered, the third refused and the connection closed
		// A chunked body, then a second request: framing tracked exactly.
		{"chunked body then a clean request",
			"POST /v1/books HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
				strconv.FormatInt(int64(len(book)), 16) + ";ext=1\r\n" + book + "\r\n0\r\nX-Trailer: y\r\n\r\n" + smuggled,
			"200 OK", false, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b.handled.Store(0)
			st, closed := rawHTTP1All(t, addr, tc.req)
			logCase(t, "smuggling/"+tc.name, fmt.Sprintf("%s, connection closed %v, backend calls %d", st, closed, b.handled.Load()))
			if !strings.HasPrefix(st, tc.wantStatus) || closed != tc.wantClosed {
				t.Errorf("got %s, closed %v; want %s, closed %v", st, closed, tc.wantStatus, tc.wantClosed)
			}
			if n := b.handled.Load(); n != tc.wantCalls {
				t.Errorf("backend handled %d calls, want %d", n, tc.wantCalls)
			}
		})
	}
}

func TestAbuseSlowClients(t *testing.T) {
	b, addrs := abuseGateway(t)
	t.Run("shared/HTTP/1.1 headers a byte at a time", func(t *testing.T) {
		c, err := net.Dial("tcp", addrs["shared"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		req := "GET /v1/books HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 200) + "\r\n\r\n"
		start := time.Now()
		i := 0
		var werr error
		for ; i < len(req) && time.Since(start) < 3*time.Second; i++ {
			if _, werr = c.Write([]byte{req[i]}); werr != nil {
				break
			}
			time.Sleep(20 * time.Millisecond) // the pace of the attack, not a wait for the result
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		answer, rerr := io.ReadAll(c) // until the server closes
		took := time.Since(start)
		first, _, _ := strings.Cut(string(answer), "\r\n")
		logCase(t, "shared/slow headers", fmt.Sprintf("answer %q, closed after %v, %d bytes sent (read %v)", first, took.Round(10*time.Millisecond), i, rerr))
		if rerr != nil {
			t.Errorf("connection still open after %v: %v", took, rerr)
		}
		if took > 2*time.Second {
			t.Errorf("closed after %v, want about the read-header timeout (300ms)", took)
		}
	})
	for _, kind := range listenerKinds {
		t.Run(kind+"/HTTP/2 preface a byte at a time", func(t *testing.T) {
			c, err := net.Dial("tcp", addrs[kind])
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			var rerr error
			for i := 0; i < len(http2.ClientPreface); i++ {
				if _, err := c.Write([]byte{http2.ClientPreface[i]}); err != nil {
					rerr = err
					break
				}
				time.Sleep(50 * time.Millisecond) // the attack's pace
			}
			if rerr == nil {
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, rerr = io.Copy(io.Discard, c)
			}
			took := time.Since(start)
			logCase(t, kind+"/slow preface", fmt.Sprintf("closed after %v (%v)", took.Round(10*time.Millisecond), rerr))
			if took > 2*time.Second || isTimeout(rerr) {
				t.Errorf("connection open for %v, want closed at about the read-header timeout (300ms)", took)
			}
		})
	}
	t.Run("shared/REST body sent slowly", func(t *testing.T) {
		b.handled.Store(0)
		c, err := net.Dial("tcp", addrs["shared"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		body := `{"title":"Dune","author":"Frank Herbert","year":1965}`
		if _, err := fmt.Fprintf(c, "POST /v1/books HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:5]); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_, rerr := br.ReadByte()
		logCase(t, "shared/slow body", fmt.Sprintf("%s after %v, then connection closed %v; backend calls %d", resp.Status, time.Since(start).Round(10*time.Millisecond), rerr == io.EOF, b.handled.Load()))
		if resp.StatusCode != http.StatusRequestTimeout || rerr != io.EOF {
			t.Errorf("got %s (then %v), want 408 and the connection closed", resp.Status, rerr)
		}
		if n := b.handled.Load(); n != 0 {
			t.Errorf("backend handled %d calls, want 0", n)
		}
	})
	t.Run("shared/REST body at normal pace still served", func(t *testing.T) {
		code, body, _ := httpDo(t, "POST", "http://"+addrs["shared"]+"/v1/books", `{"title":"Dune","author":"Frank Herbert","year":1965}`, "Content-Type", "application/json")
		if code != http.StatusOK {
			t.Errorf("got %d %s, want 200", code, body)
		}
	})
}

func TestAbusePaths(t *testing.T) {
	b := startCountingBackend(t)
	cfg := abuseConfig(b)
	cfg = cfg[:strings.Index(cfg, "routes:")] + booksRoutes("")
	g := startGateway(t, cfg, withDemoREST())
	base := "http://" + g.Addr("shared").String()
	// What the router checks (the decoded path against the route's regex)
	// must be what the backend is asked for: when GetBook runs, its id is
	// exactly the one segment the route allowed.
	for _, p := range edgeCasePaths {
		t.Run(p, func(t *testing.T) {
			b.handled.Store(0)
			b.mu.Lock()
			b.lastID = "<none>"
			b.mu.Unlock()
			code := getAsWritten(t, base, p, "")
			b.mu.Lock()
			id := b.lastID
			b.mu.Unlock()
			calls := b.handled.Load()
			logCase(t, "path "+p, fmt.Sprintf("%d, backend calls %d, GetBook id %q", code, calls, id))
			if calls > 0 && (strings.Contains(id, "/") || id == "" || id == "<none>") {
				t.Errorf("backend was asked for id %q, which the route's one-segment check did not see", id)
			}
			if calls == 0 && code == http.StatusOK {
				t.Errorf("200 without a backend call")
			}
		})
	}
}
