package routing

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
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
	rnd   func() uint64
}

var _ Resolver = (*Router)(nil)

// RouterOption configures a Router.
type RouterOption interface {
	apply(*Router)
}

type routerOptionFunc func(*Router)

func (f routerOptionFunc) apply(r *Router) { f(r) }

// WithRandom sets the source of the uniform draws behind random splits and
// mirror sampling; tests pass a seeded one. Default: math/rand/v2.
func WithRandom(src rand.Source) RouterOption {
	var mu sync.Mutex
	return routerOptionFunc(func(r *Router) {
		r.rnd = func() uint64 {
			mu.Lock()
			defer mu.Unlock()
			return src.Uint64()
		}
	})
}

// NewRouter returns a Router over t that takes connections from pool.
func NewRouter(t *Table, pool Pool, opts ...RouterOption) *Router {
	r := &Router{pool: pool, rnd: rand.Uint64}
	for _, o := range opts {
		o.apply(r)
	}
	r.table.Store(t)
	return r
}

// Swap puts t in force for calls that start from now on.
func (r *Router) Swap(t *Table) { r.table.Store(t) }

// Table returns the table in force.
func (r *Router) Table() *Table { return r.table.Load() }

// Resolve implements Resolver: the first matching route's action. A route
// with a direct response answers with its status; a call no route takes
// gets UNIMPLEMENTED naming the method. The route is the one Match gives
// the call: the same the auth and quota layers saw.
func (r *Router) Resolve(ctx context.Context, fullMethod string, md metadata.MD) (Target, error) {
	_, rt, req := r.match(ctx, fullMethod, md)
	if rt == nil {
		return Target{}, NoRouteError(fullMethod)
	}
	var vars map[string]any
	return r.target(ctx, rt, &req, &vars)
}

// Match returns the route that takes a call (false when none does) and the
// table it comes from. The first Match or Resolve of a call pins the table
// in force then to the call's callinfo.Info, and every later one in the
// same call uses that table, so the layers that need the route (auth,
// quota, the director) agree on it even when a reload swaps the table
// while the call passes through them. The route is matched once and
// recorded (callinfo SetMatch), unless the table picks routes by the
// caller's claims, which the auth layer establishes in between; its name
// is recorded for metrics, the access log and audit as soon as it is known,
// so that calls refused before the director carry it too.
func (r *Router) Match(ctx context.Context, fullMethod string, md metadata.MD) (*Table, *Route, bool) {
	t, rt, _ := r.match(ctx, fullMethod, md)
	return t, rt, rt != nil
}

// noRoute is what callinfo records for a call no route takes.
var noRoute = &Route{}

func (r *Router) match(ctx context.Context, fullMethod string, md metadata.MD) (*Table, *Route, Request) {
	ci := callinfo.From(ctx)
	t := r.table.Load()
	if ci != nil {
		t = ci.PinTable(t).(*Table)
	}
	req := requestFrom(ctx, fullMethod, md, t.needs)
	byClaims := t.needs&needClaims != 0
	if !byClaims {
		if m, ok := ci.Match().(*Route); ok {
			if m == noRoute {
				return t, nil, req
			}
			return t, m, req
		}
	}
	rt, ok := t.MatchRequest(&req)
	if !byClaims {
		if ok {
			ci.SetMatch(rt)
		} else {
			ci.SetMatch(noRoute)
		}
	}
	if !ok {
		return t, nil, req
	}
	ci.SetRouteName(rt.Name)
	return t, rt, req
}

func (r *Router) target(ctx context.Context, rt *Route, req *Request, vars *map[string]any) (Target, error) {
	a := &rt.action
	if a.direct != nil {
		callinfo.From(ctx).SetRoute(rt.Name, "")
		return Target{}, a.direct.Err()
	}
	backend, err := a.pickBackend(req, vars, r.rnd)
	if err != nil {
		return Target{}, status.Errorf(codes.Internal, "gatehouse: route %q: %v", rt.Name, err)
	}
	conn, ok := r.pool.Conn(backend)
	if !ok {
		return Target{}, status.Errorf(codes.Unavailable, "gatehouse: route %q: backend %q is not available", rt.Name, backend)
	}
	t := Target{
		Route:    rt.Name,
		Backend:  backend,
		Conn:     conn,
		Config:   rt.Config,
		Method:   a.rewriteMethod(req.Method),
		Metadata: a.md,
	}
	if m := a.mirror; m != nil && r.rnd()%1000000 < m.ppm {
		if sc, ok := r.pool.Conn(m.backend); ok {
			t.Mirror = &Shadow{Backend: m.backend, Conn: sc}
		}
	}
	return t, nil
}

// Explanation says which route takes a call and why earlier routes did not.
type Explanation struct {
	// Route is the route that takes the call; nil when none does.
	Route *Route
	// Backend is the backend it goes to: for a sticky split, the side this
	// call takes; "split" for a random split; empty for a direct response.
	Backend string
	// PassedOver lists the routes before it, with the first condition each
	// failed.
	PassedOver []PassedOver
	// Direct is the status of a route that answers at the edge; nil
	// otherwise.
	Direct *status.Status
}

// Explain reports how the table in force treats req, without calling
// anything.
func (r *Router) Explain(req *Request) Explanation {
	t := r.table.Load()
	rt, passed := t.Explain(req)
	e := Explanation{Route: rt, PassedOver: passed}
	if rt == nil {
		return e
	}
	if rt.action.direct != nil {
		e.Direct = rt.action.direct
		return e
	}
	a := &rt.action
	switch {
	case len(a.split) == 0:
		e.Backend = a.backend
	case a.sticky != nil:
		var vars map[string]any
		e.Backend, _ = a.pickBackend(req, &vars, r.rnd)
	default:
		e.Backend = "split"
	}
	return e
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
