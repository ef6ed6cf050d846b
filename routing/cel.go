package routing

import (
	"fmt"
	"sync"

	"github.com/gatehouse-dev/gatehouse/internal/celprog"

	"cel.dev/cel-go/cel"
)

// CEL expressions in routes (match.cel and sticky_key) see these variables:
//
//	method      string               full method, "/pkg.Service/Method"
//	service     string               "pkg.Service"
//	metadata    map(string, string)  first value of each metadata key (HTTP headers for REST)
//	authority   string               the :authority the client called
//	http_method string               REST calls: "GET", "POST", ...; "" for gRPC
//	path        string               REST calls: the URL path
//	query       map(string, string)  REST calls: first value of each query parameter
//	source_ip   string               the client's IP address
//	claims      map(string, dyn)     the authenticated principal's claims
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("method", cel.StringType),
		cel.Variable("service", cel.StringType),
		cel.Variable("metadata", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("authority", cel.StringType),
		cel.Variable("http_method", cel.StringType),
		cel.Variable("path", cel.StringType),
		cel.Variable("query", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("source_ip", cel.StringType),
		cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
	)
})

// compileCEL compiles expr and checks that its result has type want.
func compileCEL(expr string, want *cel.Type) (cel.Program, error) {
	env, err := celEnv()
	if err != nil {
		return nil, err
	}
	return celprog.Compile(env, expr, want, "expression")
}

// activation builds the CEL variables of a request.
func activation(req *Request) map[string]any {
	svc, _ := splitMethod(req.Method)
	md := make(map[string]string, len(req.Metadata))
	for k, v := range req.Metadata {
		if len(v) > 0 {
			md[k] = v[0]
		}
	}
	q := make(map[string]string, len(req.Query))
	for k, v := range req.Query {
		if len(v) > 0 {
			q[k] = v[0]
		}
	}
	claims := req.Claims
	if claims == nil {
		claims = map[string]any{}
	}
	src := ""
	if req.SourceIP.IsValid() {
		src = req.SourceIP.String()
	}
	return map[string]any{
		"method":      req.Method,
		"service":     svc,
		"metadata":    md,
		"authority":   first(req.Metadata, ":authority"),
		"http_method": req.HTTPMethod,
		"path":        req.Path,
		"query":       q,
		"source_ip":   src,
		"claims":      claims,
	}
}

// celPredicate is a route's match.cel.
type celPredicate struct {
	expr string
	prg  cel.Program
}

func (p *celPredicate) test(req *Request, vars *map[string]any) (bool, string) {
	if *vars == nil {
		*vars = activation(req)
	}
	out, _, err := p.prg.Eval(*vars)
	if err != nil {
		return false, fmt.Sprintf("cel %q: %v", p.expr, err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Sprintf("cel %q: not a bool", p.expr)
	}
	if !b {
		return false, fmt.Sprintf("cel %q is false", p.expr)
	}
	return true, ""
}

// evalKey evaluates a sticky_key expression to a string.
func evalKey(prg cel.Program, vars map[string]any) (string, error) {
	out, _, err := prg.Eval(vars)
	if err != nil {
		return "", err
	}
	return fmt.Sprint(out.Value()), nil
}
