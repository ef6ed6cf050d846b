// Package authcel is the CEL environment of routes' authorization rules
// (auth.rules), shared by the config checker, which compiles every rule when
// a file is loaded, and the auth interceptor, which evaluates them.
package authcel

import (
	"sync"

	"github.com/gatehouse-dev/gatehouse/internal/celprog"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/ext"
)

// Rules see these variables:
//
//	method     string               full method, "/pkg.Service/Method"
//	route      string               the name of the route that took the call
//	metadata   map(string, string)  first value of each metadata key (HTTP headers for REST)
//	principal  map(string, dyn)     subject, credential ("jwt:corp", "apikey:partners", "mtls"),
//	                                labels (API key labels) and claims
//	claims     map(string, dyn)     the principal's claims (JWT claims; API key labels)
//	peer       map(string, dyn)     address (the client's IP), and for a verified client
//	                                certificate uri_sans and dns_sans (lists of strings)
//
// The strings extension is on, so `"orders:read" in claims.scope.split(" ")`
// works.
var env = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("method", cel.StringType),
		cel.Variable("route", cel.StringType),
		cel.Variable("metadata", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("principal", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("peer", cel.MapType(cel.StringType, cel.DynType)),
		ext.Strings(),
	)
})

// CostLimit bounds the work of one rule evaluation, so that a rule over a
// large claim cannot stall a call.
const CostLimit = celprog.CostLimit

// Compile compiles a rule and checks that it is a bool.
func Compile(expr string) (cel.Program, error) {
	e, err := env()
	if err != nil {
		return nil, err
	}
	return celprog.Compile(e, expr, cel.BoolType, "rule")
}
