package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/telemetry"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// fakeConn is a connection whose reads return chunks in turn (then
// io.EOF) and whose writes are kept.
type fakeConn struct {
	mu     sync.Mutex
	in     [][]byte
	out    bytes.Buffer
	closed bool
}

func (c *fakeConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.in[0])
	if c.in[0] = c.in[0][n:]; len(c.in[0]) == 0 {
		c.in = c.in[1:]
	}
	return n, nil
}

func (c *fakeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.out.Write(p)
}

func (c *fakeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *fakeConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.out.Bytes()...)
}

func (c *fakeConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *fakeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

// fakeClock is a clock the test moves.
type fakeClock struct{ t atomic.Int64 }

func (c *fakeClock) now() time.Time      { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) add(d time.Duration) { c.t.Add(int64(d)) }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.t.Store(int64(time.Hour))
	return c
}

// testGuard is a guard with the default thresholds on clock.
func testGuard(clock *fakeClock) *h2Guard {
	g := newH2Guard()
	g.now = clock.now
	return g
}

// frameWriter builds HTTP/2 frames.
type frameWriter struct {
	buf  bytes.Buffer
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

func newFrameWriter() *frameWriter {
	w := &frameWriter{}
	w.fr = http2.NewFramer(&w.buf, nil)
	w.enc = hpack.NewEncoder(&w.hbuf)
	return w
}

func (w *frameWriter) preface() *frameWriter {
	w.buf.WriteString(http2.ClientPreface)
	return w
}

func (w *frameWriter) block() []byte {
	w.hbuf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.testing.TestService/FullDuplexCall"}, {":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = w.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return append([]byte(nil), w.hbuf.Bytes()...)
}

func (w *frameWriter) headers(id uint32, endStream bool) *frameWriter {
	_ = w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: w.block(), EndStream: endStream, EndHeaders: true})
	return w
}

func (w *frameWriter) rst(id uint32) *frameWriter {
	_ = w.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	return w
}

func (w *frameWriter) data(id uint32, endStream bool, n int) *frameWriter {
	_ = w.fr.WriteData(id, endStream, bytes.Repeat([]byte{0xab}, n))
	return w
}

func (w *frameWriter) bytes() []byte { return append([]byte(nil), w.buf.Bytes()...) }

// boundaries are the offsets in b (frames, after an optional preface) at
// which a frame ends.
func boundaries(t *testing.T, b []byte, skip int) map[int]bool {
	t.Helper()
	out := map[int]bool{skip: true}
	for i := skip; i < len(b); {
		if len(b)-i < h2HeaderLen {
			t.Fatalf("trailing %d bytes", len(b)-i)
		}
		i += h2HeaderLen + (int(b[i])<<16 | int(b[i+1])<<8 | int(b[i+2]))
		out[i] = true
	}
	return out
}

