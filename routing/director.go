package routing

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/clock"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

// Director proxies calls to the backends its Resolver picks, without decoding
// them. Install [Director.Handler] as the gateway server's
// grpc.UnknownServiceHandler, on a server created with
// grpc.ForceServerCodecV2([NewCodec]()). A Director is safe for concurrent
// use.
type Director struct {
	resolver Resolver
	opts     options
	// callOpts are the call options of every backend stream: the configured
	// ones, then the Frame codec.
	callOpts []grpc.CallOption
	// desc describes every backend stream: whatever the call kind, a call is
	// proxied as one bidi stream, which carries unary and half-streaming
	// calls unchanged on the wire.
	desc grpc.StreamDesc
	// shadows counts mirror calls in flight (see mirror.go); base ends them
	// when the director is closed.
	shadows    sync.WaitGroup
	base       context.Context
	cancelBase context.CancelFunc
	// policies applies routes' timeouts and concurrency caps (policy.go).
	policies policies
}

// NewDirector returns a Director that sends each call where r says.
func NewDirector(r Resolver, opts ...Option) *Director {
	o := options{
		forwardedFor: true,
		clock:        clock.Real{},
	}
	for _, opt := range opts {
		opt.apply(&o)
	}
	callOpts := make([]grpc.CallOption, 0, 1+len(o.callOptions))
	callOpts = append(callOpts, o.callOptions...)
	callOpts = append(callOpts, grpc.ForceCodecV2(NewCodec())) // last, so it wins
	base, cancelBase := context.WithCancel(context.Background())
	return &Director{
		policies:   policies{clock: o.clock},
		base:       base,
		cancelBase: cancelBase,
		resolver:   r,
		opts:       o,
		callOpts:   callOpts,
		desc: grpc.StreamDesc{
			StreamName:    "gatehouse.proxy",
			ServerStreams: true,
			ClientStreams: true,
		},
	}
}

// Handler proxies the call on ss to the backend the Resolver picks. Its
// signature is grpc.StreamHandler, for grpc.UnknownServiceHandler.
//
// The client's metadata, minus hop-by-hop, reserved and strip keys and with
// x-forwarded-for set from the client's source (see WithForwardedFor), goes to the backend (the map given to Resolve is
// sanitised in place once Resolve returns; a Resolver must not keep it).
// Messages are pumped both ways until the backend ends the call; the client's
// half-close becomes the backend's CloseSend. The backend's headers,
// trailers, status code, message and details reach the client as sent, minus
// reserved keys, also when the backend sends no message at all. Cancellation
// and deadlines propagate both ways; context errors become CANCELLED or
// DEADLINE_EXCEEDED, never INTERNAL. A Resolver error is returned unchanged.
//
// The request pump runs in its own goroutine and ends with the call: either
// before Handler returns or, when the backend ends the call while the client
// is still sending, as soon as grpc-go tears the server stream down after
// Handler returns (a blocked ServerStream.RecvMsg cannot be unblocked any
// other way).
func (d *Director) Handler(_ any, ss grpc.ServerStream) error {
	ctx := ss.Context()
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "routing: no method on the server stream")
	}
	md, _ := metadata.FromIncomingContext(ctx) // a copy, ours to modify
	t, err := d.resolver.Resolve(ctx, method, md)
	if err != nil {
		return err
	}
	callinfo.From(ctx).SetRoute(t.Route, t.Backend)
	if t.Conn == nil {
		return status.Errorf(codes.Unavailable, "routing: no connection to backend %q", t.Backend)
	}

	ctx, pc, err := d.policies.begin(ctx, t) // route cap, deadline, idle timeout
	if err != nil {
		return err
	}
	ss = pc.wrap(ss)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	outMD := d.sanitizeRequest(ctx, md)
	t.Metadata.Apply(outMD)
	outCtx := metadata.NewOutgoingContext(ctx, outMD)
	if t.Method != "" {
		method = t.Method
	}
	var sh *shadow
	if t.Mirror != nil {
		sh = d.startShadow(ctx, t.Mirror, method, outMD.Copy())
	}
	if hedgeDelay(t) > 0 {
		return pc.end(d.hedge(outCtx, ss, t, method, sh))
	}
	cs, err := t.Conn.NewStream(outCtx, &d.desc, method, d.callOpts...)
	if err != nil {
		sh.close()
		return pc.end(statusError(err))
	}

	// reqErr receives the one result of the request pump: nil once the
	// client half-closed (or the backend stopped accepting messages), else
	// the error that ended it.
	reqErr := make(chan error, 1)
	go forwardRequests(ss, cs, reqErr, cancel, sh)
	return pc.end(forwardResponses(ss, cs, reqErr))
}

