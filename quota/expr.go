package quota

import (
	"sync"

	"github.com/gatehouse-dev/gatehouse/internal/celprog"

	"cel.dev/cel-go/cel"
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

// activation is the CEL variables of a call.
func (c *Call) activation() map[string]any {
	md := make(map[string]string, len(c.Metadata))
	for k, v := range c.Metadata {
		if len(v) > 0 {
			md[k] = v[0]
		}
	}
	labels := c.Principal.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	claims := c.Principal.Claims
	if claims == nil {
		claims = map[string]any{}
	}
	return map[string]any{
		"principal": map[string]any{
			"subject": c.Principal.Subject,
			"api_key": c.Principal.APIKey,
			"labels":  labels,
			"claims":  claims,
		},
		"source_ip": c.SourceIP,
		"metadata":  md,
		"route":     c.Route,
		"method":    c.Method,
	}
}