func TestH2GuardTracksClientFrames(t *testing.T) {
	// A DATA payload made of bytes that read as HEADERS and RST_STREAM
	// frames: the cursor must skip it, not parse it.
	decoy := newFrameWriter().headers(101, false).rst(101).headers(103, false).rst(103).bytes()
	cases := []struct {
		name                 string
		frames               []byte
		streams, resets, max int
	}{
		{"preface, settings, one call",
			func() []byte {
				w := newFrameWriter().preface()
				_ = w.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
				w.headers(1, false).data(1, true, 100)
				_ = w.fr.WriteWindowUpdate(0, 1000)
				_ = w.fr.WritePing(false, [8]byte{1})
				return w.bytes()
			}(), 1, 0, 1},
		{"open and reset", newFrameWriter().preface().headers(1, false).rst(1).headers(3, false).rst(3).headers(5, false).bytes(), 3, 2, 5},
		{"resets of streams never opened, even ids, stream 0",
			newFrameWriter().preface().headers(1, false).rst(7).rst(2).rst(0).bytes(), 1, 0, 1},
		{"trailers on an open stream open nothing",
			newFrameWriter().preface().headers(1, false).headers(3, false).headers(1, true).headers(3, true).headers(5, false).bytes(), 3, 0, 5},
		{"HEADERS with CONTINUATION",
			func() []byte {
				w := newFrameWriter().preface()
				blk := w.block()
				_ = w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:3]})
				_ = w.fr.WriteContinuation(1, true, blk[3:])
				w.rst(1)
				return w.bytes()
			}(), 1, 1, 1},
		{"padded HEADERS with priority",
			func() []byte {
				w := newFrameWriter().preface()
				_ = w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 9, BlockFragment: w.block(), EndHeaders: true, PadLength: 7,
					Priority: http2.PriorityParam{StreamDep: 0, Weight: 15}})
				_ = w.fr.WritePriority(11, http2.PriorityParam{Weight: 1})
				return w.bytes()
			}(), 1, 0, 9},
		{"frame-like DATA payload is skipped",
			func() []byte {
				w := newFrameWriter().preface().headers(1, false)
				_ = w.fr.WriteData(1, false, decoy)
				_ = w.fr.WriteData(1, true, nil) // empty frame
				return w.bytes()
			}(), 1, 0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.frames
			ends := boundaries(t, b, h2PrefaceLen)
			check := func(t *testing.T, c *guardConn, how string) {
				t.Helper()
				if c.streams != tc.streams || c.resets != tc.resets || int(c.maxID) != tc.max || !c.rd.atBoundary() {
					t.Fatalf("%s: streams %d, resets %d, max id %d, at boundary %v; want %d, %d, %d, true",
						how, c.streams, c.resets, c.maxID, c.rd.atBoundary(), tc.streams, tc.resets, tc.max)
				}
			}
			clock := newFakeClock()
			// Two pieces, split at every byte.
			for i := 0; i <= len(b); i++ {
				c := testGuard(clock).wrap(&fakeConn{})
				if c.scanRead(b[:i]) {
					t.Fatal("tripped")
				}
				if i >= h2PrefaceLen && c.rd.atBoundary() != ends[i] {
					t.Fatalf("split at %d: at boundary %v, want %v", i, c.rd.atBoundary(), ends[i])
				}
				c.scanRead(b[i:])
				check(t, c, fmt.Sprintf("split at %d", i))
			}
			// A byte at a time.
			c := testGuard(clock).wrap(&fakeConn{})
			for i := range b {
				c.scanRead(b[i : i+1])
			}
			check(t, c, "a byte at a time")
			// Through Read, as grpc-go reads: the preface alone, then the rest.
			fc := &fakeConn{in: [][]byte{b[:h2PrefaceLen], b[h2PrefaceLen:]}}
			c = testGuard(clock).wrap(fc)
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("read %d bytes (%v), want the %d sent", len(got), err, len(b))
			}
			check(t, c, "Read")
		})
	}
}

func TestH2GuardTracksServerFrames(t *testing.T) {
	w := newFrameWriter()
	_ = w.fr.WriteSettings()
	w.headers(1, false).data(1, false, 3000).headers(1, true) // response, trailers
	w.headers(3, true)                                        // trailers only
	w.data(5, true, 10)
	_ = w.fr.WriteRSTStream(7, http2.ErrCodeRefusedStream) // a server reset ends nothing
	w.headers(9, false)
	_ = w.fr.WriteGoAway(9, http2.ErrCodeNo, nil)
	b := w.bytes()
	ends := boundaries(t, b, 0)
	check := func(t *testing.T, c *guardConn, how string) {
		t.Helper()
		for id, want := range map[uint32]bool{1: true, 3: true, 5: true, 7: false, 9: false} {
			if got := c.ended[(id>>1)%guardEnded].Load() == id; got != want {
				t.Fatalf("%s: stream %d marked ended %v, want %v", how, id, got, want)
			}
		}
		if !c.wr.atBoundary() {
			t.Fatalf("%s: not at a boundary at the end", how)
		}
	}
	for i := 0; i <= len(b); i++ {
		fc := &fakeConn{}
		c := newH2Guard().wrap(fc)
		if _, err := c.Write(b[:i]); err != nil {
			t.Fatal(err)
		}
		if c.wr.atBoundary() != ends[i] {
			t.Fatalf("split at %d: at boundary %v, want %v", i, c.wr.atBoundary(), ends[i])
		}
		if k := c.wr.toBoundary(b[i:]); k < 0 || !ends[i+k] || (k > 0 && ends[i]) {
			t.Fatalf("split at %d: %d bytes to the boundary, not the next one", i, k)
		}
		if _, err := c.Write(b[i:]); err != nil {
			t.Fatal(err)
		}
		check(t, c, fmt.Sprintf("split at %d", i))
		if !bytes.Equal(fc.written(), b) {
			t.Fatalf("split at %d: written bytes differ from those given", i)
		}
	}
	c := newH2Guard().wrap(&fakeConn{})
	for i := range b {
		_, _ = c.Write(b[i : i+1])
	}
	check(t, c, "a byte at a time")
}

