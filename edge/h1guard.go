package edge

import (
	"bytes"
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// HTTP/1.1 request smuggling guard.
//
// net/http follows RFC 9112 §6.3 for a request that carries both
// Content-Length and Transfer-Encoding: it takes the chunked framing,
// deletes Content-Length and keeps the connection, and the handler cannot
// see that both were sent. A front proxy that framed the same bytes by
// Content-Length would then disagree with the gateway about where the next
// request starts. The RFC lets a server treat such a message as an error;
// an edge must. h1Conn watches the bytes net/http reads from a plaintext
// shared-listener connection, holds each request's header block until it
// is complete, and refuses one that names both: net/http's read fails, it
// answers 400 and closes the connection, and nothing is forwarded.
//
// It tracks body framing (Content-Length and chunked, as net/http reads
// them) only to find where the next request's header block begins; it
// parses nothing else and copies body bytes straight through. An upgraded
// connection (WebSocket) is passed through untouched after its header
// block; an HTTP/2 prior-knowledge connection is handed, after its preface,
// to the rapid-reset and keepalive guard (h2guard.go), which net/http's
// HTTP/2 server lacks. The connection also keeps the listener's write
// timeout, armed lazily (see Write).
//
// TLS connections are not wrapped: net/http must see the *tls.Conn to
// negotiate HTTP/2, so on TLS listeners net/http's own behaviour holds.

// errSmuggling is the read error that makes net/http refuse a request
// carrying both Content-Length and Transfer-Encoding.
var errSmuggling = errors.New("gatehouse: request has both Content-Length and Transfer-Encoding (RFC 9112 §6.1: refused as request smuggling)")

// h1Listener wraps accepted connections in h1Conn.
type h1Listener struct {
	net.Listener
	maxHeader int                   // largest header block held; beyond it net/http answers 431
	onRefuse  func(net.Addr, error) // told of each refused request
	h2        *h2Guard              // the rapid-reset guard of HTTP/2 prior-knowledge connections; nil for none
	// writeTimeout closes a connection none of whose writes could make
	// progress for about this long (a client that stopped reading); 0
	// for none.
	writeTimeout time.Duration
}

// Accept implements net.Listener.
func (l *h1Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &h1Conn{Conn: c, maxHeader: l.maxHeader, onRefuse: l.onRefuse, h2: l.h2, writeTimeout: l.writeTimeout}, nil
}

// h1 parser states.
const (
	h1Header    = iota // holding a header block until its blank line
	h1Body             // passing `left` bytes of a Content-Length body
	h1ChunkSize        // reading a chunk-size line
	h1ChunkData        // passing `left` bytes of chunk data
	h1ChunkEnd         // reading the CRLF after chunk data
	h1Trailer          // holding nothing: reading trailer lines to the blank one
	h1Through          // no more tracking: HTTP/2, upgraded, or framing net/http refuses
)

// h1Conn is a connection whose reads are checked for request smuggling.
type h1Conn struct {
	net.Conn
	maxHeader int
	onRefuse  func(net.Addr, error)

	state int
	left  int64  // body or chunk bytes still to pass
	held  []byte // the header block so far, not yet released
	line  []byte // the chunk-size, chunk-end or trailer line so far (released)
	out   []byte // checked bytes not yet returned
	buf   []byte // read buffer
	err   error  // sticky refusal
	rerr  error  // a read error to return once out is drained
	first bool   // a request line has been seen

	// An HTTP/2 prior-knowledge connection is handed to the rapid-reset
	// guard (h2guard.go) once its preface shows, before net/http has
	// written anything; from then on reads and writes go through it.
	h2 *h2Guard
	g2 atomic.Pointer[guardConn]

	writeTimeout time.Duration
	writeDL      atomic.Int64 // the write deadline set, in Unix nanoseconds
}

// Write implements net.Conn. With a write timeout, the connection's write
// deadline is pushed forward lazily, at most four times per timeout, rather
// than set and cleared around every write as net/http's HTTP/2
// WriteByteTimeout does (two timer updates per frame, 4% of the shared
// listener's CPU): a write that blocks fails within the timeout, one that
// progresses never does.
func (c *h1Conn) Write(p []byte) (int, error) {
	if c.writeTimeout > 0 {
		now := time.Now().UnixNano()
		if c.writeDL.Load()-now < int64(c.writeTimeout)*3/4 {
			dl := now + int64(c.writeTimeout)
			_ = c.Conn.SetWriteDeadline(time.Unix(0, dl))
			c.writeDL.Store(dl)
		}
	}
	if g := c.g2.Load(); g != nil {
		return g.Write(p)
	}
	return c.Conn.Write(p)
}

// SetWriteDeadline implements net.Conn; the lazy write timeout re-arms
// after net/http clears or moves the deadline.
func (c *h1Conn) SetWriteDeadline(t time.Time) error {
	c.writeDL.Store(deadlineNanos(t))
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline implements net.Conn.
func (c *h1Conn) SetDeadline(t time.Time) error {
	c.writeDL.Store(deadlineNanos(t))
	return c.Conn.SetDeadline(t)
}

// deadlineNanos is t for writeDL: 0 (re-arm at the next write) for no
// deadline.
func deadlineNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// toHTTP2 stops HTTP/1.1 tracking at an HTTP/2 preface: what is held is
// released (and shown to the rapid-reset guard, if any, which takes the
// connection from here).
func (c *h1Conn) toHTTP2() {
	if c.h2 != nil {
		g := c.h2.wrap(c.Conn)
		g.scanRead(c.held) // the preface and perhaps the first frames: too early to trip
		c.g2.Store(g)
	}
	c.through()
}

// through stops tracking: what is held is released and the rest passes.
func (c *h1Conn) through() {
	c.state = h1Through
	c.out = append(c.out, c.held...)
	c.held, c.line = nil, nil
}

// CloseWrite lets net/http half-close, as it does on a *net.TCPConn.
func (c *h1Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Read implements net.Conn.
func (c *h1Conn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if c.err != nil {
			if len(p) == 1 {
				return c.drain()
			}
			return 0, c.err
		}
		if c.rerr != nil {
			err := c.rerr
			c.rerr = nil
			return 0, err
		}
		switch {
		case c.state == h1Through && len(c.held) == 0:
			if g := c.g2.Load(); g != nil {
				return g.Read(p)
			}
			return c.Conn.Read(p)
		case c.state == h1Body || c.state == h1ChunkData:
			// Body bytes go straight into p, no copy through out.
			if int64(len(p)) > c.left {
				p = p[:c.left]
			}
			n, err := c.Conn.Read(p)
			c.passed(int64(n))
			return n, err
		}
		if c.buf == nil {
			c.buf = make([]byte, 4096)
		}
		n, err := c.Conn.Read(c.buf)
		c.scan(c.buf[:n])
		if err != nil {
			// At the end of the stream whatever was held goes to net/http
			// with the error, as it would have without the guard. A
			// deadline (net/http aborting its background read, or a
			// timeout) ends nothing: tracking goes on.
			if c.err == nil && !isTimeout(err) { // h2csplit.go
				c.through()
			}
			c.rerr = err
		}
	}
}

// drain answers net/http's one-byte background read (which watches for a
// client hanging up while a handler runs) once a refusal is pending: it
// must not see the refusal, or net/http would cancel the request in
// flight, which the client sent before the refused one and is owed an
// answer. What follows a refused request is read and discarded until the
// peer closes or net/http aborts the read with a deadline.
func (c *h1Conn) drain() (int, error) {
	var scratch [512]byte
	for {
		if _, err := c.Conn.Read(scratch[:]); err != nil {
			return 0, err
		}
	}
}

// passed counts n bytes of a Content-Length body or of chunk data; at its
// end the next request's header block, or the CRLF after the chunk, follows.
func (c *h1Conn) passed(n int64) {
	c.left -= n
	if c.left > 0 {
		return
	}
	if c.state == h1Body {
		c.state = h1Header
	} else {
		c.state = h1ChunkEnd
	}
}

// scan runs the parser over b, moving checked bytes to out.
func (c *h1Conn) scan(b []byte) {
	for len(b) > 0 && c.err == nil {
		switch c.state {
		case h1Through:
			if g := c.g2.Load(); g != nil && g.scanRead(b) {
				// Tripped on bytes that came with the preface (500 streams
				// in the first read): GOAWAY, close, and net/http reads
				// the guard's error.
				g.trip(make([]byte, 512))
				c.err = g.readerErr
				return
			}
			c.out = append(c.out, b...)
			return
		case h1Body, h1ChunkData:
			n := int64(len(b))
			if n > c.left {
				n = c.left
			}
			c.out = append(c.out, b[:n]...)
			b = b[n:]
			c.passed(n)
		case h1Header:
			if len(c.held) == 0 {
				// net/http skips blank lines between requests.
				for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
					c.out = append(c.out, b[0])
					b = b[1:]
				}
				if len(b) == 0 {
					return
				}
			}
			i := headerEnd(c.held, b)
			if i < 0 {
				c.held = append(c.held, b...)
				if len(c.held) > c.maxHeader {
					c.through() // net/http answers 431
				} else if !c.first {
					c.checkPreface()
				}
				return
			}
			c.held = append(c.held, b[:i]...)
			b = b[i:]
			c.endHeader()
		case h1ChunkSize, h1ChunkEnd, h1Trailer:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				c.out = append(c.out, b...)
				c.line = append(c.line, b...)
				if len(c.line) > 4096 {
					c.through() // net/http refuses a line this long
				}
				return
			}
			c.out = append(c.out, b[:i+1]...)
			c.line = append(c.line, b[:i]...)
			b = b[i+1:]
			c.endLine()
		}
	}
}

