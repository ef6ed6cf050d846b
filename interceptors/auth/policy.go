package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"github.com/gatehouse-dev/gatehouse/internal/authcel"
	"google.golang.org/grpc/metadata"
)

// None, alone in a route's require list, makes the route public on
// purpose: its calls need no credential, and a listener that requires auth
// (WithRequireAuth) serves them, which it does not for a route without an
// auth block. Its rules still apply, with an empty principal; the
// credentials callers send are not checked, and are stripped unless the
// route relays them (ForwardToken), so that no backend takes an unchecked
// token for a checked one.
const None = "none"

// PolicySpec is a route's auth block.
type PolicySpec struct {
	// Require names the credentials any one of which the call must pass:
	// JWT providers, API key sets, or MTLS; or None alone.
	Require []string
	// Rules are CEL expressions that must all be true.
	Rules []string
	// ForwardToken relays the caller's credential to the backend; by
	// default it is stripped.
	ForwardToken bool
	// ForwardClaims are claims copied into request metadata under the
	// claims prefix (x-gatehouse-claims-<name>).
	ForwardClaims []string
}

// Policy is a compiled route auth block. It is immutable.
type Policy struct {
	public        bool // require is [None]
	require       []string
	rules         []rule
	forwardToken  bool
	forwardClaims []string
}

type rule struct {
	src string
	prg cel.Program
}

// NewPolicy compiles a route's auth block.
func NewPolicy(s PolicySpec) (*Policy, error) {
	if len(s.Require) == 0 {
		return nil, fmt.Errorf("auth.require: at least one credential")
	}
	if slices.Contains(s.Require, None) {
		if len(s.Require) > 1 {
			return nil, fmt.Errorf("auth.require: %q must be alone", None)
		}
		if len(s.ForwardClaims) > 0 {
			return nil, fmt.Errorf("auth.forward_claims: a route that requires %q has no claims to forward", None)
		}
	}
	p := &Policy{require: slices.Clone(s.Require), forwardToken: s.ForwardToken, public: s.Require[0] == None}
	for _, c := range s.ForwardClaims {
		p.forwardClaims = append(p.forwardClaims, strings.ToLower(c))
	}
	for i, src := range s.Rules {
		prg, err := authcel.Compile(src)
		if err != nil {
			return nil, fmt.Errorf("auth.rules[%d]: %w", i, err)
		}
		p.rules = append(p.rules, rule{src: src, prg: prg})
	}
	return p, nil
}

// Route is what the interceptor needs to know about the route that takes a
// call.
type Route struct {
	// Name is the route's name.
	Name string
	// Policy is the route's auth block; nil when it has none.
	Policy *Policy
	// Invalid, when set, is why the route's auth block cannot be applied
	// (a rule that does not compile): its calls are refused.
	Invalid error
	// ByPrincipal is true when the route table may pick a route by the
	// caller's claims: the interceptor then authenticates every credential
	// presented before it asks again with the principal in the context.
	ByPrincipal bool
}

// RouteFunc returns the route that takes a call, as the router will pick
// it: ctx carries the principal when one is known (callinfo.PrincipalFrom).
// The bool is false when no route takes the call; Route.ByPrincipal must
// still be set then. It must not block and must be safe for concurrent use.
type RouteFunc func(ctx context.Context, fullMethod string, md metadata.MD) (Route, bool)

// evalRules returns the index of the first rule that does not hold, or -1.
func (p *Policy) evalRules(vars map[string]any) (int, error) {
	for i, r := range p.rules {
		out, _, err := r.prg.Eval(vars)
		if err != nil {
			return i, err
		}
		if b, ok := out.Value().(bool); !ok || !b {
			return i, nil
		}
	}
	return -1, nil
}