// rapidReset is the frames of a client that opens n streams and resets
// each at once.
func rapidReset(from uint32, n int) *frameWriter {
	w := newFrameWriter().preface()
	_ = w.fr.WriteSettings()
	for i := range n {
		id := from + uint32(2*i)
		w.headers(id, false).rst(id)
	}
	return w
}

// chunks cuts b into pieces of size n.
func chunks(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// readAll reads c as grpc-go does, in 32 KiB reads, until an error.
func readAll(c net.Conn) error {
	buf := make([]byte, 32<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			return err
		}
	}
}

// decodeServer decodes what the server wrote: every frame must parse, and
// none may follow a GOAWAY; it returns the frames and the GOAWAY.
func decodeServer(t *testing.T, b []byte) (frames []http2.Frame, goAway *http2.GoAwayFrame) {
	t.Helper()
	fr := http2.NewFramer(nil, bytes.NewReader(b))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			return frames, goAway
		}
		if err != nil {
			t.Fatalf("frame %d of the server's bytes does not parse: %v", len(frames)+1, err)
		}
		if goAway != nil {
			t.Fatalf("%v after the GOAWAY", f.Header())
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			goAway = g
		}
		frames = append(frames, f)
	}
}

func checkGoAway(t *testing.T, g *http2.GoAwayFrame, last uint32) {
	t.Helper()
	if g == nil {
		t.Fatal("no GOAWAY")
	}
	if g.ErrCode != http2.ErrCodeEnhanceYourCalm || string(g.DebugData()) != "rapid reset" || g.LastStreamID != last {
		t.Fatalf("GOAWAY %v %q last stream %d; want ENHANCE_YOUR_CALM \"rapid reset\" last stream %d", g.ErrCode, g.DebugData(), g.LastStreamID, last)
	}
}

func TestH2GuardTrips(t *testing.T) {
	for _, chunk := range []int{1 << 20, 32 << 10, 1000, 7} {
		t.Run(fmt.Sprintf("reads of %d bytes", chunk), func(t *testing.T) {
			fc := &fakeConn{in: chunks(rapidReset(1, 2000).bytes(), chunk)}
			g := testGuard(newFakeClock())
			var trips, gotStreams, gotResets int
			g.onTrip = func(_ net.Addr, streams, resets int) { trips, gotStreams, gotResets = trips+1, streams, resets }
			c := g.wrap(fc)
			if err := readAll(c); !errors.Is(err, errRapidReset) {
				t.Fatalf("read error %v, want errRapidReset", err)
			}
			// The 500th stream's reset trips it: 500 opened, 500 reset.
			if trips != 1 || gotStreams != 500 || gotResets != 500 || c.maxID != 999 {
				t.Fatalf("trips %d with %d streams, %d resets, max id %d; want 1 with 500, 500, 999", trips, gotStreams, gotResets, c.maxID)
			}
			_, ga := decodeServer(t, fc.written())
			checkGoAway(t, ga, 999)
			if !fc.closed {
				t.Fatal("connection not closed")
			}
			// Afterwards: reads fail, writes are dropped.
			if _, err := c.Read(make([]byte, 10)); !errors.Is(err, errRapidReset) {
				t.Fatalf("read after the trip: %v", err)
			}
			before := len(fc.written())
			if n, err := c.Write(newFrameWriter().headers(1, true).bytes()); err != nil || n == 0 || len(fc.written()) != before {
				t.Fatalf("write after the trip: %d, %v, %d bytes went out", n, err, len(fc.written())-before)
			}
		})
	}
	t.Run("opened in batches, reset in batches", func(t *testing.T) {
		w := newFrameWriter().preface()
		for b := range 20 {
			for i := range 100 {
				w.headers(uint32(1+2*(100*b+i)), false)
			}
			for i := range 100 {
				w.rst(uint32(1 + 2*(100*b+i)))
			}
		}
		fc := &fakeConn{in: chunks(w.bytes(), 32<<10)}
		c := testGuard(newFakeClock()).wrap(fc)
		if err := readAll(c); !errors.Is(err, errRapidReset) {
			t.Fatalf("read error %v, want errRapidReset", err)
		}
		_, ga := decodeServer(t, fc.written())
		checkGoAway(t, ga, c.maxID)
	})
	t.Run("good streams banked first", func(t *testing.T) {
		// 100,000 calls finished by the server, then rapid reset: the
		// halving keeps the history short, so it trips within 1,000 resets.
		w := newFrameWriter().preface()
		for i := range 100000 {
			w.headers(uint32(1+2*i), true)
		}
		w2 := rapidReset(200001, 1000)
		in := append(w.bytes(), w2.bytes()[h2PrefaceLen:]...)
		fc := &fakeConn{in: chunks(in, 32<<10)}
		c := testGuard(newFakeClock()).wrap(fc)
		if err := readAll(c); !errors.Is(err, errRapidReset) {
			t.Fatalf("read error %v, want errRapidReset", err)
		}
		t.Logf("tripped after %d resets", (c.maxID-200001)/2+1)
	})
}

