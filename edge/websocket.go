package edge

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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
//     message is the request and the gateway half-closes after it.
//   - gateway to client: each text message is one response message in
//     JSON, in the REST JSON options in force.
//   - the final status is the close frame: 1000 (normal closure) for OK,
//     else 4000 + the gRPC code (4005 NOT_FOUND, 4003 INVALID_ARGUMENT,
//     ...) with the status message as the reason, cut to fit 123 bytes.
//   - the client closing the socket before the end cancels the call.
//
// The call's metadata comes from the upgrade request's headers (and its
// HTTP method, path and query as REST metadata), so auth, quotas, routes
// and audit apply as to any call. A cross-origin upgrade needs an origin
// the CORS policy in force allows; same-origin upgrades always pass.

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
	return func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		b.serveWebSocket(w, r, md, full)
	}
}

// originAllowed reports whether a WebSocket upgrade may come from its
// Origin: none or the same host, or one the CORS policy in force allows.
func (b *browser) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if u, err := url.Parse(origin); err == nil && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	p := b.cors
	if rp, ok := b.routeCORS(r, r.Method); ok {
		p = rp
	}
	return p.allows(origin)
}

func (b *browser) serveWebSocket(w http.ResponseWriter, r *http.Request, md protoreflect.MethodDescriptor, full string) {
	if !b.originAllowed(r) {
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
	cs, err := b.conn.NewStream(ctx, &bidiDesc, full, grpc.ForceCodecV2(b.codec))
	if err != nil {
		closeWithStatus(c, status.Convert(err))
		return
	}
	var local localStatus
	pumpDone := make(chan struct{})
	go func() {
		defer close(pumpDone)
		b.pumpSocketRequests(ctx, c, cs, md, &local, cancel)
	}()

	mo, _ := b.jsonOptions()
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
	closeWithStatus(c, st)
	<-pumpDone
}

// pumpSocketRequests reads request messages from the socket and sends them
// on cs until the client half-closes, closes the socket or sends a bad
// message (then local holds the status and the call is cancelled).
func (b *browser) pumpSocketRequests(ctx context.Context, c *websocket.Conn, cs grpc.ClientStream, md protoreflect.MethodDescriptor, local *localStatus, cancel context.CancelFunc) {
	_, um := b.jsonOptions()
	// Reads end when the socket closes, not when the call does: a cancelled
	// read context would close the socket before the final status is sent.
	readCtx := context.WithoutCancel(ctx)
	sending := true
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
		if len(data) == 0 {
			_ = cs.CloseSend()
			sending = false
			continue
		}
		req := dynamicpb.NewMessage(md.Input())
		if err := um.Unmarshal(data, req); err != nil {
			local.set(status.Newf(codes.InvalidArgument, "gatehouse: request message: %v", err))
			cancel()
			return
		}
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

// closeWithStatus ends the socket with the call's status as its close
// frame.
func closeWithStatus(c *websocket.Conn, st *status.Status) {
	code := websocket.StatusNormalClosure
	reason := ""
	if st.Code() != codes.OK {
		code = websocket.StatusCode(4000 + int(st.Code()))
		reason = truncateUTF8(st.Message(), 123)
	}
	if err := c.Close(code, reason); err != nil && !errors.Is(err, context.Canceled) {
		_ = c.CloseNow()
	}
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
