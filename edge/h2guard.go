package edge

// The HTTP/2 rapid-reset guard of native grpc listeners (issue 11).
//
// A rapid-reset client opens streams and resets them at once, thousands in
// a row. grpc-go caps the handlers running at once (max_concurrent_streams)
// but keeps the connection and never says GOAWAY, so that one connection
// can make the gateway decode headers and start and cancel calls as fast
// as it can send them. net/http (shared listeners) has its own defence;
// this guard is the native listeners' one, after Envoy's: a connection on
// which the client resets most of the streams it opens, prematurely, is
// sent GOAWAY ENHANCE_YOUR_CALM and closed.
//
// The guard wraps the connection grpc-go reads and writes (after the TLS
// handshake, through transport credentials: it sees plaintext HTTP/2 on
// TLS and plaintext listeners alike) and follows the frames both ways from
// their 9-byte headers alone: payloads are skipped, never copied or read.
//
// The heuristic (thresholds in newH2Guard):
//
//   - A stream is opened by a client HEADERS frame with an odd stream id
//     higher than any before.
//   - A reset is premature when the client sends RST_STREAM for a stream it
//     opened less than about rapidResetLifetime (1 s, Envoy's minimum stream
//     lifetime) ago, and the server has not ended the stream (sent
//     END_STREAM on it; a reset after that is a client closing its side of
//     a finished call, as grpc-go clients do). "About": opening times are
//     kept in eight slots of lifetime/8, so a stream opened between 7/8 and
//     8/8 of the lifetime ago may be taken as old. The per-stream "server
//     ended it" marks live in a small table indexed by stream id; a slot
//     reused by a later stream only makes a reset count as premature.
//   - The guard trips when the connection has opened at least
//     rapidResetMinStreams (500, Envoy's default) streams and more than half
//     of them were reset prematurely. Both counts are halved whenever the
//     opened count reaches twice the minimum, so that they cover about the
//     last 500 to 1,000 streams: a long-lived connection cannot bank good
//     streams to spend on an attack later (after 100,000 good streams, a
//     rapid reset trips it at the 501st reset), and old resets are
//     forgotten likewise.
//
// A legitimate client that cancels some of its calls (a deadline, a user
// who navigates away) stays far below half; a client that cancels nearly
// every call within a second of making it, for hundreds of calls in a row,
// is closed, which Envoy does too. To stay under the guard an attacker must
// let its streams live a second (then max_concurrent_streams bounds it to
// that many per second) or let as many calls finish as it resets. Streams
// the server refused (RST_STREAM REFUSED_STREAM past the stream cap) are
// not "ended": their resets count. The cost: a few nanoseconds per frame
// header each way, a clock read per read that carries HEADERS or
// RST_STREAM, no allocation; about 1.3 KiB per connection.
//
// When it trips, the guard sends GOAWAY (last stream id the highest the
// client opened, ENHANCE_YOUR_CALM, debug data "rapid reset") at a frame
// boundary of what grpc-go writes (writes hold a mutex, and the guard
// knows where each outgoing frame ends; if grpc-go's last write ended
// inside a frame, the GOAWAY follows the end of that frame in its next
// write), half-closes the connection, discards what the client still
// sends for at most rapidResetGoAwayTimeout (so that it can read the
// GOAWAY rather than a TCP reset), and closes it. grpc-go's read then
// fails and it ends the connection's calls; its writes after the GOAWAY
// are dropped.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gatehouse-dev/gatehouse/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
)

const (
	// rapidResetMinStreams is how many streams a connection must have
	// opened before the guard can trip.
	rapidResetMinStreams = 500
	// rapidResetLifetime is the age under which a client reset of a stream
	// the server has not ended is premature.
	rapidResetLifetime = time.Second
	// rapidResetGoAwayTimeout bounds the wait for a frame boundary to put
	// the GOAWAY at, its write, and the time the client is given to read it
	// before the connection is closed.
	rapidResetGoAwayTimeout = time.Second
	// rapidResetDebug is the GOAWAY's debug data.
	rapidResetDebug = "rapid reset"
	// tooManyPingsDebug is the GOAWAY's debug data for a ping flood, as
	// grpc-go sends it.
	tooManyPingsDebug = "too_many_pings"
	// maxPingStrikes is how many pings too soon are forgiven (grpc-go's).
	maxPingStrikes = 2
)