// checkPreface passes an HTTP/2 prior-knowledge connection through as soon
// as its first line shows it.
func (c *h1Conn) checkPreface() {
	if i := bytes.IndexByte(c.held, '\n'); i >= 0 {
		c.first = true
		if isPreface(c.held) {
			c.toHTTP2()
		}
	}
}

// isPreface reports whether a request line is HTTP/2's prior-knowledge
// preface.
func isPreface(line []byte) bool { return bytes.HasPrefix(line, []byte("PRI * HTTP/2.0")) }

// headerEnd returns how many bytes of b complete the header block begun by
// held (through its blank line), or -1.
func headerEnd(held, b []byte) int {
	// A blank line is "\n\n" or "\n\r\n"; look across the seam.
	prev := held
	if len(prev) > 2 {
		prev = prev[len(prev)-2:]
	}
	for i := range b {
		if b[i] != '\n' {
			continue
		}
		var p1, p2 byte
		switch {
		case i >= 2:
			p1, p2 = b[i-1], b[i-2]
		case i == 1:
			p1 = b[0]
			if len(prev) > 0 {
				p2 = prev[len(prev)-1]
			}
		default:
			if len(prev) > 0 {
				p1 = prev[len(prev)-1]
			}
			if len(prev) > 1 {
				p2 = prev[len(prev)-2]
			}
		}
		if p1 == '\n' || (p1 == '\r' && p2 == '\n') {
			return i + 1
		}
	}
	return -1
}