func TestH2GuardDoesNotTripLegitimateClients(t *testing.T) {
	cases := []struct {
		name string
		run  func(c *guardConn, clock *fakeClock) []byte // returns what the client sends
	}{
		{"200 streams, 50 cancelled", func(c *guardConn, _ *fakeClock) []byte {
			w := newFrameWriter().preface()
			for i := range 200 {
				id := uint32(1 + 2*i)
				w.headers(id, false).data(id, true, 10)
				if i%4 == 0 {
					w.rst(id)
				}
			}
			return w.bytes()
		}},
		{"5,000 streams, 40% cancelled", func(c *guardConn, _ *fakeClock) []byte {
			w := newFrameWriter().preface()
			for i := range 5000 {
				id := uint32(1 + 2*i)
				w.headers(id, true)
				if i%5 < 2 {
					w.rst(id)
				}
			}
			return w.bytes()
		}},
		{"resets after the server ended each stream", func(c *guardConn, _ *fakeClock) []byte {
			// grpc-go clients reset (NO_ERROR) a stream whose trailers came
			// before they half-closed it: the client opens, the server
			// answers, the client resets, 2,000 times, 100 calls at a time.
			read := func(b []byte) {
				if c.scanRead(b) {
					panic("tripped")
				}
			}
			read([]byte(http2.ClientPreface))
			for i := 0; i < 2000; i += 100 {
				w, srv := newFrameWriter(), newFrameWriter()
				for j := range 100 {
					id := uint32(1 + 2*(i+j))
					w.headers(id, false)
					srv.headers(id, true)
				}
				read(w.bytes())
				_, _ = c.Write(srv.bytes())
				w = newFrameWriter()
				for j := range 100 {
					w.rst(uint32(1 + 2*(i+j)))
				}
				read(w.bytes())
			}
			return nil
		}},
		{"resets of streams older than the lifetime", func(c *guardConn, clock *fakeClock) []byte {
			// Long calls (watches) opened, then cancelled at once, later.
			w := newFrameWriter().preface()
			for i := range 1000 {
				w.headers(uint32(1+2*i), false)
			}
			if c.scanRead(w.bytes()) {
				panic("tripped on opening")
			}
			clock.add(1100 * time.Millisecond)
			w = newFrameWriter()
			for i := range 1000 {
				w.rst(uint32(1 + 2*i))
			}
			return w.bytes()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			g := testGuard(clock)
			g.onTrip = func(net.Addr, int, int) { t.Error("tripped") }
			fc := &fakeConn{}
			c := g.wrap(fc)
			b := tc.run(c, clock)
			fc.in = chunks(b, 4096)
			if err := readAll(c); err != io.EOF {
				t.Fatalf("read error %v, want io.EOF", err)
			}
			t.Logf("streams %d, premature resets %d", c.streams, c.resets)
		})
	}
}

