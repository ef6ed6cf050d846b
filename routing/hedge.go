package routing

import (
	"context"
	"io"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/grpccode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Hedging: grpc-go has no hedging policy, so the director does it, for
// unary-shaped calls only. The director cannot tell a unary method from raw
// frames, so a route declares its calls idempotent and unary by setting
// retry.hedge_delay, and the director checks the shape of each call: it
// reads the first request message and waits for the half-close. One message
// then half-close is unary-shaped and hedged: a first attempt at once, a
// second after hedge_delay if the first has not answered (or at once when
// the first fails with a retryable code), the first answer (OK or a code
// not in retry.on) wins and the other attempt is cancelled. Any other shape
// is proxied as a plain stream, with the messages already read sent first.
// A streaming method whose client waits for a response after its first
// message must not be on a hedged route: it would wait for the half-close.

// hedgeDelay is t's hedge delay, 0 when the route does not hedge.
func hedgeDelay(t Target) time.Duration {
	hd := t.Config.GetRetry().GetHedgeDelay()
	if hd == nil {
		return 0
	}
	return hd.AsDuration()
}

// hedgeResult is one hedged attempt's complete answer.
type hedgeResult struct {
	header, trailer metadata.MD
	resp            Frame
	hasResp         bool
	err             error // nil for OK
}

// hedge proxies one call on a hedged route.
func (d *Director) hedge(ctx context.Context, ss grpc.ServerStream, t Target, method string, sh *shadow) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var req, next Frame
	defer req.Free()
	defer next.Free()
	if err := ss.RecvMsg(&req); err != nil {
		sh.close()
		if err == io.EOF {
			return d.streamAfter(ctx, cancel, ss, t, method, nil, true, nil)
		}
		return statusError(err)
	}
	sh.offer(&req)
	switch err := ss.RecvMsg(&next); {
	case err == nil:
		sh.offer(&next)
		return d.streamAfter(ctx, cancel, ss, t, method, []*Frame{&req, &next}, false, sh)
	case err != io.EOF:
		sh.close()
		return statusError(err)
	}
	sh.close()

	retryable := map[codes.Code]bool{codes.Unavailable: true}
	if on := t.Config.GetRetry().GetOn(); len(on) > 0 {
		retryable = map[codes.Code]bool{}
		for _, name := range on {
			if c, ok := grpccode.Parse(name); ok {
				retryable[c] = true
			}
		}
	}
	results := make(chan hedgeResult, 2)
	cancels := make([]context.CancelFunc, 0, 2)
	start := func() {
		actx, acancel := context.WithCancel(ctx)
		cancels = append(cancels, acancel)
		f := Frame{data: req.data}
		req.data.Ref()
		go func() { results <- d.unaryAttempt(actx, t, method, &f) }()
	}
	fire := make(chan struct{}, 1)
	stop := d.policies.clock.AfterFunc(hedgeDelay(t), func() { fire <- struct{}{} })
	defer stop()

	start()
	pending := 1
	var win hedgeResult
	for pending > 0 {
		select {
		case <-fire:
			if len(cancels) == 1 {
				start()
				pending++
			}
			continue
		case r := <-results:
			pending--
			win.resp.Free()
			win = r
		}
		if win.err == nil || !retryable[status.Code(win.err)] {
			break
		}
		if len(cancels) == 1 {
			start() // the first failed before the delay: try the second now
			pending++
		}
	}
	for _, c := range cancels {
		c()
	}
	for ; pending > 0; pending-- {
		r := <-results
		r.resp.Free()
	}
	defer win.resp.Free()
	if win.header != nil {
		if err := ss.SendHeader(sanitizeResponse(win.header)); err != nil {
			return statusError(err)
		}
	}
	if win.hasResp {
		if err := ss.SendMsg(&win.resp); err != nil {
			return statusError(err)
		}
	}
	ss.SetTrailer(sanitizeResponse(win.trailer))
	return statusError(win.err)
}

// unaryAttempt makes one whole unary attempt with req.
func (d *Director) unaryAttempt(ctx context.Context, t Target, method string, req *Frame) hedgeResult {
	var r hedgeResult
	cs, err := t.Conn.NewStream(ctx, &d.desc, method, d.callOpts...)
	if err != nil {
		req.Free()
		r.err = err
		return r
	}
	if err := cs.SendMsg(req); err == nil {
		_ = cs.CloseSend()
	}
	req.Free()
	err = cs.RecvMsg(&r.resp)
	if err == nil {
		r.hasResp = true
		var extra Frame
		err = cs.RecvMsg(&extra) // io.EOF, or the status
		extra.Free()
	}
	if err != io.EOF {
		r.err = err
	}
	r.header, _ = cs.Header()
	r.trailer = cs.Trailer()
	if ctx.Err() != nil && r.err == nil {
		r.err = status.FromContextError(ctx.Err()).Err()
	}
	return r
}

// streamAfter proxies a call as a stream after its first messages were
// read: it sends prefix, then (unless the client already half-closed)
// pumps the rest. It takes over the prefix frames.
func (d *Director) streamAfter(ctx context.Context, cancel context.CancelFunc, ss grpc.ServerStream, t Target, method string, prefix []*Frame, halfClosed bool, sh *shadow) error {
	cs, err := t.Conn.NewStream(ctx, &d.desc, method, d.callOpts...)
	if err != nil {
		sh.close()
		return statusError(err)
	}
	reqErr := make(chan error, 1)
	for _, f := range prefix {
		if err := cs.SendMsg(f); err != nil {
			sh.close()
			if err != io.EOF {
				return statusError(err)
			}
			reqErr <- nil
			return forwardResponses(ss, cs, reqErr)
		}
	}
	if halfClosed {
		reqErr <- cs.CloseSend()
		return forwardResponses(ss, cs, reqErr)
	}
	go forwardRequests(ss, cs, reqErr, cancel, sh)
	return forwardResponses(ss, cs, reqErr)
}