// HTTP/2 framing (RFC 9113 §4.1, §6).
const (
	h2PrefaceLen         = 24 // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	h2HeaderLen          = 9
	h2FrameData          = 0x0
	h2FrameHeaders       = 0x1
	h2FrameRSTStream     = 0x3
	h2FrameGoAway        = 0x7
	h2FlagEndStream      = 0x1
	h2FramePing          = 0x6
	h2FlagAck            = 0x1
	h2ErrEnhanceYourCalm = 0xb
)

// errRapidReset is what grpc-go reads from a connection the guard closed.
var errRapidReset = errors.New("gatehouse: HTTP/2 rapid reset: GOAWAY ENHANCE_YOUR_CALM sent, connection closed")

// errTooManyPings is what the server reads from a connection closed for
// pinging too often.
var errTooManyPings = errors.New("gatehouse: HTTP/2 client pinged too often: GOAWAY ENHANCE_YOUR_CALM \"too_many_pings\" sent, connection closed")

// h2Guard is the rapid-reset guard of one listener: its thresholds and
// what to do when a connection trips it.
type h2Guard struct {
	minStreams    int           // streams opened before the guard can trip
	lifetime      time.Duration // a reset of a younger stream is premature
	goAwayTimeout time.Duration
	now           func() time.Time
	// onTrip is called once for each connection the guard closes, with
	// the (halved) counts that tripped it; nil for none.
	onTrip func(peer net.Addr, streams, resets int)
	// minPing, when not 0, is grpc-go's keepalive enforcement for
	// listeners whose HTTP/2 server has none (net/http): a client PING
	// sooner than minPing after the previous one, with no HEADERS or DATA
	// from the server in between, is a strike; after maxPingStrikes the
	// connection gets GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
	minPing time.Duration
	// onPings is called for each connection closed for too many pings.
	onPings func(peer net.Addr)
}

// newH2Guard returns a guard with the default thresholds.
func newH2Guard() *h2Guard {
	return &h2Guard{
		minStreams:    rapidResetMinStreams,
		lifetime:      rapidResetLifetime,
		goAwayTimeout: rapidResetGoAwayTimeout,
		now:           time.Now,
	}
}

// guardSlots is the number of slots that keep stream opening times, each
// lifetime/guardSlots long.
const guardSlots = 8

// guardEnded is the size of the table of streams the server ended (a
// power of two).
const guardEnded = 256

// wrap puts the guard on a server connection that has done its handshake.
func (g *h2Guard) wrap(c net.Conn) *guardConn {
	return &guardConn{
		Conn:    c,
		g:       g,
		slot:    max(g.lifetime/guardSlots, 1),
		start:   g.now(),
		preface: h2PrefaceLen,
	}
}

// guardConn is a server HTTP/2 connection under the guard.
type guardConn struct {
	net.Conn
	g     *h2Guard
	slot  time.Duration
	start time.Time

	// Read side: only the goroutine that reads (grpc-go's reader) uses it.
	rd        frameCursor
	preface   int    // client preface bytes still to pass
	maxID     uint32 // highest stream id the client opened
	streams   int    // streams opened (halved, see the file comment)
	resets    int    // premature resets among them
	slots     [guardSlots]openSlot
	readerErr error // once tripped

	lastPing    time.Time   // the client's last PING (not ACK)
	pingStrikes int         // pings too soon since the server last sent HEADERS or DATA
	pingReset   atomic.Bool // the server sent HEADERS or DATA: strikes forgiven
	debug       string      // the GOAWAY's debug data once tripped

	// ended holds, at (id/2) % guardEnded, the id of a client stream the
	// server ended; written by the writer, read by the reader.
	ended [guardEnded]atomic.Uint32

	// Write side, under wmu, held across each Write so that a GOAWAY never
	// lands inside a frame.
	wmu        sync.Mutex
	wr         frameCursor
	wbroken    bool          // a write failed: the boundary is unknown
	pending    bool          // a GOAWAY waits for the end of the current frame
	goneAway   bool          // the GOAWAY is out (or the attempt failed): writes are dropped
	goAwaySent bool          // it was written
	goAwayLast uint32        // its last stream id
	goAwayDone chan struct{} // closed once the GOAWAY is out, when pending
}

// openSlot is the first stream the client opened in one slot of time.
type openSlot struct {
	tick  int64 // slot number since the connection started, plus guardSlots; 0: empty
	first uint32
}

var _ net.Conn = (*guardConn)(nil)