// TestH2GuardGoAwayAtFrameBoundary trips the guard while grpc-go's last
// write ended inside a frame: the GOAWAY must follow that frame's end.
func TestH2GuardGoAwayAtFrameBoundary(t *testing.T) {
	w := newFrameWriter()
	_ = w.fr.WriteSettings()
	w.headers(1, false).data(1, false, 10000)
	_ = w.fr.WriteWindowUpdate(0, 100)
	w.headers(3, true)
	out := w.bytes()
	firstEnd := len(out) - len(newFrameWriter().headers(3, true).bytes()) - 13 // after the DATA frame
	for _, cut := range []int{5, 20, firstEnd - 5000, firstEnd - 1} {
		t.Run(fmt.Sprintf("cut at %d", cut), func(t *testing.T) {
			fc := &fakeConn{in: chunks(rapidReset(1, 600).bytes(), 32<<10)}
			c := testGuard(newFakeClock()).wrap(fc)
			if _, err := c.Write(out[:cut]); err != nil {
				t.Fatal(err)
			}
			readErr := make(chan error, 1)
			go func() { readErr <- readAll(c) }()
			for {
				c.wmu.Lock()
				p := c.pending
				c.wmu.Unlock()
				if p {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if n, err := c.Write(out[cut:]); err != nil || n != len(out)-cut {
				t.Fatalf("write: %d, %v", n, err)
			}
			if err := <-readErr; !errors.Is(err, errRapidReset) {
				t.Fatalf("read error %v", err)
			}
			frames, ga := decodeServer(t, fc.written())
			checkGoAway(t, ga, c.maxID)
			// The frame that was cut finished, the rest of the write dropped.
			end := boundaries(t, out, 0)
			want := cut
			for !end[want] {
				want++
			}
			if got := len(fc.written()) - (h2HeaderLen + 8 + len(rapidResetDebug)); got != want {
				t.Fatalf("%d bytes before the GOAWAY, want %d (%d frames)", got, want, len(frames))
			}
		})
	}
}

// TestH2GuardConcurrentWrites trips the guard while a writer sends frames
// in pieces of random sizes: whatever the interleaving, the server's bytes
// are whole frames, the GOAWAY last.
func TestH2GuardConcurrentWrites(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		w := newFrameWriter()
		for i := range 100 {
			id := uint32(1 + 2*i)
			w.headers(id, false).data(id, false, rng.IntN(20000)).headers(id, true)
		}
		out := w.bytes()
		fc := &fakeConn{in: chunks(rapidReset(1, 600).bytes(), 1+rng.IntN(40000))}
		c := testGuard(newFakeClock()).wrap(fc)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for p := out; len(p) > 0; {
				n := min(len(p), 1+rng.IntN(40000))
				_, _ = c.Write(p[:n])
				p = p[n:]
			}
		}()
		if err := readAll(c); !errors.Is(err, errRapidReset) {
			t.Fatalf("seed %d: read error %v", seed, err)
		}
		<-done
		_, ga := decodeServer(t, fc.written())
		checkGoAway(t, ga, c.maxID)
	}
}

