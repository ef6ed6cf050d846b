package edge

// Native gRPC on shared listeners (issue 10).
//
// A shared listener serves gRPC through grpc-go's ServeHTTP under net/http,
// which costs about twice the CPU per call of grpc-go's own transport and
// flushes every message of a server stream on its own. Yet an HTTP/2
// connection almost always carries one kind of traffic: a gRPC client's
// connection carries gRPC only. So the split listener looks at each new
// connection before either server gets it:
//
//   - TLS listeners: the split does the handshake. HTTP/1.1 (ALPN
//     http/1.1 or none) goes to net/http as the *tls.Conn, unread, so that
//     r.TLS is what net/http makes of it.
//   - Plaintext HTTP/1.1 (anything that is not the HTTP/2 preface) goes to
//     net/http at once, its first bytes replayed.
//   - HTTP/2 (prior knowledge, or ALPN h2): the split answers the preface
//     with an empty SETTINGS frame (a gRPC client waits for the server's
//     preface before its first call), reads the client's frames up to its
//     first request (HEADERS and CONTINUATION, decoded with a fresh HPACK
//     decoder) and picks the server from its content-type:
//     application/grpc (not gRPC-Web) goes to the listener's grpc.Server on
//     its native transport (TLS connections with handshakenCreds, which
//     give calls their peer's TLSInfo); anything else to net/http's HTTP/2
//     server: net/http itself for plaintext, x/net's (the same code,
//     unbundled) for TLS, since net/http must own a *tls.Conn it has not
//     read from. A connection that sends no request within the read-header
//     timeout goes to the HTTP server, which serves every kind of request
//     (a browser's preconnected connection may carry anything later).
//
// The chosen server reads the connection from its very first byte (what
// the split read is replayed) and sends its own SETTINGS, which HTTP/2
// allows at any time. The client acknowledges both SETTINGS frames; the
// split drops the first acknowledgement, the one for its own frame, so that
// the server sees exactly one per SETTINGS it sent (net/http closes the
// connection on an acknowledgement it did not ask for).
//
// Every HTTP/2 connection the split hands on carries the rapid-reset guard
// (h2guard.go); those left to an HTTP server also its keepalive policy.
//
// The price of the choice: a later request on a native connection that is
// not gRPC is refused by grpc-go with HTTP 415. The listener key
// grpc_connections: http turns the split off, for a front proxy or load
// balancer that mixes REST and gRPC on one pooled connection.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/credentials"
)

// h2cEmptySettings is an empty SETTINGS frame: the server preface that
// lets a client send its first request.
var h2cEmptySettings = []byte{0, 0, 0, 0x4, 0, 0, 0, 0, 0}

// h2cSniffExtra bounds what the split holds beyond the header block
// limit (SETTINGS, WINDOW_UPDATE, PING frames before the first request);
// past it the connection goes to the HTTP server undecided.
const h2cSniffExtra = 16 << 10

// h2cSplit is a shared listener's front (plaintext or TLS): Accept yields
// the connections for net/http; native yields those for the grpc.Server;
// on TLS listeners it serves the HTTP/2 connections that are neither's
// itself (serveH2).
type h2cSplit struct {
	inner     net.Listener
	timeout   time.Duration // for the client to send its first request
	maxHeader uint32        // header list size at most decoded
	// guard wraps native connections (the rapid-reset guard); nil for none.
	guard *h2Guard

	http   chan net.Conn
	native *chanListener
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup // the accept loop and the connections being looked at

	pending connSet // connections being looked at

	// TLS listeners only (nil tls: plaintext).
	tls *tls.Config // the split does the handshake
	// h2 serves the HTTP/2 connections that are not gRPC's, as net/http
	// would (net/http needs the *tls.Conn itself, which has been read
	// from), with h1 as its base config and handler. h2guard is the
	// rapid-reset guard on them.
	h2      *http2.Server
	h1      *http.Server
	h2guard *h2Guard
	// onTLSError is told of failed handshakes.
	onTLSError func(net.Addr, error)
	served     sync.WaitGroup // connections h2 is serving
	servedSet  connSet        // the same, to close at the end
}