// Read reads from the connection and follows the client's frames. When the
// guard trips it sends the GOAWAY and closes the connection before it
// returns errRapidReset (whatever the read brought is dropped).
func (c *guardConn) Read(p []byte) (int, error) {
	if c.readerErr != nil {
		return 0, c.readerErr
	}
	n, err := c.Conn.Read(p)
	if n > 0 && c.scanRead(p[:n]) {
		c.trip(p)
		return 0, c.readerErr
	}
	return n, err
}

// scanRead follows the frame headers in p, the next bytes the client sent,
// and reports whether the guard trips.
func (c *guardConn) scanRead(p []byte) bool {
	if c.preface > 0 {
		k := min(len(p), c.preface)
		c.preface -= k
		p = p[k:]
	}
	// Read once per call, when a frame needs them: the clock's slot, and
	// the lowest stream id opened within the lifetime (noStreams: none).
	var tick int64
	var since uint32 // 0: not known yet
	for {
		h, rest, ok := c.rd.next(p)
		if !ok {
			return false
		}
		p = rest
		switch h.typ {
		case h2FrameHeaders:
			if h.id&1 == 1 && h.id > c.maxID {
				if tick == 0 {
					tick = c.tick()
				}
				if c.opened(h.id, tick) {
					since = 0 // it may be the oldest slot now
				}
			}
		case h2FramePing:
			if c.g.minPing > 0 && h.flags&h2FlagAck == 0 && c.ping() {
				return true
			}
		case h2FrameRSTStream:
			if h.id&1 == 1 && h.id <= c.maxID {
				if tick == 0 {
					tick = c.tick()
				}
				if since == 0 {
					since = c.openedSince(tick)
				}
				if c.reset(h.id, since) {
					return true
				}
			}
		}
	}
}

// ping counts a client PING against the keepalive policy and reports
// whether the connection has had too many.
func (c *guardConn) ping() bool {
	now := c.g.now()
	if c.pingReset.Swap(false) {
		c.pingStrikes = 0
	} else if !c.lastPing.IsZero() && now.Sub(c.lastPing) < c.g.minPing {
		c.pingStrikes++
	}
	c.lastPing = now
	if c.pingStrikes > maxPingStrikes {
		c.debug = tooManyPingsDebug
		return true
	}
	return false
}

func (c *guardConn) tick() int64 {
	return int64(c.g.now().Sub(c.start)/c.slot) + guardSlots
}

// opened counts stream id, new, opened in slot tick, and reports whether
// it is the first of the slot.
func (c *guardConn) opened(id uint32, tick int64) (first bool) {
	c.maxID = id
	if s := &c.slots[tick%guardSlots]; s.tick != tick {
		*s = openSlot{tick: tick, first: id}
		first = true
	}
	c.streams++
	if c.streams >= 2*c.g.minStreams {
		c.streams /= 2
		c.resets /= 2
	}
	return first
}

// noStreams is openedSince when nothing was opened within the lifetime.
const noStreams = ^uint32(0)

// openedSince returns the lowest stream id opened within the lifetime, in
// slot tick: the first of the oldest slot still within it (ids only grow).
func (c *guardConn) openedSince(tick int64) uint32 {
	for k := tick - guardSlots + 1; k <= tick; k++ {
		if s := &c.slots[k%guardSlots]; s.tick == k {
			return s.first
		}
	}
	return noStreams
}

// reset counts a client reset of stream id, at most c.maxID; streams from
// since on were opened within the lifetime. It reports whether the guard
// trips.
func (c *guardConn) reset(id, since uint32) bool {
	if id < since {
		return false // opened longer ago than the lifetime
	}
	if c.ended[(id>>1)%guardEnded].Load() == id {
		return false // the server had ended it
	}
	c.resets++
	return c.streams >= c.g.minStreams && 2*c.resets > c.streams
}

