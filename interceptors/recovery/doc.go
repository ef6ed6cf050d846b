// Package recovery turns a panic in a gRPC handler into a codes.Internal
// status with a generic message, and logs the panic value and its stack.
//
// The client never sees the panic value: it may hold secrets, and it tells an
// attacker where the gateway broke. The log line, written through an injected
// *slog.Logger, carries the method, the panic value and the stack of the
// panicking goroutine.
//
// It wraps the recovery interceptors of go-grpc-middleware v2 with a custom
// handler. Install it outermost (recovery → requestid → accesslog → validate
// → router), and install both variants: calls the gateway proxies for unknown
// methods pass only through stream interceptors.
//
// Only panics on the handler's goroutine are caught. A panic in a goroutine
// the handler starts (such as a proxy pump) crashes the process unless that
// goroutine recovers it itself.
package recovery
