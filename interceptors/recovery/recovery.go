package recovery

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	grpcrecovery "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Message is the status message a client receives for a recovered panic.
const Message = "internal error"

// StreamServerInterceptor returns a stream server interceptor that recovers
// a panic in the handler, logs it with its stack, and returns a
// codes.Internal status carrying only Message.
func StreamServerInterceptor(opts ...Option) grpc.StreamServerInterceptor {
	return grpcrecovery.StreamServerInterceptor(grpcrecovery.WithRecoveryHandlerContext(handler(evaluate(opts))))
}

// UnaryServerInterceptor returns a unary server interceptor that recovers a
// panic in the handler, logs it with its stack, and returns a codes.Internal
// status carrying only Message.
func UnaryServerInterceptor(opts ...Option) grpc.UnaryServerInterceptor {
	return grpcrecovery.UnaryServerInterceptor(grpcrecovery.WithRecoveryHandlerContext(handler(evaluate(opts))))
}

var errInternal = status.Error(codes.Internal, Message)

func handler(o *options) grpcrecovery.RecoveryHandlerFuncContext {
	return func(ctx context.Context, p any) error {
		// Still on the panicking goroutine, inside its deferred call: the
		// stack includes the frames that panicked.
		stack := debug.Stack()
		method, _ := grpc.Method(ctx)
		o.logger.LogAttrs(ctx, slog.LevelError, "panic recovered",
			slog.String("grpc.method", method),
			slog.String("panic", fmt.Sprint(p)),
			slog.String("stack", string(stack)),
		)
		return errInternal
	}
}
