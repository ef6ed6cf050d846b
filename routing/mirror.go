package routing

import (
	"context"
	"time"

	"google.golang.org/grpc/metadata"
)

// shadowBuffer is how many request messages may wait for a slow shadow
// backend; when it is full the copy is abandoned rather than slow the real
// call.
const shadowBuffer = 64

// shadowTimeout bounds a shadow call, which outlives the real call at most
// this long.
const shadowTimeout = 30 * time.Second

// shadow is the copy of one call sent to a mirror backend. The request pump
// offers it each request message without blocking; its goroutine sends them
// on and discards whatever the mirror answers.
type shadow struct {
	frames chan Frame
	closed bool
}

// startShadow opens the mirror call. It never fails the real call: if the
// mirror cannot be reached the copy is dropped. The shadow call has its own
// context, detached from the client's cancellation so that the copy is
// complete, and bounded by shadowTimeout.
func (d *Director) startShadow(ctx context.Context, sh *Shadow, method string, md metadata.MD) *shadow {
	s := &shadow{frames: make(chan Frame, shadowBuffer)}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shadowTimeout)
	stop := context.AfterFunc(d.base, cancel) // Close ends shadows at once
	sctx = metadata.NewOutgoingContext(sctx, md)
	d.shadows.Add(1)
	go func() {
		defer d.shadows.Done()
		defer stop()
		defer cancel()
		cs, err := sh.Conn.NewStream(sctx, &d.desc, method, d.callOpts...)
		if err != nil {
			drain(s.frames)
			return
		}
		for f := range s.frames {
			if err := cs.SendMsg(&f); err != nil {
				f.Free()
				drain(s.frames)
				cancel()
				return
			}
		}
		_ = cs.CloseSend()
		var f Frame
		for cs.RecvMsg(&f) == nil { // the mirror's answer is discarded
		}
		f.Free()
	}()
	return s
}

// offer hands the shadow a reference to the payload of f, without copying
// and without blocking. When the shadow cannot keep up, its copy is
// abandoned.
func (s *shadow) offer(f *Frame) {
	if s == nil || s.closed {
		return
	}
	f.data.Ref()
	select {
	case s.frames <- Frame{data: f.data}:
	default:
		f.data.Free()
		s.close() // too slow: the copy would be incomplete anyway
	}
}

// close ends the copied request (the client half-closed, or the copy was
// abandoned).
func (s *shadow) close() {
	if s == nil || s.closed {
		return
	}
	s.closed = true
	close(s.frames)
}

func drain(ch chan Frame) {
	for f := range ch {
		f.Free()
	}
}

// Close cancels the mirror calls still in flight and waits for them to
// end. Calls proxied after Close are not mirrored to a live backend: their
// shadows end at once.
func (d *Director) Close() {
	d.cancelBase()
	d.shadows.Wait()
}