// TestH2GuardWithGRPC runs a grpc.Server under the guard's credentials: a
// client that cancels some of its calls keeps its connection; a
// rapid-reset client is sent the GOAWAY and closed.
func TestH2GuardWithGRPC(t *testing.T) {
	var trips atomic.Int32
	g := newH2Guard()
	g.onTrip = func(net.Addr, int, int) { trips.Add(1) }
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(g.creds(nil)), grpc.MaxConcurrentStreams(10))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	served := make(chan struct{})
	go func() { defer close(served); _ = s.Serve(lis) }()
	defer func() { s.Stop(); <-served }()

	t.Run("200 calls, 50 cancelled", func(t *testing.T) {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		hc := healthpb.NewHealthClient(cc)
		for i := range 200 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if i%4 == 0 {
				// A watch, cancelled after its first answer.
				st, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
				if err == nil {
					_, err = st.Recv()
				}
				cancel()
				if err != nil {
					t.Fatalf("watch %d: %v", i, err)
				}
				continue
			}
			_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		if n := trips.Load(); n != 0 {
			t.Fatalf("tripped %d times", n)
		}
	})
	t.Run("rapid reset", func(t *testing.T) {
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		w := newFrameWriter()
		fr := http2.NewFramer(c, c)
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			t.Fatal(err)
		}
		_ = fr.WriteSettings()
		blk := w.block()
		for i := range 2000 {
			id := uint32(1 + 2*i)
			if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndHeaders: true}) != nil || fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				break
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var ga *http2.GoAwayFrame
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				if isTimeoutErr(err) {
					t.Fatal("connection still open after 5s")
				}
				break
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				ga = g
			}
		}
		checkGoAway(t, ga, ga.LastStreamID)
		if ga.LastStreamID < 999 {
			t.Fatalf("GOAWAY last stream %d, want at least 999", ga.LastStreamID)
		}
		if n := trips.Load(); n != 1 {
			t.Fatalf("tripped %d times, want 1", n)
		}
	})
	t.Run("a new connection still works", func(t *testing.T) {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("got %v, want NotFound", err)
		}
	})
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestH2GuardCreds(t *testing.T) {
	g := newH2Guard()
	cr := g.creds(nil)
	conn, info, err := cr.ServerHandshake(&fakeConn{})
	if _, ok := conn.(*guardConn); !ok || info != nil || err != nil {
		t.Fatalf("plaintext handshake: %T, %v, %v", conn, info, err)
	}
	if cr.Info().SecurityProtocol != "insecure" {
		t.Fatalf("info %+v", cr.Info())
	}
	inner := insecure.NewCredentials()
	cr = g.creds(inner).Clone()
	conn, info, err = cr.ServerHandshake(&fakeConn{})
	if _, ok := conn.(*guardConn); !ok || info == nil || err != nil {
		t.Fatalf("wrapped handshake: %T, %v, %v", conn, info, err)
	}
	if _, _, err := cr.ClientHandshake(context.Background(), "x", &fakeConn{}); err == nil {
		t.Fatal("client handshake succeeded")
	}
}

func TestH2GuardMetric(t *testing.T) {
	m := telemetry.NewMetrics("test")
	gw := &Gateway{log: discardLogger(), obs: &observability{metrics: m}}
	a, b := gw.rapidResetGuard("a"), gw.rapidResetGuard("b") // registered once, shared
	a.onTrip(nil, 500, 500)
	a.onTrip(nil, 500, 500)
	b.onTrip(nil, 500, 500)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "gatehouse_http2_rapid_reset_total" {
			for _, s := range mf.GetMetric() {
				got[s.GetLabel()[0].GetValue()] = s.GetCounter().GetValue()
			}
		}
	}
	if got["a"] != 2 || got["b"] != 1 {
		t.Fatalf("gatehouse_http2_rapid_reset_total %v, want a 2, b 1", got)
	}
	// Metrics off: no counter, no panic.
	(&Gateway{log: discardLogger()}).rapidResetGuard("c").onTrip(nil, 1, 1)
}

// nopConn reads and writes nothing: Read reports p full, Write reports p
// written, so that the benchmarks measure the guard alone.
type nopConn struct{ fakeConn }

func (*nopConn) Read(p []byte) (int, error)  { return len(p), nil }
func (*nopConn) Write(p []byte) (int, error) { return len(p), nil }

// benchFrames is about 32 KiB (one grpc-go read or write) of whole
// frames, so that the same bytes can be read or written again.
func benchFrames(kind string) []byte {
	w := newFrameWriter()
	switch kind {
	case "DATA 16KiB":
		for w.buf.Len() < 32<<10 {
			w.data(1, false, 16<<10-h2HeaderLen)
		}
	case "DATA 1KiB":
		for w.buf.Len() < 32<<10 {
			w.data(1, false, 1<<10-h2HeaderLen)
		}
	case "WINDOW_UPDATE":
		for w.buf.Len()+13 <= 32<<10 {
			_ = w.fr.WriteWindowUpdate(1, 100)
		}
	case "HEADERS+RST_STREAM":
		for i := 0; w.buf.Len() < 32<<10-100; i++ {
			w.headers(uint32(1+2*i), false).rst(uint32(1 + 2*i))
		}
	}
	return w.bytes()
}

