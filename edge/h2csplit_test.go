package edge

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// settingsAck is a client's SETTINGS acknowledgement frame.
var settingsAck = []byte{0, 0, 0, 0x4, byte(http2.FlagSettingsAck), 0, 0, 0, 0}

// TestReplayConnDropsFirstAck checks that the split's connection replays
// what was read, then passes the client's frames unchanged except for the
// first SETTINGS acknowledgement, whatever the sizes of the reads on
// either side.
func TestReplayConnDropsFirstAck(t *testing.T) {
	w := newFrameWriter()
	_ = w.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	_ = w.fr.WriteWindowUpdate(0, 1<<20)
	w.headers(1, false)
	w.data(1, false, 3000)
	live := append(w.bytes(), settingsAck...) // the first ack: dropped
	w2 := newFrameWriter()
	w2.data(1, true, 17)
	_ = w2.fr.WritePing(false, [8]byte{1})
	tail := append(w2.bytes(), settingsAck...) // the second: passes
	want := append(bytes.Clone(live[:len(live)-len(settingsAck)]), tail...)
	stream := append(bytes.Clone(live), tail...)

	for _, tt := range []struct {
		name   string
		rest   int // bytes of stream read ahead (at a frame boundary) into rest
		k, r   int // the connection's read size, the reader's
		noDrop bool
	}{
		{name: "byte by byte", k: 1, r: 1},
		{name: "odd reads", k: 3, r: 7},
		{name: "frame header reads", k: 9, r: 9},
		{name: "small reader", k: 4096, r: 4},
		{name: "large reads", k: 4096, r: 4096},
		{name: "read ahead", rest: 9 + 6, k: 5, r: 100}, // the client SETTINGS frame
		{name: "read ahead, large", rest: 9 + 6 + 13, k: 4096, r: 2},
		{name: "ack already seen", k: 100, r: 100, noDrop: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte(http2.ClientPreface)
			c := &replayConn{
				Conn:    &chunkConn{data: string(stream[tt.rest:]), k: tt.k},
				prefix:  bytes.Clone(prefix),
				rest:    bytes.Clone(stream[:tt.rest]),
				dropAck: !tt.noDrop,
			}
			got, err := readAllBy(c, tt.r)
			if err != nil {
				t.Fatal(err)
			}
			exp := append(bytes.Clone(prefix), want...)
			if tt.noDrop {
				exp = append(bytes.Clone(prefix), stream...)
			}
			if !bytes.Equal(got, exp) {
				t.Fatalf("got %d bytes, want %d:\n got %x\nwant %x", len(got), len(exp), got, exp)
			}
		})
	}
}