// endHeader checks a complete header block, releases it, and sets up the
// body's framing as net/http will read it.
func (c *h1Conn) endHeader() {
	block := c.held
	c.first = true
	lines := bytes.Split(block, []byte("\n"))
	if isPreface(lines[0]) {
		c.toHTTP2()
		return
	}
	var cl, te, upgrade bool
	var length int64 = -1
	for _, l := range lines[1:] {
		l = bytes.TrimSuffix(l, []byte("\r"))
		if len(l) == 0 || l[0] == ' ' || l[0] == '\t' {
			continue // the end, or a continuation of the line before
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue // net/http refuses the block
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			cl = true
			if n, ok := parseLength(value); ok && (length < 0 || length == n) {
				length = n
			} else {
				length = -2 // malformed or conflicting: net/http refuses
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			te = true
		case bytes.EqualFold(name, []byte("Upgrade")):
			upgrade = true
		}
	}
	if cl && te {
		// The request line goes through, the headers do not: net/http
		// swallows a read error before a request's first bytes (it may be
		// a client leaving an idle connection) but answers one in the
		// middle of a request with 400 and closes.
		c.out = append(c.out, block[:bytes.IndexByte(block, '\n')+1]...)
		c.err = errSmuggling
		c.held = c.held[:0]
		if c.onRefuse != nil {
			c.onRefuse(c.RemoteAddr(), errSmuggling)
		}
		return
	}
	switch {
	case upgrade:
		c.through() // a WebSocket (or h2c upgrade) leaves HTTP/1.1
		return
	}
	c.out = append(c.out, block...)
	c.held = c.held[:0]
	switch {
	case te:
		// net/http takes only "chunked" and refuses anything else (501,
		// connection closed); either way chunked framing is what follows.
		c.state = h1ChunkSize
	case length == -2:
		c.state = h1Through // net/http answers 400 and closes
	case length > 0:
		c.state, c.left = h1Body, length
	default:
		c.state = h1Header
	}
}

// endLine handles a complete chunk-size, chunk-end or trailer line (held,
// without its LF); its bytes are already in out.
func (c *h1Conn) endLine() {
	line := bytes.TrimSuffix(c.line, []byte("\r"))
	c.line = c.line[:0]
	switch c.state {
	case h1ChunkSize:
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, ok := parseHex(bytes.TrimRight(line, " \t"))
		switch {
		case !ok:
			c.through() // net/http refuses the body
		case n == 0:
			c.state = h1Trailer
		default:
			c.state, c.left = h1ChunkData, n
		}
	case h1ChunkEnd:
		if len(line) != 0 {
			c.through() // net/http refuses the body
			return
		}
		c.state = h1ChunkSize
	case h1Trailer:
		if len(line) == 0 {
			c.state = h1Header
		}
	}
}

// parseLength parses a Content-Length value as net/http does: digits only.
func parseLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		n = n*10 + int64(d-'0')
	}
	return n, true
}

// parseHex parses a chunk size.
func parseHex(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var n int64
	for _, d := range b {
		switch {
		case '0' <= d && d <= '9':
			d -= '0'
		case 'a' <= d && d <= 'f':
			d -= 'a' - 10
		case 'A' <= d && d <= 'F':
			d -= 'A' - 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, n >= 0
}
