package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-dev/gatehouse/routing"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// gRPC-Web (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-WEB.md)
// on a shared listener: application/grpc-web[+proto] and its base64 form
// application/grpc-web-text[+proto], over HTTP/1.1 and HTTP/2, for unary
// and server-streaming calls (and client streams whose body the client
// sends whole). Messages cross as raw frames, never decoded: the call is
// proxied into the listener's own grpc.Server over the in-process
// connection, with the routing.Codec, as one bidi stream, so it passes the
// interceptor chain and the router like a native call.
//
// The response is HTTP 200 with the backend's headers, the messages as
// gRPC length-prefixed frames, and the status and trailers in a final
// frame whose flag byte has the 0x80 bit set, as HTTP/1-style header lines.
// A call that fails before its first message is answered trailers-only:
// grpc-status, grpc-message and grpc-status-details-bin in the HTTP
// headers and an empty body, as gRPC over HTTP/2 does.

const (
	grpcWebFrameData    = 0x00
	grpcWebFrameTrailer = 0x80
	grpcWebCompressed   = 0x01
)

func (b *browser) serveGRPCWeb(w http.ResponseWriter, r *http.Request) {
	ct := r.Header.Get("Content-Type")
	text, sub, _ := grpcWebMediaType(ct)
	if sub != "" && sub != "+proto" {
		// +json and other codecs: the messages cross as raw protobuf frames.
		http.Error(w, "gatehouse: unsupported gRPC-Web content type "+ct, http.StatusUnsupportedMediaType)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "gatehouse: gRPC-Web calls are POST", http.StatusMethodNotAllowed)
		return
	}
	respType := "application/grpc-web+proto"
	if text {
		respType = "application/grpc-web-text+proto"
	}
	gw := &grpcWebWriter{w: w, rc: http.NewResponseController(w), text: text, contentType: respType}

	method := r.URL.Path
	if !validMethodPath(method) {
		gw.finish(status.Newf(codes.Unimplemented, "gatehouse: malformed method name %q", method), nil)
		return
	}
	ctx := r.Context()
	if t := r.Header.Get("Grpc-Timeout"); t != "" {
		d, err := parseGRPCTimeout(t)
		if err != nil {
			gw.finish(status.Newf(codes.InvalidArgument, "gatehouse: malformed grpc-timeout %q", t), nil)
			return
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, callMetadata(r, false)))
	defer cancel()

	cs, err := b.conn.NewStream(ctx, &bidiDesc, method, grpc.ForceCodecV2(b.codec))
	if err != nil {
		gw.finish(status.Convert(err), nil)
		return
	}
	var body io.Reader = r.Body
	if text {
		body = &base64Reader{r: bufio.NewReader(r.Body)}
	}
	if st := b.sendGRPCWebRequest(cs, bufio.NewReader(body)); st != nil {
		cancel()
		_, _ = cs.Header() // wait for the call to end before the trailers are written
		gw.finish(st, nil)
		return
	}

	var f routing.Frame
	defer f.Free()
	for {
		err := cs.RecvMsg(&f)
		if err != nil {
			st := status.Convert(err)
			if err == io.EOF {
				st = status.New(codes.OK, "")
			}
			if !gw.started {
				hdr, _ := cs.Header()
				gw.header = hdr
			}
			gw.finish(st, cs.Trailer())
			return
		}
		if !gw.started {
			hdr, _ := cs.Header()
			gw.header = hdr
		}
		data, _ := b.codec.Marshal(&f) // takes the payload; f is empty again
		werr := gw.message(data.Materialize())
		data.Free()
		if werr != nil {
			return // the client is gone; cancel ends the call
		}
	}
}

// sendGRPCWebRequest sends every message frame of the request body to cs,
// then half-closes. It returns the status to answer with when the body is
// malformed or too large.
func (b *browser) sendGRPCWebRequest(cs grpc.ClientStream, body *bufio.Reader) *status.Status {
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(body, hdr[:]); err != nil {
			if err == io.EOF {
				break
			}
			return status.Newf(codes.Internal, "gatehouse: malformed gRPC-Web request: %v", err)
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if hdr[0]&grpcWebCompressed != 0 {
			return status.New(codes.Unimplemented, "gatehouse: compressed gRPC-Web messages are not supported")
		}
		if uint64(n) > uint64(b.maxMsg) {
			return status.Newf(codes.ResourceExhausted, "gatehouse: gRPC-Web message of %d bytes is larger than %d bytes", n, b.maxMsg)
		}
		// Memory grows with the bytes that arrive, not with the length the
		// client claims.
		var pb bytes.Buffer
		pb.Grow(int(min(n, 64<<10)))
		if _, err := io.CopyN(&pb, body, int64(n)); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return status.Newf(codes.Internal, "gatehouse: malformed gRPC-Web request: %v", err)
		}
		payload := pb.Bytes()
		if hdr[0]&grpcWebFrameTrailer != 0 {
			continue // clients send no trailers; ignore any
		}
		var f routing.Frame
		_ = b.codec.Unmarshal(bufferOf(payload), &f) // never fails for a Frame
		if err := cs.SendMsg(&f); err != nil {
			f.Free()
			if err == io.EOF {
				return nil // the call ended; RecvMsg returns its status
			}
			return status.Convert(err)
		}
	}
	_ = cs.CloseSend()
	return nil
}