// newH2CSplit returns a split of inner, not yet accepting (start).
func newH2CSplit(inner net.Listener, timeout time.Duration, maxHeader int, guard *h2Guard) *h2cSplit {
	s := &h2cSplit{
		inner:     inner,
		timeout:   timeout,
		maxHeader: uint32(maxHeader),
		guard:     guard,
		http:      make(chan net.Conn),
		done:      make(chan struct{}),
	}
	s.native = &chanListener{conns: make(chan net.Conn), done: s.done, addr: inner.Addr(), close: s.Close}
	return s
}

// start starts accepting, once the split's fields are set.
func (s *h2cSplit) start() {
	s.wg.Add(1)
	go s.acceptLoop()
}

// Accept implements net.Listener: the next connection for net/http.
func (s *h2cSplit) Accept() (net.Conn, error) {
	select {
	case c := <-s.http:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

// Addr implements net.Listener.
func (s *h2cSplit) Addr() net.Addr { return s.inner.Addr() }

// Close implements net.Listener: it stops accepting, closes the
// connections not yet handed to a server and waits for its goroutines.
// Connections already handed over belong to their server.
func (s *h2cSplit) Close() error {
	err := s.shut()
	s.wg.Wait()
	return err
}

// shut stops accepting and closes the connections being looked at, once.
func (s *h2cSplit) shut() error {
	err := net.ErrClosed
	s.once.Do(func() {
		close(s.done)
		err = s.inner.Close()
		s.pending.closeAll()
	})
	return err
}

func (s *h2cSplit) acceptLoop() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.inner.Accept()
		if err != nil {
			if isTimeout(err) { // as net/http does: back off, go on
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
					continue
				case <-s.done:
					return
				}
			}
			// The listener is closed (or broken): both servers see it.
			_ = s.shut()
			return
		}
		delay = 0
		if !s.pending.add(c) { // the split is closing
			_ = c.Close()
			return
		}
		s.wg.Add(1)
		go s.sort(c)
	}
}

// sort looks at c and hands it to one of the servers.
func (s *h2cSplit) sort(c net.Conn) {
	defer s.wg.Done()
	conn := net.Conn(c)
	var state *tls.ConnectionState
	if s.tls != nil {
		tc, err := s.handshake(c)
		if err != nil {
			s.forget(c)
			_ = c.Close()
			if s.onTLSError != nil {
				s.onTLSError(c.RemoteAddr(), err)
			}
			return
		}
		st := tc.ConnectionState()
		if st.NegotiatedProtocol != http2.NextProtoTLS {
			// HTTP/1.1 over TLS: net/http takes the *tls.Conn, unread.
			s.forget(c)
			s.handOff(s.http, tc)
			return
		}
		conn, state = tc, &st
	}
	native, rc, err := s.look(conn)
	s.forget(c)
	if err != nil {
		_ = c.Close()
		return
	}
	var out net.Conn = rc
	switch {
	case native:
		if s.guard != nil {
			out = s.guard.wrap(rc)
		}
		if state != nil {
			out = &tlsConn{Conn: out, state: *state}
		}
		s.handOff(s.native.conns, out)
	case state != nil:
		if s.h2guard != nil {
			out = s.h2guard.wrap(rc)
		}
		s.serveH2(&tlsConn{Conn: out, state: *state})
	default:
		s.handOff(s.http, out)
	}
}

// forget takes c off the connections being looked at.
func (s *h2cSplit) forget(c net.Conn) { s.pending.remove(c) }

// handOff gives c to the server that accepts from ch, or closes it if the
// split closes first.
func (s *h2cSplit) handOff(ch chan net.Conn, c net.Conn) {
	select {
	case ch <- c:
	case <-s.done:
		_ = c.Close()
	}
}

