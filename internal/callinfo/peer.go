package callinfo

import (
	"context"
	"errors"
	"net"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ClientAddr returns the client's address for logs and records. When the
// gateway attached the call's Source (WithSource), that is its client: the
// transport peer ("ip:port") when it is the client itself, else the client
// IP that the trusted hops report. Without one: the transport peer when it
// is TCP, else the last x-forwarded-for hop (REST calls arrive over the
// in-process connection, and grpc-gateway appends the HTTP client there),
// else whatever the peer is.
func ClientAddr(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if s, attached := ctx.Value(sourceKey{}).(Source); attached {
		switch {
		case s.Direct && ok && p.Addr != nil:
			return p.Addr.String()
		case s.Addr.IsValid():
			return s.Addr.String()
		case ok && p.Addr != nil:
			return p.Addr.String()
		}
		return ""
	}
	if ok && p.Addr != nil {
		// grpc.Server.ServeHTTP's peers are "ip:port" strings of network
		// "tcp".
		if _, tcp := p.Addr.(*net.TCPAddr); tcp || p.Addr.Network() == "tcp" {
			return p.Addr.String()
		}
	}
	if xff := metadata.ValueFromIncomingContext(ctx, "x-forwarded-for"); len(xff) > 0 {
		last := xff[len(xff)-1]
		if i := strings.LastIndexByte(last, ','); i >= 0 {
			last = last[i+1:]
		}
		if last = strings.TrimSpace(last); last != "" {
			return last
		}
	}
	if ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// Code returns the status code grpc-go sends for a handler's error: the
// status's code, CANCELLED or DEADLINE_EXCEEDED for context errors, else
// UNKNOWN.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Code()
	}
	return codes.Unknown
}