// grpcWebWriter writes one gRPC-Web response.
type grpcWebWriter struct {
	w           http.ResponseWriter
	rc          *http.ResponseController
	text        bool
	contentType string
	header      metadata.MD // the backend's response headers
	started     bool        // headers written
}

func (g *grpcWebWriter) start() {
	if g.started {
		return
	}
	g.started = true
	h := g.w.Header()
	h.Set("Content-Type", g.contentType)
	h.Del("Content-Length")
	responseHeader(h, g.header)
	g.w.WriteHeader(http.StatusOK)
}

// message writes one message frame and flushes it.
func (g *grpcWebWriter) message(payload []byte) error {
	g.start()
	if err := g.frame(grpcWebFrameData, payload); err != nil {
		return err
	}
	return g.rc.Flush()
}

func (g *grpcWebWriter) frame(flag byte, payload []byte) error {
	buf := make([]byte, 5+len(payload))
	buf[0] = flag
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(payload)))
	copy(buf[5:], payload)
	if g.text {
		enc := make([]byte, base64.StdEncoding.EncodedLen(len(buf)))
		base64.StdEncoding.Encode(enc, buf)
		buf = enc
	}
	_, err := g.w.Write(buf)
	return err
}

// finish ends the response with st and the trailers: in a trailer frame,
// or, when nothing was written yet and the call failed, trailers-only in
// the HTTP headers.
func (g *grpcWebWriter) finish(st *status.Status, trailer metadata.MD) {
	lines := statusLines(st, trailer)
	if !g.started && st.Code() != codes.OK {
		h := g.w.Header()
		for _, kv := range lines {
			h.Add(kv[0], kv[1])
		}
		g.start()
		return
	}
	g.start()
	var sb strings.Builder
	for _, kv := range lines {
		sb.WriteString(kv[0])
		sb.WriteString(": ")
		sb.WriteString(kv[1])
		sb.WriteString("\r\n")
	}
	if g.frame(grpcWebFrameTrailer, []byte(sb.String())) == nil {
		_ = g.rc.Flush()
	}
}

// statusLines are the status and trailer metadata as header lines, keys in
// lower case, -bin values in base64.
func statusLines(st *status.Status, trailer metadata.MD) [][2]string {
	lines := [][2]string{{"grpc-status", strconv.Itoa(int(st.Code()))}}
	if m := st.Message(); m != "" {
		lines = append(lines, [2]string{"grpc-message", encodeGRPCMessage(m)})
	}
	if len(st.Proto().GetDetails()) > 0 {
		if b, err := proto.Marshal(st.Proto()); err == nil {
			lines = append(lines, [2]string{"grpc-status-details-bin", base64.RawStdEncoding.EncodeToString(b)})
		}
	}
	for k, vs := range trailer {
		if _, ok := outgoingHeader(k); !ok {
			continue
		}
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			lines = append(lines, [2]string{strings.ToLower(k), v})
		}
	}
	return lines
}

// encodeGRPCMessage percent-encodes a status message as gRPC requires:
// every byte outside printable ASCII, and '%'.
func encodeGRPCMessage(m string) string {
	const hex = "0123456789ABCDEF"
	var sb strings.Builder
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			sb.WriteByte(c)
			continue
		}
		sb.WriteByte('%')
		sb.WriteByte(hex[c>>4])
		sb.WriteByte(hex[c&0xf])
	}
	return sb.String()
}

// parseGRPCTimeout parses a grpc-timeout value: up to 8 digits and a unit.
func parseGRPCTimeout(s string) (time.Duration, error) {
	if len(s) < 2 || len(s) > 9 {
		return 0, errors.New("bad length")
	}
	// Digits only, as grpc-go's transport reads it: no sign.
	u, err := strconv.ParseUint(s[:len(s)-1], 10, 63)
	if err != nil {
		return 0, fmt.Errorf("bad value")
	}
	n := int64(u)
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, errors.New("bad unit")
	}
	if n > int64((1<<63-1)/unit) {
		return 1<<63 - 1, nil
	}
	return time.Duration(n) * unit, nil
}

// validMethodPath reports whether p looks like "/pkg.Service/Method".
func validMethodPath(p string) bool {
	if len(p) < 4 || p[0] != '/' {
		return false
	}
	i := strings.LastIndexByte(p, '/')
	return i > 1 && i < len(p)-1
}

// base64Reader decodes a grpc-web-text body: base64 in groups of four
// characters, so that segments padded on their own may follow each other.
type base64Reader struct {
	r   *bufio.Reader
	out []byte
	buf [3]byte
}

func (d *base64Reader) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		var in [4]byte
		n := 0
		for n < 4 {
			c, err := d.r.ReadByte()
			if err != nil {
				if err == io.EOF && n == 0 {
					return 0, io.EOF
				}
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return 0, err
			}
			if c == '\r' || c == '\n' || c == ' ' || c == '\t' {
				continue
			}
			in[n] = c
			n++
		}
		m, err := base64.StdEncoding.Decode(d.buf[:], in[:])
		if err != nil {
			return 0, fmt.Errorf("grpc-web-text: %w", err)
		}
		d.out = d.buf[:m]
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

// bufferOf wraps bytes that nobody else holds as a one-buffer slice (for
// routing.Codec.Unmarshal, which takes a reference to it).
func bufferOf(b []byte) mem.BufferSlice { return mem.BufferSlice{mem.SliceBuffer(b)} }
