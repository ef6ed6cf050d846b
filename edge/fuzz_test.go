package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"io"
	"testing"

	"github.com/gatehouse-dev/gatehouse/routing"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// recordingStream is a grpc.ClientStream that records the frames sent.
type recordingStream struct {
	grpc.ClientStream
	frames [][]byte
	closed bool
}

func (s *recordingStream) SendMsg(m any) error {
	f := m.(*routing.Frame)
	data, _ := routing.NewCodec().Marshal(f)
	s.frames = append(s.frames, data.Materialize())
	data.Free()
	return nil
}

func (s *recordingStream) CloseSend() error             { s.closed = true; return nil }
func (s *recordingStream) Context() context.Context     { return context.Background() }
func (s *recordingStream) Header() (metadata.MD, error) { return nil, nil }
func (s *recordingStream) Trailer() metadata.MD         { return nil }

func webFrame(flag byte, payload []byte) []byte {
	out := make([]byte, 5, 5+len(payload))
	out[0] = flag
	binary.BigEndian.PutUint32(out[1:], uint32(len(payload)))
	return append(out, payload...)
}

// FuzzGRPCWebDecode feeds any request body, binary or grpc-web-text, to the
// gRPC-Web request decoder: it never panics, sends only whole messages
// within the message limit, in the order and with the bytes the body
// framed them, and half-closes only when the body ended cleanly.
func FuzzGRPCWebDecode(f *testing.F) {
	const maxMsg = 1 << 10
	two := append(webFrame(0, []byte("hello")), webFrame(0, nil)...)
	f.Add(two, false)
	f.Add([]byte(base64.StdEncoding.EncodeToString(two)), true)
	f.Add([]byte(base64.StdEncoding.EncodeToString(webFrame(0, []byte("a")))+base64.StdEncoding.EncodeToString(webFrame(0, []byte("bc")))), true)
	f.Add(append(webFrame(0x80, []byte("grpc-status: 0\r\n")), webFrame(0, []byte("x"))...), false)
	f.Add(webFrame(1, []byte("compressed")), false)
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff}, false)
	f.Add(webFrame(0, bytes.Repeat([]byte("a"), maxMsg+1)), false)
	f.Add([]byte{0, 0, 0, 0, 9, 'a'}, false)
	f.Add([]byte("AAAA\r\nAAE=\n"), true)
	f.Add([]byte("!!!!"), true)
	f.Fuzz(func(t *testing.T, body []byte, text bool) {
		b := &browser{codec: routing.NewCodec(), maxMsg: maxMsg}
		var r io.Reader = bytes.NewReader(body)
		raw := body
		if text {
			d := &base64Reader{r: bufio.NewReader(bytes.NewReader(body))}
			decoded, err := io.ReadAll(&base64Reader{r: bufio.NewReader(bytes.NewReader(body))})
			if err != nil {
				decoded = nil // compared only on success below
			}
			raw, r = decoded, d
		}
		cs := &recordingStream{}
		st := b.sendGRPCWebRequest(cs, bufio.NewReader(r))
		total := 0
		for _, fr := range cs.frames {
			if len(fr) > maxMsg {
				t.Fatalf("sent a %d-byte message over the %d limit", len(fr), maxMsg)
			}
			total += len(fr)
		}
		if st != nil {
			if cs.closed {
				t.Fatalf("half-closed after a refusal %v", st)
			}
			return
		}
		if !cs.closed {
			t.Fatal("body accepted but not half-closed")
		}
		// Accepted: the data frames of raw, exactly.
		var want [][]byte
		for p := raw; len(p) > 0; {
			n := int(binary.BigEndian.Uint32(p[1:5]))
			if p[0]&grpcWebFrameTrailer == 0 {
				want = append(want, p[5:5+n])
			}
			p = p[5+n:]
		}
		if len(want) != len(cs.frames) {
			t.Fatalf("sent %d messages, the body framed %d", len(cs.frames), len(want))
		}
		for i := range want {
			if !bytes.Equal(want[i], cs.frames[i]) {
				t.Fatalf("message %d: sent %q, framed %q", i, cs.frames[i], want[i])
			}
		}
	})
}

// FuzzGRPCTimeout checks the grpc-timeout parser of gRPC-Web calls: no
// panic, never a negative duration, and every value it accepts is one that
// grpc-go's own transport accepts as well (up to 8 digits and a unit).
func FuzzGRPCTimeout(f *testing.F) {
	for _, s := range []string{"1S", "100m", "99999999H", "0n", "1x", "", "S", "-1S", "123456789S", "+1S", " 1S", "1\x00S"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseGRPCTimeout(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("parseGRPCTimeout(%q) = %v", s, d)
		}
		if len(s) > 9 {
			t.Fatalf("parseGRPCTimeout(%q) accepted more than 8 digits", s)
		}
		digits := s[:len(s)-1]
		for _, c := range digits {
			if c < '0' || c > '9' {
				t.Fatalf("parseGRPCTimeout(%q) accepted a non-digit %q", s, c)
			}
		}
	})
}