// forwardRequests pumps messages from the client (ss) to the backend (cs)
// until the client half-closes or either side fails, then sends exactly one
// value on done. On failure it cancels the backend stream after reporting,
// so that forwardResponses, blocked in cs.RecvMsg, finds the cause on done.
func forwardRequests(ss grpc.ServerStream, cs grpc.ClientStream, done chan<- error, cancel context.CancelFunc, sh *shadow) {
	var f Frame
	defer f.Free()
	defer sh.close()
	for {
		if err := ss.RecvMsg(&f); err != nil {
			if err == io.EOF {
				done <- cs.CloseSend() // always nil
				return
			}
			done <- err
			cancel()
			return
		}
		sh.offer(&f)
		if err := cs.SendMsg(&f); err != nil {
			if err == io.EOF {
				// The backend ended the call; cs.RecvMsg returns its status.
				done <- nil
				return
			}
			done <- err
			cancel()
			return
		}
	}
}

// forwardResponses pumps messages from the backend (cs) to the client (ss)
// until the backend ends the call, forwards headers and trailers, and returns
// the call's status.
func forwardResponses(ss grpc.ServerStream, cs grpc.ClientStream, reqErr <-chan error) error {
	var f Frame
	defer f.Free()
	// The backend's headers go to the client with the first message (one
	// write instead of two), or after headerDelay if no message follows
	// by then: a stream may send headers and then nothing for a long time,
	// and its client must see them. Header blocks until the headers or the
	// end of the call; it returns nil for a trailers-only response, which
	// finish keeps trailers-only.
	var lh *lazyHeader
	if md, err := cs.Header(); err == nil && md != nil {
		if err := ss.SetHeader(sanitizeResponse(md)); err != nil {
			return statusError(err)
		}
		lh = startLazyHeader(ss)
	}
	first := true
	for {
		if err := cs.RecvMsg(&f); err != nil {
			lh.stop()
			return finish(ss, cs, reqErr, err, lh != nil)
		}
		if first {
			first = false
			lh.stop() // the headers go with this message
		}
		if err := ss.SendMsg(&f); err != nil {
			return statusError(err)
		}
	}
}

// headerDelay is how long the backend's headers may wait for the first
// message to travel with.
const headerDelay = 10 * time.Millisecond

// lazyHeader sends the headers set on a server stream if no message has
// gone out within headerDelay. Its mutex keeps that SendHeader and the
// pump's first SendMsg from running at once.
type lazyHeader struct {
	mu    sync.Mutex
	ss    grpc.ServerStream
	done  bool
	timer *time.Timer
}

func startLazyHeader(ss grpc.ServerStream) *lazyHeader {
	h := &lazyHeader{ss: ss}
	h.mu.Lock()
	h.timer = time.AfterFunc(headerDelay, h.fire)
	h.mu.Unlock()
	return h
}

func (h *lazyHeader) fire() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.done {
		h.done = true
		_ = h.ss.SendHeader(nil) // the headers set; fails only if the client is gone
	}
}

// stop makes sure the timer sends nothing from now on (waiting for a
// SendHeader in progress). A nil lazyHeader does nothing.
func (h *lazyHeader) stop() {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.done = true
	h.timer.Stop()
	h.mu.Unlock()
}

// finish ends a call whose backend stream returned recvErr from RecvMsg.
func finish(ss grpc.ServerStream, cs grpc.ClientStream, reqErr <-chan error, recvErr error, headerSet bool) error {
	if !headerSet {
		// A response without messages may still carry headers. Header
		// returns nil for a trailers-only response, which stays one.
		if md, _ := cs.Header(); md != nil {
			_ = ss.SendHeader(sanitizeResponse(md)) // fails only if the client is gone
		}
	}
	ss.SetTrailer(sanitizeResponse(cs.Trailer()))
	select {
	case err := <-reqErr:
		// The request pump failed first (client cancelled, message too
		// large, ...); the backend error is the consequence, not the cause.
		if err != nil {
			return statusError(err)
		}
	default:
	}
	if recvErr == io.EOF {
		return nil
	}
	return statusError(recvErr)
}

// statusError returns err as a gRPC status error: status errors unchanged
// (code, message and details), context errors as CANCELLED or
// DEADLINE_EXCEEDED, anything else as UNKNOWN.
func statusError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Unknown, err.Error())
}
