package auth_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/gatehouse-dev/gatehouse/interceptors/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// An API key set and a route that requires it, with a rule on the key's
// labels: the interceptor answers UNAUTHENTICATED without a key and
// PERMISSION_DENIED when the rule says no.
func Example() {
	sum := sha256.Sum256([]byte("s3cret"))
	a, err := auth.New(auth.Config{APIKeys: []auth.APIKeySet{{
		Name: "partners",
		Keys: []auth.APIKey{{ID: "acme", SHA256: hex.EncodeToString(sum[:]), Labels: map[string]string{"plan": "free"}}},
	}}})
	if err != nil {
		panic(err)
	}
	defer a.Close()
	policy, err := auth.NewPolicy(auth.PolicySpec{Require: []string{"partners"}, Rules: []string{`principal.labels.plan == "gold"`}})
	if err != nil {
		panic(err)
	}
	routes := func(context.Context, string, metadata.MD) (auth.Route, bool) {
		return auth.Route{Name: "orders", Policy: policy}, true
	}
	ic := auth.UnaryServerInterceptor(a, routes)
	call := func(md metadata.MD) {
		ctx := metadata.NewIncomingContext(context.Background(), md)
		_, err := ic(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/shop.Orders/Get"}, func(context.Context, any) (any, error) { return "ok", nil })
		st := status.Convert(err)
		fmt.Printf("%s: %s\n", st.Code(), st.Message())
	}
	call(nil)
	call(metadata.Pairs("x-api-key", "s3cret"))
	// Output:
	// Unauthenticated: APIKey realm="gatehouse", header="x-api-key"
	// PermissionDenied: gatehouse: permission denied
}