// handshake does the TLS handshake of c within the timeout.
func (s *h2cSplit) handshake(c net.Conn) (*tls.Conn, error) {
	tc := tls.Server(c, s.tls)
	if s.timeout > 0 {
		_ = c.SetDeadline(time.Now().Add(s.timeout))
		defer func() { _ = c.SetDeadline(time.Time{}) }()
	}
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc, nil
}

// serveH2 serves c, a TLS HTTP/2 connection whose first request is not
// gRPC, with x/net's HTTP/2 server in a goroutine of its own (net/http's
// Shutdown sends it GOAWAY; waitServed waits for it).
func (s *h2cSplit) serveH2(c net.Conn) {
	select {
	case <-s.done:
		_ = c.Close()
		return
	default:
	}
	if !s.servedSet.add(c) {
		_ = c.Close()
		return
	}
	s.served.Add(1)
	go func() {
		defer s.served.Done()
		// The base context net/http gives its own connections' requests.
		ctx := context.WithValue(context.Background(), http.ServerContextKey, s.h1)
		ctx = context.WithValue(ctx, http.LocalAddrContextKey, c.LocalAddr())
		s.h2.ServeConn(c, &http2.ServeConnOpts{Context: ctx, Handler: s.h1.Handler, BaseConfig: s.h1})
		s.servedSet.remove(c)
		_ = c.Close()
	}()
}

// waitServed waits until the HTTP/2 connections of serveH2 have ended (they
// got GOAWAY from net/http's Shutdown), or ctx ends: then it closes them.
func (s *h2cSplit) waitServed(ctx context.Context) {
	waitOrForce(ctx, s.served.Wait, s.closeServed)
}

// closeServed closes the HTTP/2 connections of serveH2 at once.
func (s *h2cSplit) closeServed() { s.servedSet.closeAll() }

// connSet is a set of connections to close all at once; once it has been,
// add refuses.
type connSet struct {
	mu     sync.Mutex
	m      map[net.Conn]struct{}
	closed bool
}

// add puts c in the set and reports whether it did (not after closeAll).
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.m == nil {
		s.m = map[net.Conn]struct{}{}
	}
	s.m[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

// closeAll closes every connection in the set; later adds are refused.
func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.m {
		_ = c.Close()
	}
}

// waitOrForce runs wait; if ctx ends first, it calls force and waits on.
func waitOrForce(ctx context.Context, wait, force func()) {
	done := make(chan struct{})
	go func() {
		wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		force()
		<-done
	}
}

// tlsConn is a TLS connection the split has read from (its reads replay
// what was read): ConnectionState reports its handshake, as *tls.Conn's
// does, so that x/net's HTTP/2 server sets r.TLS and the native server's
// credentials (handshakenCreds) give the call its peer's TLSInfo.
type tlsConn struct {
	net.Conn
	state tls.ConnectionState
}

// ConnectionState returns the TLS handshake's state.
func (c *tlsConn) ConnectionState() tls.ConnectionState { return c.state }

// handshakenCreds are the credentials of a shared listener's grpc.Server:
// connections arrive with their TLS handshake done (tlsConn) or in
// plaintext (h2c, and the in-process connection of REST), and keep it.
type handshakenCreds struct{}

func (handshakenCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if tc, ok := c.(*tlsConn); ok {
		return c, credentials.TLSInfo{
			State:          tc.state,
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		}, nil
	}
	return c, nil, nil
}

func (handshakenCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("gatehouse: server-only credentials")
}