// BenchmarkH2Guard measures one 32 KiB Read or Write through the guard
// (go test -bench H2Guard -benchmem ./edge); frames/op is how many frame
// headers each one follows.
func BenchmarkH2Guard(b *testing.B) {
	for _, kind := range []string{"DATA 16KiB", "DATA 1KiB", "WINDOW_UPDATE", "HEADERS+RST_STREAM"} {
		p := benchFrames(kind)
		b.Run("Read/"+kind, func(b *testing.B) {
			g := newH2Guard()
			g.minStreams = 1 << 30 // never trips
			c := g.wrap(&nopConn{})
			c.preface = 0
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = c.Read(p)
			}
			b.ReportMetric(float64(countHeaders(p)), "frames/op")
		})
		b.Run("Write/"+kind, func(b *testing.B) {
			c := newH2Guard().wrap(&nopConn{})
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = c.Write(p)
			}
			b.ReportMetric(float64(countHeaders(p)), "frames/op")
		})
	}
}

func countHeaders(p []byte) int {
	var f frameCursor
	n := 0
	for {
		_, rest, ok := f.next(p)
		if !ok {
			return n
		}
		n++
		p = rest
	}
}

// The keepalive policy the guard enforces where net/http has none: PINGs
// sooner than minPing after the last one are strikes, forgiven whenever
// the server sent HEADERS or DATA (as grpc-go forgives BDP pings); the
// third strike gets GOAWAY "too_many_pings".
func TestH2GuardPingPolicy(t *testing.T) {
	ping := func(w *frameWriter, ack bool) *frameWriter {
		_ = w.fr.WritePing(ack, [8]byte{1})
		return w
	}
	cases := []struct {
		name    string
		minPing time.Duration
		steps   func(c *guardConn, clock *fakeClock, scan func([]byte)) // feeds the conn
		trip    bool
	}{
		{"pings too soon", 10 * time.Second, func(c *guardConn, clock *fakeClock, scan func([]byte)) {
			for range 4 {
				scan(ping(newFrameWriter(), false).bytes())
				clock.add(time.Second)
			}
		}, true},
		{"pings far enough apart", 10 * time.Second, func(c *guardConn, clock *fakeClock, scan func([]byte)) {
			for range 10 {
				scan(ping(newFrameWriter(), false).bytes())
				clock.add(11 * time.Second)
			}
		}, false},
		{"acks are not pings", 10 * time.Second, func(c *guardConn, clock *fakeClock, scan func([]byte)) {
			for range 10 {
				scan(ping(newFrameWriter(), true).bytes())
			}
		}, false},
		{"pings after server data", 10 * time.Second, func(c *guardConn, clock *fakeClock, scan func([]byte)) {
			for i := range 10 {
				_, _ = c.Write(newFrameWriter().data(uint32(2*i+1), false, 10).bytes())
				scan(ping(newFrameWriter(), false).bytes())
			}
		}, false},
		{"no policy", 0, func(c *guardConn, clock *fakeClock, scan func([]byte)) {
			for range 10 {
				scan(ping(newFrameWriter(), false).bytes())
			}
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			g := testGuard(clock)
			g.minPing = tc.minPing
			pings := 0
			g.onPings = func(net.Addr) { pings++ }
			fc := &fakeConn{}
			c := g.wrap(fc)
			c.preface = 0
			tripped := false
			tc.steps(c, clock, func(p []byte) {
				if c.scanRead(p) {
					tripped = true
				}
			})
			if tripped != tc.trip {
				t.Fatalf("tripped %v, want %v (strikes %d)", tripped, tc.trip, c.pingStrikes)
			}
			if !tc.trip {
				return
			}
			c.trip(make([]byte, 64))
			if pings != 1 || !errors.Is(c.readerErr, errTooManyPings) || !fc.closed {
				t.Fatalf("onPings %d, reader error %v, closed %v", pings, c.readerErr, fc.closed)
			}
			_, ga := decodeServer(t, fc.written())
			if ga == nil || ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "too_many_pings" {
				t.Fatalf("GOAWAY %v", ga)
			}
		})
	}
}
