// Package callinfo carries what the gateway learns about one call while it
// passes through the interceptor chain and the router: which route matched and
// which backend was picked, how long the upstream attempts took, who the
// caller is and what the gateway decided. The outermost interceptor attaches an Info to the
// call's context; inner layers fill it in; outer layers (the access log, later
// metrics and audit) read it once the call ends.
//
// It exists so that interceptors, which must not import routing, and routing,
// which must not import interceptors, can share per-call facts.
package callinfo

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
)

// Info holds the facts about one call. It is safe for concurrent use: the
// director's pumps and the interceptors may touch it from different
// goroutines.
type Info struct {
	mu      sync.Mutex
	route   string
	backend string

	principal Principal
	decision  Decision
	quota     []string // the enforcing quota policies that decided (SetQuota)

	attempts int           // upstream attempts started
	upstream time.Duration // summed duration of the ended attempts

	incoming metadata.MD // the chain's own copy of the incoming metadata

	pinned  any // the route table the call is matched against (PinTable)
	matched any // the route the pinned table gives the call (SetMatch)
}

// Decision is the gateway's policy verdict on a call. The zero value is
// "allowed, no check objected".
type Decision struct {
	// Denied is true when a gateway check refused the call.
	Denied bool
	// By names the check that decided: "authentication", a rule's name,
	// "quota:<policy>", "audit".
	By string
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

// SetIncoming records md as the call's incoming metadata: the gateway's
// own copy, already placed in the context with metadata.NewIncomingContext,
// which the chain's later stages read without copying it again and may
// change in place (before the router runs; never after, when the director's
// pumps run concurrently).
func (in *Info) SetIncoming(md metadata.MD) {
	if in == nil {
		return
	}
	in.mu.Lock()
	in.incoming = md
	in.mu.Unlock()
}

// Incoming returns the metadata recorded by SetIncoming, and false when
// there is none (then metadata.FromIncomingContext is the way).
func (in *Info) Incoming() (metadata.MD, bool) {
	if in == nil {
		return nil, false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.incoming, in.incoming != nil
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

// SetRouteName records the route that matched, before a backend is
// picked: the backend recorded so far is kept when the route is the same,
// cleared otherwise.
func (in *Info) SetRouteName(route string) {
	if in == nil {
		return
	}
	in.mu.Lock()
	if in.route != route {
		in.route, in.backend = route, ""
	}
	in.mu.Unlock()
}

// PinTable records v (the router's route table, opaque here) as the one
// the call is matched against, unless one is recorded already, and returns
// the one recorded. Every layer that matches the call's route (auth, quota,
// the director) thus uses the same table, even when a reload swaps in
// another one while the call passes through them. On a nil Info it
// returns v.
func (in *Info) PinTable(v any) any {
	if in == nil {
		return v
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.pinned == nil {
		in.pinned = v
	}
	return in.pinned
}

// SetMatch records m, the route the pinned table gives the call (opaque
// here), so that later layers need not match again.
func (in *Info) SetMatch(m any) {
	if in == nil {
		return
	}
	in.mu.Lock()
	in.matched = m
	in.mu.Unlock()
}

// Match returns what SetMatch recorded; nil when nothing was.
func (in *Info) Match() any {
	if in == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.matched
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

// SetPrincipal records who made the call, for the layers outside the one
// that authenticated it (access log, audit), which cannot see the context
// that WithPrincipal returns.
func (in *Info) SetPrincipal(p Principal) {
	if in == nil {
		return
	}
	in.mu.Lock()
	in.principal = p
	in.mu.Unlock()
}

// Principal returns who made the call as recorded by SetPrincipal (the zero
// Principal when unknown).
func (in *Info) Principal() Principal {
	if in == nil {
		return Principal{}
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.principal
}

// SetDecision records the gateway's verdict on the call. A later denial
// replaces an earlier verdict; an "allowed" never replaces a denial.
func (in *Info) SetDecision(d Decision) {
	if in == nil {
		return
	}
	in.mu.Lock()
	if d.Denied || !in.decision.Denied {
		in.decision = d
	}
	in.mu.Unlock()
}

// Decision returns the verdict recorded by SetDecision.
func (in *Info) Decision() Decision {
	if in == nil {
		return Decision{}
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.decision
}

// SetQuota records the enforcing quota policies that decided on the call,
// in the order the RateLimit-Policy header lists them.
func (in *Info) SetQuota(policies []string) {
	if in == nil {
		return
	}
	in.mu.Lock()
	in.quota = policies
	in.mu.Unlock()
}

// Quota returns the policies recorded by SetQuota; nil when no enforcing
// policy decided.
func (in *Info) Quota() []string {
	if in == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.quota
}

// StartAttempt records that an upstream attempt began and returns its
// number, 1 for the first.
func (in *Info) StartAttempt() int {
	if in == nil {
		return 0
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.attempts++
	return in.attempts
}

// EndAttempt adds the duration of an ended upstream attempt.
func (in *Info) EndAttempt(d time.Duration) {
	if in == nil {
		return
	}
	in.mu.Lock()
	in.upstream += d
	in.mu.Unlock()
}

// Upstream returns the number of upstream attempts started and the summed
// duration of those that ended.
func (in *Info) Upstream() (attempts int, d time.Duration) {
	if in == nil {
		return 0, 0
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.attempts, in.upstream
}
