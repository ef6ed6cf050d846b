package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/gatehouse-dev/gatehouse/transcode"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Streaming calls over WebSocket. A WebSocket upgrade (GET) on a streaming
// method's REST path (a google.api.http rule's path, or
// /pkg.Service/Method) opens the call; the protocol is:
//
//   - client to gateway: each text (or binary) message is one request
//     message in JSON; an empty message half-closes the request stream.
//     For a method that takes one request (server streaming), the first
//     message is the request and the gateway half-closes after it; an
//     empty first message sends the request built from the path alone.
//   - path parameters: the variables of the path template the upgrade
//     matched (parent in /v1/{parent=shelves/*}/books:watch) are set in
//     the first request message, as grpc-gateway sets path fields in a
//     REST body; a first message that sets such a field itself is refused
//     (INVALID_ARGUMENT), as a REST body is.
//   - gateway to client: each text message is one response message in
//     JSON, in the REST JSON options in force.
//   - the final status: on success the close frame 1000 (normal closure).
//     On failure, one last text message {"error": google.rpc.Status in
//     JSON, details included} (the form of an NDJSON stream's error
//     line), then the close frame 4000 + the gRPC code (4005 NOT_FOUND,
//     4003 INVALID_ARGUMENT, ...) with the status message as the reason,
//     cut to fit 123 bytes. So a client that sees a close code of 4001 or
//     more takes the last message it received as the status.
//   - the client closing the socket before the end cancels the call.
//
// The call's metadata comes from the upgrade request's headers (and its
// HTTP method, path and query as REST metadata, so a token a route reads
// from the query works), so auth, quotas, routes and audit apply as to any
// call. A cross-origin upgrade needs an origin the CORS policy in force
// (the route's, else the listener's) allows; same-origin upgrades always
// pass.

func isWebSocketUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet &&
		strings.EqualFold(r.Header.Get("Upgrade"), "websocket") &&
		headerHasToken(r.Header, "Connection", "upgrade")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func (b *browser) socketHandler(md protoreflect.MethodDescriptor, full string) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		b.serveWebSocket(w, r, md, full, params)
	}
}

// originAllowed reports whether a WebSocket upgrade may come from its
// Origin: none or the same host, or one the CORS policy in force allows:
// that of the route that takes method full, else the listener's.
func (b *browser) originAllowed(r *http.Request, full string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if u, err := url.Parse(origin); err == nil && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	p := b.cors
	if rp, ok := b.routeCORS(r, r.Method, full); ok {
		p = rp
	}
	return p.allows(origin)
}

func (b *browser) serveWebSocket(w http.ResponseWriter, r *http.Request, md protoreflect.MethodDescriptor, full string, params map[string]string) {
	if !b.originAllowed(r, full) {
		writeStatus(w, &runtime.JSONPb{}, http.StatusForbidden,
			status.Newf(codes.PermissionDenied, "gatehouse: origin %q may not open a WebSocket here", r.Header.Get("Origin")))
		return
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(r.Context(), callMetadata(r, true)))
	defer cancel()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true}) // origin checked above
	if err != nil {
		return // Accept answered the request
	}
	c.SetReadLimit(int64(b.maxMsg))
	mo, _ := b.jsonOptions()
	cs, err := b.conn.NewStream(ctx, &bidiDesc, full, grpc.ForceCodecV2(b.codec))
	if err != nil {
		closeWithStatus(r.Context(), c, status.Convert(err), mo)
		return
	}
	var local localStatus
	pumpDone := make(chan struct{})
	go func() {
		defer close(pumpDone)
		b.pumpSocketRequests(ctx, c, cs, md, params, &local, cancel)
	}()

	var st *status.Status
	for {
		resp := dynamicpb.NewMessage(md.Output())
		if err := cs.RecvMsg(resp); err != nil {
			if err == io.EOF {
				st = status.New(codes.OK, "")
			} else {
				st = status.Convert(err)
			}
			break
		}
		data, err := mo.Marshal(resp)
		if err != nil {
			st = status.Newf(codes.Internal, "gatehouse: marshal response: %v", err)
			break
		}
		if err := c.Write(ctx, websocket.MessageText, data); err != nil {
			st = status.FromContextError(context.Canceled)
			break
		}
	}
	if ls := local.get(); ls != nil {
		st = ls // the gateway ended the call on a bad request message
	}
	cancel()
	closeWithStatus(r.Context(), c, st, mo)
	<-pumpDone
}

