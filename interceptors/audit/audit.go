package audit

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	trail "github.com/gatehouse-dev/gatehouse/audit"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

// Sink is where records go; *trail.Sink is one. Write waits until the
// record is written and says whether it was; Submit queues it without
// waiting; Healthy reports whether the sink keeps up. None may block for
// long.
type Sink interface {
	Write(rec *trail.Record) error
	Submit(rec *trail.Record) bool
	Healthy() bool
}

var _ Sink = (*trail.Sink)(nil)

// errUnavailable is what a client gets when its call cannot be audited and
// the gateway fails closed.
var errUnavailable = status.Error(codes.Unavailable, "gatehouse: the audit trail is unavailable")

// errPanicked stands for the outcome of a call whose handler panicked.
var errPanicked = status.Error(codes.Internal, "panic")

// StreamServerInterceptor returns a stream server interceptor that records
// each call in sink when it ends.
func StreamServerInterceptor(sink Sink, opts ...Option) grpc.StreamServerInterceptor {
	a := &auditor{options: evaluate(opts), sink: sink}
	a.redactor = newRedactor(a.redact)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		if a.skip(info.FullMethod) {
			return handler(srv, ss)
		}
		start := a.now()
		ctx, ci := callinfo.With(ss.Context())
		if a.failClosed && !sink.Healthy() {
			return a.refuse(ctx, ci, info.FullMethod, start)
		}
		w := &serverStream{ServerStream: ss, ctx: ctx, a: a, method: info.FullMethod}
		panicked := true
		defer func() {
			outcome := err
			if panicked {
				outcome = errPanicked
			}
			w.mu.Lock()
			captured := w.captured
			w.mu.Unlock()
			if rerr := a.record(ctx, ci, info.FullMethod, start, outcome, captured); rerr != nil && !panicked {
				err = rerr
			}
		}()
		err = handler(srv, w)
		panicked = false
		return err
	}
}

// UnaryServerInterceptor returns a unary server interceptor that records
// each call in sink when it ends.
func UnaryServerInterceptor(sink Sink, opts ...Option) grpc.UnaryServerInterceptor {
	a := &auditor{options: evaluate(opts), sink: sink}
	a.redactor = newRedactor(a.redact)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		if a.skip(info.FullMethod) {
			return handler(ctx, req)
		}
		start := a.now()
		ctx, ci := callinfo.With(ctx)
		if a.failClosed && !sink.Healthy() {
			return nil, a.refuse(ctx, ci, info.FullMethod, start)
		}
		panicked := true
		defer func() {
			outcome := err
			if panicked {
				outcome = errPanicked
			}
			var captured map[string]any
			if m, ok := req.(proto.Message); ok {
				route, _ := ci.Route()
				captured = a.capture(route, m)
			}
			if rerr := a.record(ctx, ci, info.FullMethod, start, outcome, captured); rerr != nil && !panicked {
				resp, err = nil, rerr
			}
		}()
		resp, err = handler(ctx, req)
		panicked = false
		return resp, err
	}
}

type auditor struct {
	*options
	sink     Sink
	redactor *redactor
}

// refuse answers a call that cannot be audited, and tries to record that.
func (a *auditor) refuse(ctx context.Context, ci *callinfo.Info, method string, start time.Time) error {
	ci.SetDecision(callinfo.Decision{Denied: true, By: "audit"})
	a.sink.Submit(a.build(ctx, ci, method, start, errUnavailable, nil))
	return errUnavailable
}

// record writes the record of a call; an error means the call must fail.
func (a *auditor) record(ctx context.Context, ci *callinfo.Info, method string, start time.Time, outcome error, captured map[string]any) error {
	rec := a.build(ctx, ci, method, start, outcome, captured)
	if !a.failClosed {
		a.sink.Submit(rec)
		return nil
	}
	amend := *rec // the sink owns rec once it has it
	if err := a.sink.Write(rec); err != nil {
		// The backend answered, but the client gets UNAVAILABLE instead:
		// the trail must say so, after the call's own record if that is
		// still written once the sink catches up (it may be).
		amend.Decision = trail.Decision{Allowed: false, By: "audit"}
		amend.Outcome.Code = codes.Unavailable.String()
		amend.Time = a.now().UTC()
		a.sink.Submit(&amend)
		return errUnavailable
	}
	return nil
}

func (a *auditor) build(ctx context.Context, ci *callinfo.Info, method string, start time.Time, outcome error, captured map[string]any) *trail.Record {
	end := a.now()
	route, backend := ci.Route()
	p := ci.Principal()
	if p.Subject == "" && p.Credential == "" {
		p = callinfo.PrincipalFrom(ctx)
	}
	d := ci.Decision()
	return &trail.Record{
		Time:      end.UTC(),
		Principal: trail.Principal{Subject: p.Subject, Credential: p.Credential, KeyID: keyID(p)},
		Method:    method,
		Route:     route,
		Backend:   backend,
		Request:   captured,
		Peer:      callinfo.ClientAddr(ctx),
		RequestID: a.requestID(ctx),
		TraceID:   a.traceID(ctx),
		Decision:  trail.Decision{Allowed: !d.Denied, By: d.By},
		Outcome: trail.Outcome{
			Code:       callinfo.Code(outcome).String(),
			DurationMS: float64(end.Sub(start)) / float64(time.Millisecond),
		},
	}
}

// keyID returns the API key identity of p, never the key itself: the
// subject of a principal that authenticated with an API key, whose
// credential is "apikey:<set>" (interceptors/auth sets the key's id as the
// subject). Other principals have none.
func keyID(p callinfo.Principal) string {
	if strings.HasPrefix(p.Credential, "apikey:") {
		return p.Subject
	}
	return ""
}

// capture returns the fields the route captures from m, nil when none.
func (a *auditor) capture(route string, m proto.Message) map[string]any {
	paths := a.options.capture[route]
	if len(paths) == 0 || m == nil {
		return nil
	}
	return a.redactor.capture(m.ProtoReflect(), paths)
}

// decoder is a raw request frame that can decode into a message.
type decoder interface {
	DecodeInto(m proto.Message) error
}

// serverStream captures the configured fields of the first request.
type serverStream struct {
	grpc.ServerStream
	ctx    context.Context
	a      *auditor
	method string

	mu       sync.Mutex
	seen     bool
	captured map[string]any
}

func (s *serverStream) Context() context.Context { return s.ctx }

func (s *serverStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen {
		return nil
	}
	s.seen = true
	route, _ := callinfo.From(s.ctx).Route()
	if len(s.a.options.capture[route]) == 0 {
		return nil
	}
	switch m := m.(type) {
	case proto.Message:
		s.captured = s.a.capture(route, m)
	case decoder:
		mt, ok := s.a.requestTypes(s.method)
		if !ok {
			return nil
		}
		msg := mt.New().Interface()
		if err := m.DecodeInto(msg); err == nil {
			s.captured = s.a.capture(route, msg)
		}
	}
	return nil
}