// readAllBy reads c to EOF with reads of size r.
func readAllBy(c net.Conn, r int) ([]byte, error) {
	var out []byte
	buf := make([]byte, r)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// TestH2CSplitLook checks the choice of server for what a client sends
// first, over real loopback connections.
func TestH2CSplitLook(t *testing.T) {
	grpcHeaders := newFrameWriter().headers(1, false).bytes()
	restBlock := func(ct string) []byte {
		w := newFrameWriter()
		w.hbuf.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/v1/x"}, {":authority", "x"}, {"content-type", ct}} {
			_ = w.enc.WriteField(hpackField(f[0], f[1]))
		}
		_ = w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: w.hbuf.Bytes(), EndHeaders: true})
		return w.bytes()
	}
	settings := func() []byte {
		w := newFrameWriter()
		_ = w.fr.WriteSettings()
		return w.bytes()
	}()
	cat := func(b ...[]byte) []byte { return bytes.Join(b, nil) }
	preface := []byte(http2.ClientPreface)

	for _, tt := range []struct {
		name       string
		send       []byte
		wantNative bool
		wantClosed bool
		wantReplay []byte // what the chosen server reads first
	}{
		{name: "grpc", send: cat(preface, settings, grpcHeaders), wantNative: true, wantReplay: cat(preface, settings, grpcHeaders)},
		{name: "grpc after our ack", send: cat(preface, settings, settingsAck, grpcHeaders), wantNative: true, wantReplay: cat(preface, settings, grpcHeaders)},
		{name: "grpc+proto", send: cat(preface, settings, restBlock("application/grpc+proto")), wantNative: true},
		{name: "rest json", send: cat(preface, settings, restBlock("application/json")), wantReplay: cat(preface, settings, restBlock("application/json"))},
		{name: "grpc-web", send: cat(preface, settings, restBlock("application/grpc-web+proto"))},
		{name: "no request yet", send: cat(preface, settings), wantReplay: cat(preface, settings)},
		{name: "http/1.1", send: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), wantReplay: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{name: "short http/1.1", send: []byte("G"), wantReplay: []byte("G")},
		{name: "part of a preface", send: preface[:10], wantReplay: preface[:10]},
		{name: "stream frame first", send: cat(preface, settings, newFrameWriter().data(1, true, 3).bytes())},
		{name: "nothing", wantClosed: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer lis.Close()
			client, err := net.Dial("tcp", lis.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := lis.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()
			if _, err := client.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			s := &h2cSplit{timeout: 200 * time.Millisecond, maxHeader: 16 << 10}
			native, rc, err := s.look(server)
			if tt.wantClosed {
				if err == nil {
					t.Fatalf("look: no error, want one (close)")
				}
				return
			}
			if err != nil {
				t.Fatalf("look: %v", err)
			}
			if native != tt.wantNative {
				t.Errorf("native = %v, want %v", native, tt.wantNative)
			}
			if tt.wantReplay != nil {
				got := make([]byte, len(tt.wantReplay))
				_ = rc.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := io.ReadFull(rc, got); err != nil {
					t.Fatalf("replay: %v", err)
				}
				if !bytes.Equal(got, tt.wantReplay) {
					t.Errorf("replay:\n got %q\nwant %q", got, tt.wantReplay)
				}
			}
			// An HTTP/2 client got the empty SETTINGS frame (server preface).
			_ = client.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			var first [9]byte
			_, rerr := io.ReadFull(client, first[:])
			isH2 := bytes.HasPrefix(tt.send, preface)
			if isH2 != (rerr == nil) || (isH2 && !bytes.Equal(first[:], h2cEmptySettings)) {
				t.Errorf("server preface: h2 %v, read %x, %v", isH2, first, rerr)
			}
		})
	}
}

// FuzzH2CSplit feeds look arbitrary client bytes: it must not panic, and
// what it hands over must replay every byte it read except at most one
// SETTINGS acknowledgement.
func FuzzH2CSplit(f *testing.F) {
	f.Add([]byte(http2.ClientPreface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
	f.Add(append([]byte(http2.ClientPreface), newFrameWriter().headers(1, true).bytes()...))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		defer client.Close()
		go func() {
			_, _ = client.Write(in)
			_, _ = io.Copy(io.Discard, client) // the server preface
		}()
		s := &h2cSplit{timeout: 5 * time.Millisecond, maxHeader: 4096}
		_, rc, err := s.look(server)
		server.Close()
		if err != nil || rc == nil {
			return
		}
		got := append(append([]byte(nil), rc.prefix...), rc.rest...)
		if !replays(in, got) {
			t.Fatalf("replay is not what was sent (less one ack):\n got %x\n  in %x", got, in)
		}
	})
}

// replays reports whether got is the start of in, or of in less one
// SETTINGS acknowledgement.
func replays(in, got []byte) bool {
	if bytes.HasPrefix(in, got) {
		return true
	}
	for i := 0; i+len(settingsAck) <= len(in); i++ {
		if bytes.Equal(in[i:i+len(settingsAck)], settingsAck) {
			less := append(bytes.Clone(in[:i]), in[i+len(settingsAck):]...)
			if bytes.HasPrefix(less, got) {
				return true
			}
		}
	}
	return false
}

// hpackField is a header field to encode.
func hpackField(name, value string) hpack.HeaderField {
	return hpack.HeaderField{Name: name, Value: value}
}
