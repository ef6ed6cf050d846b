package routing

import (
	"context"
	"sync/atomic"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of the errors the router
// returns.
const ErrorDomain = "gatehouse.dev"

// ReasonNoRoute is the google.rpc.ErrorInfo reason attached to the
// UNIMPLEMENTED status of a call that no route matches; the REST error
// handler turns it into 404.
const ReasonNoRoute = "NO_ROUTE"

// Pool hands out the pooled connection of a backend by name. It must not
// block and must be safe for concurrent use.
type Pool interface {
	Conn(backend string) (grpc.ClientConnInterface, bool)
}

// Router resolves calls against the route table in force. The table is read
// without locks and replaced atomically by Swap, so a call keeps the table it
// started with while a reload swaps in a new one.
type Router struct {
	table atomic.Pointer[Table]
	pool  Pool
}

var _ Resolver = (*Router)(nil)

// NewRouter returns a Router over t that takes connections from pool.
func NewRouter(t *Table, pool Pool) *Router {
	r := &Router{pool: pool}
	r.table.Store(t)
	return r
}

// Swap puts t in force for calls that start from now on.
func (r *Router) Swap(t *Table) { r.table.Store(t) }

// Table returns the table in force.
func (r *Router) Table() *Table { return r.table.Load() }

// Resolve implements Resolver: the first matching route's backend, or
// UNIMPLEMENTED naming the method when no route matches.
func (r *Router) Resolve(_ context.Context, fullMethod string, md metadata.MD) (Target, error) {
	rt, ok := r.table.Load().Match(fullMethod, md)
	if !ok {
		return Target{}, NoRouteError(fullMethod)
	}
	conn, ok := r.pool.Conn(rt.Backend)
	if !ok {
		return Target{}, status.Errorf(codes.Unavailable, "gatehouse: route %q: backend %q is not available", rt.Name, rt.Backend)
	}
	return Target{Route: rt.Name, Backend: rt.Backend, Conn: conn, Config: rt.Config}, nil
}

// NoRouteError is the error for a call that no route takes: UNIMPLEMENTED,
// naming the method, with an ErrorInfo whose reason is ReasonNoRoute.
func NoRouteError(fullMethod string) error {
	st := status.Newf(codes.Unimplemented, "gatehouse: no route for method %s", fullMethod)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason:   ReasonNoRoute,
		Domain:   ErrorDomain,
		Metadata: map[string]string{"method": fullMethod},
	}); err == nil {
		st = d
	}
	return st.Err()
}

// IsNoRoute reports whether err is a NoRouteError.
func IsNoRoute(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unimplemented {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == ReasonNoRoute && ei.GetDomain() == ErrorDomain {
			return true
		}
	}
	return false
}