// trip sends the GOAWAY, lets the client read it and closes the
// connection; p is the reader's buffer, reused to discard input.
func (c *guardConn) trip(p []byte) {
	c.readerErr = errRapidReset
	switch {
	case c.debug == tooManyPingsDebug:
		c.readerErr = errTooManyPings
		if c.g.onPings != nil {
			c.g.onPings(c.RemoteAddr())
		}
	default:
		c.debug = rapidResetDebug
		if c.g.onTrip != nil {
			c.g.onTrip(c.RemoteAddr(), c.streams, c.resets)
		}
	}
	// A write blocked on a client that does not read holds wmu; this
	// bounds it, and the GOAWAY's own write.
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.g.goAwayTimeout))
	c.wmu.Lock()
	c.goAwayLast = c.maxID
	switch {
	case c.wbroken:
		c.goneAway = true
	case c.wr.atBoundary():
		c.goAwayLocked()
	default:
		done := make(chan struct{})
		c.pending, c.goAwayDone = true, done
		c.wmu.Unlock()
		t := time.NewTimer(c.g.goAwayTimeout)
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
		c.wmu.Lock()
		c.goneAway = true // if it never came: no more writes either
	}
	sent := c.goAwaySent
	c.wmu.Unlock()
	if sent {
		// FIN after the GOAWAY, then read until the client closes (or the
		// timeout), so that closing with unread input does not reset the
		// connection under a GOAWAY the client has yet to read.
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.g.goAwayTimeout))
		for {
			if _, err := c.Conn.Read(p); err != nil {
				break
			}
		}
	}
	_ = c.Conn.Close()
}

// goAwayLocked writes the GOAWAY; wmu is held and the writer is at a frame
// boundary.
func (c *guardConn) goAwayLocked() {
	var buf [h2HeaderLen + 8 + len(tooManyPingsDebug)]byte
	f := buf[:h2HeaderLen+8+len(c.debug)]
	l := len(f) - h2HeaderLen
	f[0], f[1], f[2] = byte(l>>16), byte(l>>8), byte(l)
	f[3] = h2FrameGoAway // flags 0, stream 0
	binary.BigEndian.PutUint32(f[9:], c.goAwayLast&0x7fffffff)
	binary.BigEndian.PutUint32(f[13:], h2ErrEnhanceYourCalm)
	copy(f[17:], c.debug)
	if _, err := c.Conn.Write(f); err != nil {
		c.wbroken = true
	} else {
		c.goAwaySent = true
	}
	c.pending, c.goneAway = false, true
	if c.goAwayDone != nil {
		close(c.goAwayDone)
		c.goAwayDone = nil
	}
}

// Write writes p, a piece of grpc-go's frames, and follows their headers.
// Once the GOAWAY is out, writes are dropped (and reported written): the
// connection is closing, and grpc-go learns it from its next read.
func (c *guardConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.goneAway {
		return len(p), nil
	}
	if c.pending && !c.wbroken {
		if k := c.wr.toBoundary(p); k >= 0 {
			// The rest of the current frame, then the GOAWAY; the rest of
			// p is dropped.
			if k > 0 {
				c.scanWrite(p[:k])
				if n, err := c.Conn.Write(p[:k]); err != nil {
					c.wbroken = true
					return n, err
				}
			}
			c.goAwayLocked()
			return len(p), nil
		}
	}
	// Marks go in before the bytes leave, so that a client reset answering
	// them never finds its stream unmarked.
	c.scanWrite(p)
	n, err := c.Conn.Write(p)
	if err != nil {
		c.wbroken = true
	}
	return n, err
}

// scanWrite follows the frame headers in p, the next bytes the server
// sends, and marks the client streams it ends.
func (c *guardConn) scanWrite(p []byte) {
	for {
		h, rest, ok := c.wr.next(p)
		if !ok {
			return
		}
		p = rest
		if h.typ == h2FrameHeaders || h.typ == h2FrameData {
			if c.g.minPing > 0 && !c.pingReset.Load() {
				c.pingReset.Store(true)
			}
			if h.flags&h2FlagEndStream != 0 && h.id&1 == 1 {
				c.ended[(h.id>>1)%guardEnded].Store(h.id)
			}
		}
	}
}

// SyscallConn passes on the socket of the connection underneath, for
// grpc-go's channelz socket options.
func (c *guardConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("gatehouse: connection has no socket")
}

// frameCursor follows frame boundaries through a byte stream that arrives
// in pieces of any size.
type frameCursor struct {
	skip uint32 // payload bytes of the current frame still to pass
	n    uint8  // bytes of the next frame header gathered in hdr
	hdr  [h2HeaderLen]byte
}

// h2Frame is what the guard uses of a frame header.
type h2Frame struct {
	typ, flags uint8
	id         uint32
}

// atBoundary reports whether the bytes so far end with a whole frame.
func (f *frameCursor) atBoundary() bool { return f.n == 0 && f.skip == 0 }