// pumpSocketRequests reads request messages from the socket and sends them
// on cs until the client half-closes, closes the socket or sends a bad
// message (then local holds the status and the call is cancelled). The
// path parameters are set in the first request message.
func (b *browser) pumpSocketRequests(ctx context.Context, c *websocket.Conn, cs grpc.ClientStream, md protoreflect.MethodDescriptor, params map[string]string, local *localStatus, cancel context.CancelFunc) {
	_, um := b.jsonOptions()
	// Reads end when the socket closes, not when the call does: a cancelled
	// read context would close the socket before the final status is sent.
	readCtx := context.WithoutCancel(ctx)
	sending, first := true, true
	for {
		_, data, err := c.Read(readCtx)
		if err != nil {
			// The client closed the socket (or the gateway did, at the
			// end): a call still running is cancelled.
			cancel()
			return
		}
		if !sending {
			continue
		}
		if len(data) == 0 && !(first && !md.IsStreamingClient()) {
			_ = cs.CloseSend()
			sending = false
			continue
		}
		req := dynamicpb.NewMessage(md.Input())
		if len(data) > 0 {
			if err := um.Unmarshal(data, req); err != nil {
				local.set(status.Newf(codes.InvalidArgument, "gatehouse: request message: %v", err))
				cancel()
				return
			}
		}
		if first && len(params) > 0 {
			if err := setPathParams(req, params); err != nil {
				local.set(status.Newf(codes.InvalidArgument, "gatehouse: %v", err))
				cancel()
				return
			}
		}
		first = false
		if err := cs.SendMsg(req); err != nil {
			sending = false // the call ended; RecvMsg has its status
			continue
		}
		if !md.IsStreamingClient() {
			_ = cs.CloseSend()
			sending = false
		}
	}
}

// setPathParams sets a WebSocket call's path parameters in its first
// request message. A field the message sets already is refused, as REST
// refuses a field set by both the path and the body (transcode).
func setPathParams(req protoreflect.Message, params map[string]string) error {
	for name := range params {
		if messageHasField(req, name) {
			return fmt.Errorf("field %q is set by both the path and the message", name)
		}
	}
	return transcode.PopulateParams(req, params, nil)
}

// messageHasField reports whether m sets the field at path ("book.id",
// proto names).
func messageHasField(m protoreflect.Message, path string) bool {
	parts := strings.Split(path, ".")
	for i, p := range parts {
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(p))
		if fd == nil || !m.Has(fd) {
			return false
		}
		if i == len(parts)-1 {
			return true
		}
		if fd.Message() == nil || fd.IsList() || fd.IsMap() {
			return false
		}
		m = m.Get(fd).Message()
	}
	return false
}

// localStatus is a status the gateway decided on, set by the request pump.
type localStatus struct {
	mu sync.Mutex
	st *status.Status
}

func (l *localStatus) set(st *status.Status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.st == nil {
		l.st = st
	}
}

func (l *localStatus) get() *status.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

// closeWithStatus ends the socket with the call's status: for a failure,
// a last text message {"error": google.rpc.Status} (details included) and
// the close frame 4000 + code; for success, the close frame 1000. The
// status message is written under ctx, the request's, with a bound of its
// own, since the call's context is over by now.
func closeWithStatus(ctx context.Context, c *websocket.Conn, st *status.Status, mo protojson.MarshalOptions) {
	code := websocket.StatusNormalClosure
	reason := ""
	if st.Code() != codes.OK {
		code = websocket.StatusCode(4000 + int(st.Code()))
		reason = truncateUTF8(st.Message(), 123)
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusWriteTimeout)
		err := c.Write(wctx, websocket.MessageText, statusMessage(st, mo))
		cancel()
		if err != nil {
			_ = c.CloseNow() // the client is gone, or does not read
			return
		}
	}
	if err := c.Close(code, reason); err != nil && !errors.Is(err, context.Canceled) {
		_ = c.CloseNow()
	}
}

// statusWriteTimeout bounds the write of a WebSocket call's final status
// message.
const statusWriteTimeout = 5 * time.Second

// statusMessage is a failed call's last WebSocket message: {"error":
// google.rpc.Status}. Details whose type neither the binary nor a runtime
// schema knows are left out rather than losing the status.
func statusMessage(st *status.Status, mo protojson.MarshalOptions) []byte {
	mo.EmitUnpopulated = false
	data, err := mo.Marshal(st.Proto())
	if err != nil {
		data, err = protojson.Marshal(st.Proto())
	}
	if err != nil {
		p := proto.Clone(st.Proto()).(*spb.Status)
		p.Details = nil
		data, _ = protojson.Marshal(p)
	}
	var out bytes.Buffer
	out.WriteString(`{"error":`)
	if json.Compact(&out, data) != nil { // protojson varies its spacing; compact is stable
		out.Write(data)
	}
	out.WriteByte('}')
	return out.Bytes()
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