func (handshakenCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (handshakenCreds) Clone() credentials.TransportCredentials { return handshakenCreds{} }

func (handshakenCreds) OverrideServerName(string) error { return nil }

// look reads the start of c: whether it goes native, and the connection
// to hand over (replaying what was read). An error means c is to be
// closed (nothing came within the timeout, or the read failed).
func (s *h2cSplit) look(c net.Conn) (native bool, rc *replayConn, err error) {
	if s.timeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(s.timeout))
		defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	}
	// The preface, or the first bytes that differ from it.
	var head [len(http2.ClientPreface)]byte
	n := 0
	for n < len(head) {
		k, err := c.Read(head[n:])
		n += k
		if !strings.HasPrefix(http2.ClientPreface, string(head[:n])) {
			return false, &replayConn{Conn: c, prefix: bytes.Clone(head[:n])}, nil // HTTP/1.1
		}
		if err != nil {
			if n > 0 && isTimeout(err) {
				// Part of a preface, then nothing: net/http will say so.
				return false, &replayConn{Conn: c, prefix: bytes.Clone(head[:n])}, nil
			}
			return false, nil, err
		}
	}
	// HTTP/2. A gRPC client waits for the server's preface before its
	// first call.
	if s.timeout > 0 {
		_ = c.SetWriteDeadline(time.Now().Add(s.timeout))
	}
	if _, err := c.Write(h2cEmptySettings); err != nil {
		return false, nil, err
	}
	_ = c.SetWriteDeadline(time.Time{})

	rec := &recorder{r: bufio.NewReaderSize(c, 4096), max: int(s.maxHeader) + h2cSniffExtra}
	fr := http2.NewFramer(nil, rec)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = s.maxHeader
	ackAt := -1 // where the acknowledgement of our SETTINGS is, in rec.buf
	for {
		at := len(rec.buf)
		f, err := fr.ReadFrame()
		if err != nil {
			switch {
			case rec.full:
				// Too much before a request: net/http decides.
			case rec.err != nil && isTimeout(rec.err):
				// No request yet (a preconnect, a pool's spare, an idle
				// channel): the HTTP server takes it, which serves every
				// kind of request that may come.
			case rec.err != nil:
				return false, nil, rec.err // the client left
			}
			break // or the framer refused a frame: net/http answers it
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && sf.IsAck() && ackAt < 0 {
			ackAt = at
			continue
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok {
			native = isGRPCContentType(headerValue(mh, "content-type"))
			break
		}
		if f.Header().StreamID != 0 {
			break // a stream frame before any HEADERS: net/http answers it
		}
	}
	// Replay: the preface, the frames read (less our acknowledgement),
	// then what bufio read beyond them.
	prefix := make([]byte, 0, len(http2.ClientPreface)+len(rec.buf)+rec.r.Buffered())
	prefix = append(prefix, http2.ClientPreface...)
	if ackAt >= 0 && ackAt+h2HeaderLen <= len(rec.buf) {
		prefix = append(prefix, rec.buf[:ackAt]...)
		prefix = append(prefix, rec.buf[ackAt+h2HeaderLen:]...)
	} else {
		prefix = append(prefix, rec.buf...)
	}
	rc = &replayConn{Conn: c, prefix: prefix}
	if k := rec.r.Buffered(); k > 0 {
		b, _ := rec.r.Peek(k)
		rc.rest = bytes.Clone(b)
	}
	// Frame-aligned from here unless the framer stopped mid-frame (an
	// error): then the acknowledgement is not looked for.
	rc.dropAck = ackAt < 0 && rec.aligned()
	return native, rc, nil
}

// headerValue is the first value of a regular header field of mh.
func headerValue(mh *http2.MetaHeadersFrame, name string) string {
	for _, f := range mh.RegularFields() {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// isGRPCContentType reports whether a content type is gRPC's (not
// gRPC-Web's): the split's test, and isGRPC's for net/http's requests.
func isGRPCContentType(ct string) bool {
	return strings.HasPrefix(ct, "application/grpc") && !strings.HasPrefix(ct, "application/grpc-web")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// recorder keeps every byte the framer reads, up to max (then reads fail).
type recorder struct {
	r    *bufio.Reader
	buf  []byte
	max  int
	full bool  // max was reached
	err  error // the connection's read error, if any
}

// errSniffFull is the recorder's error past its max.
var errSniffFull = errors.New("gatehouse: too much before the first request")

func (r *recorder) Read(p []byte) (int, error) {
	if len(r.buf)+len(p) > r.max {
		r.full = true
		return 0, errSniffFull
	}
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	if err != nil {
		r.err = err
	}
	return n, err
}

// aligned reports whether the bytes recorded end at a frame boundary.
func (r *recorder) aligned() bool {
	var cur frameCursor
	b := r.buf
	for {
		_, rest, ok := cur.next(b)
		if !ok {
			return cur.atBoundary()
		}
		b = rest
	}
}

// replayConn is a connection whose first reads return bytes already read
// from it; while dropAck is set, it drops the client's first SETTINGS
// acknowledgement (of the split's SETTINGS) from what follows.
type replayConn struct {
	net.Conn
	prefix  []byte // returned first, as they are
	rest    []byte // read ahead of prefix, at a frame boundary; filtered
	dropAck bool
	cur     frameCursor
	hdr     []byte // a frame header gathered while looking for the ack
}

// Read implements net.Conn.
func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil
		}
		return n, nil
	}
	if !c.dropAck {
		if len(c.rest) > 0 {
			n := copy(p, c.rest)
			c.rest = c.rest[n:]
			return n, nil
		}
		return c.Conn.Read(p)
	}
	return c.readFiltered(p)
}

// readFiltered reads while the acknowledgement is still to be dropped:
// frame by frame, holding back a frame header until it is whole.
func (c *replayConn) readFiltered(p []byte) (int, error) {
	for {
		if c.cur.skip > 0 {
			// Payload of a frame that passes.
			src := c.rest
			if len(src) == 0 {
				k := min(len(p), int(c.cur.skip))
				n, err := c.Conn.Read(p[:k])
				c.cur.skip -= uint32(n)
				return n, err
			}
			k := min(len(p), int(c.cur.skip), len(src))
			copy(p, src[:k])
			c.rest = src[k:]
			c.cur.skip -= uint32(k)
			return k, nil
		}
		// At a frame boundary: gather a header.
		for len(c.rest) < h2HeaderLen {
			var b [512]byte
			n, err := c.Conn.Read(b[:])
			c.rest = append(c.rest, b[:n]...)
			if err != nil && len(c.rest) < h2HeaderLen {
				if len(c.rest) == 0 {
					return 0, err
				}
				// Pass what there is; the next read returns the error.
				n := copy(p, c.rest)
				c.rest = c.rest[n:]
				c.dropAck = false
				return n, nil
			}
		}
		h := c.rest[:h2HeaderLen]
		length := uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2])
		if h[3] == 0x4 && h[4]&h2FlagAck != 0 && length == 0 {
			c.rest = c.rest[h2HeaderLen:]
			c.dropAck = false
			if len(c.rest) == 0 {
				c.rest = nil
			}
			return c.Read(p)
		}
		n := copy(p, h)
		if n < h2HeaderLen {
			// p is smaller than a frame header: pass it in pieces; the
			// rest of the header is still in c.rest.
			c.rest = c.rest[n:]
			c.cur.skip = uint32(h2HeaderLen-n) + length
			return n, nil
		}
		c.rest = c.rest[h2HeaderLen:]
		c.cur.skip = length
		return n, nil
	}
}

// CloseWrite lets a server half-close, as on a *net.TCPConn.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// chanListener is a net.Listener fed by a channel: the native side of a
// split listener.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	addr  net.Addr
	close func() error
}

// Accept implements net.Listener.
func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener; it closes the whole split listener.
func (l *chanListener) Close() error { return l.close() }

// Addr implements net.Listener.
func (l *chanListener) Addr() net.Addr { return l.addr }
