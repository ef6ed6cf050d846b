package accesslog

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

// Message is the message of every access log line.
const Message = "grpc call"

// StreamServerInterceptor returns a stream server interceptor that logs one
// line to logger when each call ends. A nil logger discards.
//
// It wraps the stream once, in a wrapper that both carries the context with
// the callinfo.Info and counts message sizes.
func StreamServerInterceptor(logger *slog.Logger, opts ...Option) grpc.StreamServerInterceptor {
	l := newLog(logger, opts)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		start := l.now()
		ctx, ci := callinfo.With(ss.Context())
		w := &serverStream{ServerStream: ss, ctx: ctx}
		panicked := true
		defer func() {
			if panicked {
				err = errPanicked
			}
			l.log(ctx, ci, info.FullMethod, start, err, w.recv.Load(), w.sent.Load())
		}()
		err = handler(srv, w)
		panicked = false
		return err
	}
}

// UnaryServerInterceptor returns a unary server interceptor that logs one
// line to logger when each call ends. A nil logger discards.
func UnaryServerInterceptor(logger *slog.Logger, opts ...Option) grpc.UnaryServerInterceptor {
	l := newLog(logger, opts)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		start := l.now()
		ctx, ci := callinfo.With(ctx)
		panicked := true
		defer func() {
			if panicked {
				err = errPanicked
			}
			var sent int64
			if err == nil {
				sent = size(resp)
			}
			l.log(ctx, ci, info.FullMethod, start, err, size(req), sent)
		}()
		resp, err = handler(ctx, req)
		panicked = false
		return resp, err
	}
}

// errPanicked stands for the outcome of a call whose handler panicked: the
// recovery interceptor outside answers Internal.
var errPanicked = status.Error(codes.Internal, "panic")

type accessLog struct {
	*options
	// handler is the logger's handler, called directly: the record reuses
	// the end-of-call clock reading and skips the caller lookup that
	// slog.Logger makes for source locations, which an access line has no
	// use for.
	handler slog.Handler
}

func newLog(logger *slog.Logger, opts []Option) *accessLog {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &accessLog{options: evaluate(opts), handler: logger.Handler()}
}

func (l *accessLog) log(ctx context.Context, ci *callinfo.Info, method string, start time.Time, err error, recv, sent int64) {
	end := l.now()
	code := callinfo.Code(err)
	if code == codes.OK && !l.sampled() {
		return
	}
	level := l.level(code)
	if !l.handler.Enabled(ctx, level) {
		return
	}
	route, backend := ci.Route()
	_, upstream := ci.Upstream()
	principal := ci.Principal().Subject
	if principal == "" {
		principal = callinfo.PrincipalFrom(ctx).Subject
	}
	r := slog.NewRecord(end, level, Message, 0)
	r.AddAttrs(
		slog.String("grpc.method", method),
		slog.String("route", route),
		slog.String("backend", backend),
		slog.String("grpc.code", code.String()),
	)
	if l.httpStatus != nil {
		if st := l.httpStatus(ctx, code); st != 0 {
			r.AddAttrs(slog.Int("http_status", st))
		}
	}
	r.AddAttrs(
		slog.Float64("duration_ms", float64(end.Sub(start))/float64(time.Millisecond)),
		slog.Float64("upstream_duration_ms", float64(upstream)/float64(time.Millisecond)),
		slog.Int64("bytes_received", recv),
		slog.Int64("bytes_sent", sent),
		slog.String("peer", callinfo.ClientAddr(ctx)),
		slog.String("request_id", l.requestID(ctx)),
	)
	if l.traceID != nil {
		if id := l.traceID(ctx); id != "" {
			r.AddAttrs(slog.String("trace_id", id))
		}
	}
	r.AddAttrs(
		slog.String("principal", principal),
		slog.String("user_agent", first(metadata.ValueFromIncomingContext(ctx, "user-agent"))),
	)
	// Like slog.Logger, ignore the handler's error: there is no one to tell.
	_ = l.handler.Handle(ctx, r)
}

// lener is a message that knows its size, like the gateway's raw frames.
type lener interface {
	Len() int
}

func size(m any) int64 {
	switch m := m.(type) {
	case lener:
		return int64(m.Len())
	case proto.Message:
		return int64(proto.Size(m))
	}
	return 0
}

// serverStream counts the sizes of the messages that pass and carries the
// call's context. Its counters are atomic: a proxy's pumps may receive and
// send from different goroutines, and may still run when the handler returns.
type serverStream struct {
	grpc.ServerStream
	ctx        context.Context
	recv, sent atomic.Int64
}

// Context returns the call's context, carrying its callinfo.Info.
func (s *serverStream) Context() context.Context { return s.ctx }

// RecvMsg receives a message and counts its size.
func (s *serverStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	s.recv.Add(size(m))
	return nil
}

// SendMsg sends a message and counts its size.
func (s *serverStream) SendMsg(m any) error {
	if err := s.ServerStream.SendMsg(m); err != nil {
		return err
	}
	s.sent.Add(size(m))
	return nil
}
