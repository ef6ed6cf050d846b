package requestid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Key is the metadata key of the request id, inbound and in the response
// header.
const Key = "x-request-id"

// MaxLen is the longest inbound id that is kept.
const MaxLen = 128

type ctxKey struct{}

// FromContext returns the request id the interceptor attached to ctx, or ""
// when there is none.
func FromContext(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// StreamServerInterceptor returns a stream server interceptor that attaches
// the effective request id to the stream's context and incoming metadata and
// sets it as a response header.
func StreamServerInterceptor(opts ...Option) grpc.StreamServerInterceptor {
	o := evaluate(opts)
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, id := o.attach(ss.Context())
		// Set, not send: the handler's own headers are merged with it.
		if err := ss.SetHeader(metadata.Pairs(Key, id)); err != nil {
			return err
		}
		w := middleware.WrapServerStream(ss)
		w.WrappedContext = ctx
		return handler(srv, w)
	}
}

// UnaryServerInterceptor returns a unary server interceptor that attaches
// the effective request id to the call's context and incoming metadata and
// sets it as a response header.
func UnaryServerInterceptor(opts ...Option) grpc.UnaryServerInterceptor {
	o := evaluate(opts)
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, id := o.attach(ctx)
		if err := grpc.SetHeader(ctx, metadata.Pairs(Key, id)); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// attach picks the effective id and returns ctx carrying it, as a value and
// as the only Key value of the incoming metadata.
func (o *options) attach(ctx context.Context) (context.Context, string) {
	in := metadata.ValueFromIncomingContext(ctx, Key)
	if len(in) > 0 && Valid(in[0]) {
		id := in[0]
		ctx = context.WithValue(ctx, ctxKey{}, id)
		if len(in) == 1 {
			return ctx, id // the metadata already says exactly this.
		}
		return setIncoming(ctx, id), id
	}
	id := o.generate()
	return setIncoming(context.WithValue(ctx, ctxKey{}, id), id), id
}

func setIncoming(ctx context.Context, id string) context.Context {
	if md, ok := callinfo.From(ctx).Incoming(); ok {
		md.Set(Key, id) // the chain's own copy, already in ctx
		return ctx
	}
	md, ok := metadata.FromIncomingContext(ctx) // a copy we may change.
	if !ok {
		md = metadata.MD{}
	}
	md.Set(Key, id)
	return metadata.NewIncomingContext(ctx, md)
}

// Valid reports whether id is acceptable as an inbound request id: 1 to
// MaxLen characters, each one of A-Z, a-z, 0-9, '.', '_', ':' or '-'.
func Valid(id string) bool {
	if len(id) == 0 || len(id) > MaxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// newID returns 128 random bits as 32 lowercase hex digits.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	return hex.EncodeToString(b[:])
}
