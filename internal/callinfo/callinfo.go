// Package callinfo carries what the gateway learns about one call while it
// passes through the interceptor chain and the router: which route matched and
// which backend was picked. The outermost interceptor attaches an Info to the
// call's context; inner layers fill it in; outer layers (the access log, later
// metrics and audit) read it once the call ends.
//
// It exists so that interceptors, which must not import routing, and routing,
// which must not import interceptors, can share per-call facts.
package callinfo

import (
	"context"
	"sync"
)

// Info holds the facts about one call. It is safe for concurrent use: the
// director's pumps and the interceptors may touch it from different
// goroutines.
type Info struct {
	mu      sync.Mutex
	route   string
	backend string
}

type ctxKey struct{}

// With returns a context carrying a new Info, or ctx unchanged with its
// existing Info when one is already attached (so that nested interceptors
// never replace it).
func With(ctx context.Context) (context.Context, *Info) {
	if in, ok := ctx.Value(ctxKey{}).(*Info); ok {
		return ctx, in
	}
	in := &Info{}
	return context.WithValue(ctx, ctxKey{}, in), in
}

// From returns the Info attached to ctx, or nil when there is none. All
// methods of a nil *Info are no-ops, so callers need not check.
func From(ctx context.Context) *Info {
	in, _ := ctx.Value(ctxKey{}).(*Info)
	return in
}

// SetRoute records the route that matched and the backend it picked.
func (in *Info) SetRoute(route, backend string) {
	if in == nil {
		return
	}
	in.mu.Lock()
	in.route, in.backend = route, backend
	in.mu.Unlock()
}

// Route returns the route name and backend name recorded by SetRoute.
func (in *Info) Route() (route, backend string) {
	if in == nil {
		return "", ""
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.route, in.backend
}
