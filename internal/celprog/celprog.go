// Package celprog compiles the CEL expressions of Gatehouse's config (route
// matches and sticky keys, authorization rules, quota keys and conditions)
// the one way they are all compiled: type-checked against the result they
// must give, with a bound on the work of one evaluation.
package celprog

import (
	"fmt"

	"cel.dev/cel-go/cel"
)

// CostLimit bounds the work of one evaluation, so that an expression over a
// large claim or header cannot stall a call.
const CostLimit = 100000

// Compile compiles expr in env and checks that its result has type want (or
// dyn, checked when evaluated). what names the expression in the error
// ("expression", "rule"), e.g. "the rule is of type string, want bool".
func Compile(env *cel.Env, expr string, want *cel.Type, what string) (cel.Program, error) {
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	if !ast.OutputType().IsExactType(want) && !ast.OutputType().IsExactType(cel.DynType) {
		return nil, fmt.Errorf("the %s is of type %s, want %s", what, ast.OutputType(), want)
	}
	return env.Program(ast, cel.CostLimit(CostLimit), cel.InterruptCheckFrequency(100))
}
