package quota

import (
	"sync"

	"github.com/gatehouse-dev/gatehouse/internal/celprog"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/interpreter"
)

// Policies' key and when expressions are CEL over these variables:
//
//	principal  map: subject (string), api_key (string, the API key's id when
//	           the caller used one), labels (map(string, string), e.g.
//	           labels["plan"]), claims (map(string, dyn))
//	source_ip  string  the client's IP address
//	metadata   map(string, string)  first value of each metadata key (HTTP
//	           headers for REST calls), lower case
//	route      string  the route that takes the call
//	method     string  the full method, "/pkg.Service/Method"
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("principal", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("source_ip", cel.StringType),
		cel.Variable("metadata", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("route", cel.StringType),
		cel.Variable("method", cel.StringType),
	)
})

// CheckKey reports whether expr compiles as a policy key (a string).
func CheckKey(expr string) error {
	_, err := compile(expr, cel.StringType)
	return err
}

// CheckWhen reports whether expr compiles as a policy condition (a bool).
func CheckWhen(expr string) error {
	_, err := compile(expr, cel.BoolType)
	return err
}

// compile compiles expr and checks that its result has type want (or dyn,
// checked when evaluated).
func compile(expr string, want *cel.Type) (cel.Program, error) {
	env, err := celEnv()
	if err != nil {
		return nil, err
	}
	return celprog.Compile(env, expr, want, "expression")
}

// vars is the CEL variables of a call, each made when an expression
// first reads it: a key on metadata["x-tenant"] builds no principal map,
// one on route builds nothing at all.
type vars struct {
	c         *Call
	principal map[string]any
	md        map[string]string
}

var _ interpreter.Activation = (*vars)(nil)

// ResolveName implements interpreter.Activation.
func (v *vars) ResolveName(name string) (any, bool) {
	c := v.c
	switch name {
	case "principal":
		if v.principal == nil {
			labels := c.Principal.Labels
			if labels == nil {
				labels = map[string]string{}
			}
			claims := c.Principal.Claims
			if claims == nil {
				claims = map[string]any{}
			}
			v.principal = map[string]any{
				"subject": c.Principal.Subject,
				"api_key": c.Principal.APIKey,
				"labels":  labels,
				"claims":  claims,
			}
		}
		return v.principal, true
	case "metadata":
		if v.md == nil {
			v.md = make(map[string]string, len(c.Metadata))
			for k, vs := range c.Metadata {
				if len(vs) > 0 {
					v.md[k] = vs[0]
				}
			}
		}
		return v.md, true
	case "source_ip":
		return c.SourceIP, true
	case "route":
		return c.Route, true
	case "method":
		return c.Method, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (v *vars) Parent() interpreter.Activation { return nil }