// next passes over p up to the end of the next frame header and returns
// that header and the rest of p; ok is false when p ends first (all of p
// is then passed).
func (f *frameCursor) next(p []byte) (h h2Frame, rest []byte, ok bool) {
	if f.skip > 0 {
		if len(p) <= int(f.skip) {
			f.skip -= uint32(len(p))
			return h, nil, false
		}
		p = p[f.skip:]
		f.skip = 0
	}
	var b []byte
	if f.n == 0 && len(p) >= h2HeaderLen {
		b, p = p[:h2HeaderLen], p[h2HeaderLen:]
	} else {
		k := copy(f.hdr[f.n:], p)
		f.n += uint8(k)
		if f.n < h2HeaderLen {
			return h, nil, false
		}
		p = p[k:]
		f.n = 0
		b = f.hdr[:]
	}
	f.skip = uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2])
	return h2Frame{typ: b[3], flags: b[4], id: binary.BigEndian.Uint32(b[5:]) & 0x7fffffff}, p, true
}

// toBoundary returns how many bytes of p end the current frame, 0 at a
// boundary, -1 when p ends before the frame does. f is not changed.
func (f frameCursor) toBoundary(p []byte) int {
	i := 0
	if f.n > 0 {
		i = h2HeaderLen - int(f.n)
		if len(p) < i {
			return -1
		}
		copy(f.hdr[f.n:], p[:i])
		f.skip = uint32(f.hdr[0])<<16 | uint32(f.hdr[1])<<8 | uint32(f.hdr[2])
	}
	if len(p)-i < int(f.skip) {
		return -1
	}
	return i + int(f.skip)
}

// creds puts the guard on the connections of inner, a server's transport
// credentials; nil inner is plaintext (no handshake, no auth info, as a
// grpc.Server without credentials).
func (g *h2Guard) creds(inner credentials.TransportCredentials) credentials.TransportCredentials {
	return &guardCreds{inner: inner, guard: g}
}

// guardCreds are server transport credentials that put the guard on each
// connection once its handshake is done.
type guardCreds struct {
	inner credentials.TransportCredentials // nil: plaintext
	guard *h2Guard
}

var _ credentials.TransportCredentials = (*guardCreds)(nil)

func (c *guardCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if c.inner == nil {
		return c.guard.wrap(conn), nil, nil
	}
	hc, info, err := c.inner.ServerHandshake(conn)
	if err != nil {
		return hc, info, err // as they are: grpc-go tells io.EOF apart
	}
	return c.guard.wrap(hc), info, nil
}

func (c *guardCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("gatehouse: listener credentials are server-side only")
}

func (c *guardCreds) Info() credentials.ProtocolInfo {
	if c.inner == nil {
		return credentials.ProtocolInfo{SecurityProtocol: "insecure"}
	}
	return c.inner.Info()
}

func (c *guardCreds) Clone() credentials.TransportCredentials {
	n := &guardCreds{guard: c.guard}
	if c.inner != nil {
		n.inner = c.inner.Clone()
	}
	return n
}

//nolint:staticcheck // required by the interface
func (c *guardCreds) OverrideServerName(name string) error {
	if c.inner == nil {
		return nil
	}
	return c.inner.OverrideServerName(name)
}

// rapidResetGuard is the guard of the listener named listener (native, or
// the HTTP/2 prior-knowledge connections of a plaintext shared one): a
// trip is logged and counted in gatehouse_http2_rapid_reset_total.
func (g *Gateway) rapidResetGuard(listener string) *h2Guard {
	guard := newH2Guard()
	vec := rapidResetCounter(g.Metrics())
	log := g.log
	guard.onTrip = func(peer net.Addr, streams, resets int) {
		if vec != nil {
			vec.WithLabelValues(listener).Inc()
		}
		log.Warn("HTTP/2 rapid reset: GOAWAY ENHANCE_YOUR_CALM, connection closed",
			slog.String("listener", listener), slog.String("peer", fmt.Sprint(peer)),
			slog.Int("streams", streams), slog.Int("premature_resets", resets))
	}
	return guard
}

// rapidResetCounter is gatehouse_http2_rapid_reset_total{listener} in m's
// registry (registered once, shared by the listeners); nil when metrics
// are off.
func rapidResetCounter(m *telemetry.Metrics) *prometheus.CounterVec {
	reg := m.Registry()
	if reg == nil {
		return nil
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_http2_rapid_reset_total",
		Help: "HTTP/2 connections sent GOAWAY ENHANCE_YOUR_CALM and closed because the client reset most of the streams it opened (HTTP/2 rapid reset); native listeners, and plaintext shared ones.",
	}, []string{"listener"})
	if err := reg.Register(vec); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil
		}
		vec = existing
	}
	return vec
}
