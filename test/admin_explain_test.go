package test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	adminv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/admin/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var updateAdmin = flag.Bool("update-admin", false, "rewrite test/testdata/admin/*.golden")

// explainYAML has a route for each kind of condition explain must word,
// and each kind of action.
const explainYAML = `
listeners: [{name: edge, address: "127.0.0.1:0"}]
admin: {address: "127.0.0.1:0"}
backends:
  - {name: orders, endpoints: ["127.0.0.1:1"]}
  - {name: canary, endpoints: ["127.0.0.1:2"]}
  - {name: shadow, endpoints: ["127.0.0.1:3"]}
  - {name: gold, endpoints: ["127.0.0.1:4"]}
routes:
  - name: maintenance
    match: {service: "shop.legacy.v1.Legacy"}
    direct_response: {code: UNAVAILABLE, message: "down for maintenance"}
  - name: beta-query
    match: {service: "shop.orders.v1.Orders", query: [{name: beta, present: true}]}
    backend: canary
  - name: by-path
    match: {service: "shop.orders.v1.Orders", path: {prefix: "/v2/"}}
    backend: canary
  - name: gold-tier
    match: {service: "shop.orders.v1.Orders", claims: [{name: tier, exact: gold}]}
    backend: gold
  - name: beta-header
    match: {service: "shop.orders.v1.Orders", headers: [{name: x-beta, exact: "1"}]}
    backend: canary
  - name: internal
    match: {service: "shop.orders.v1.Orders", source_cidrs: ["10.0.0.0/8"]}
    backend: orders
  - name: orders
    match: {service: "shop.orders.v1.Orders"}
    split: [{backend: orders, weight: 90}, {backend: canary, weight: 10}]
    sticky_key: 'metadata["x-user-id"]'
    mirror: {backend: shadow, percent: 5}
`

// TestAdminExplainGolden asks Explain, over gRPC and over REST (POST
// /v1/routes:explain), about calls that land on each route or on none, and
// compares the answers with golden files: the route taken, the backend,
// and every route passed over with the condition that failed (query, path,
// claims, header, source address). Both transports must give the same
// answer. ListRoutes shows what each route does.
func TestAdminExplainGolden(t *testing.T) {
	g := startGateway(t, explainYAML)
	admin := adminv1.NewAdminServiceClient(dial(t, g.Addr("admin").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cases := []struct {
		name string
		req  *adminv1.ExplainRequest
	}{
		{"direct_response", &adminv1.ExplainRequest{Method: "/shop.legacy.v1.Legacy/Get"}},
		{"grpc_falls_through", &adminv1.ExplainRequest{Method: "/shop.orders.v1.Orders/Get", Metadata: map[string]string{"X-User-Id": "u-42"}, SourceIp: "192.0.2.7"}},
		{"rest_query", &adminv1.ExplainRequest{Method: "/shop.orders.v1.Orders/List", HttpMethod: "GET", Path: "/v1/orders", Query: map[string]string{"beta": "1"}}},
		{"rest_path", &adminv1.ExplainRequest{Method: "/shop.orders.v1.Orders/List", HttpMethod: "GET", Path: "/v2/orders"}},
		{"claims", &adminv1.ExplainRequest{Method: "/shop.orders.v1.Orders/Get", HttpMethod: "GET", Path: "/v1/orders", ClaimsJson: `{"tier": "gold"}`}},
		{"claims_other", &adminv1.ExplainRequest{Method: "/shop.orders.v1.Orders/Get", ClaimsJson: `{"tier": "silver"}`, Metadata: map[string]string{"x-beta": "1"}}},
		{"source", &adminv1.ExplainRequest{Method: "/shop.orders.v1.Orders/Get", SourceIp: "10.1.2.3"}},
		{"no_route", &adminv1.ExplainRequest{Method: "/other.v1.Other/Get"}},
	}
	client := plainClient(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := admin.Explain(ctx, c.req)
			if err != nil {
				t.Fatal(err)
			}
			checkAdminGolden(t, filepath.Join("testdata", "admin", "explain_"+c.name+".golden"), resp)

			body, err := protojson.Marshal(c.req)
			if err != nil {
				t.Fatal(err)
			}
			code, out, _ := adminHTTP(t, client, http.MethodPost, "http://"+g.Addr("admin").String()+"/v1/routes:explain", string(body))
			if code != http.StatusOK {
				t.Fatalf("REST: %d %s", code, out)
			}
			var rest adminv1.ExplainResponse
			if err := protojson.Unmarshal([]byte(out), &rest); err != nil {
				t.Fatalf("REST body %s: %v", out, err)
			}
			if !proto.Equal(&rest, resp) {
				t.Errorf("REST answered %v\ngRPC answered %v", &rest, resp)
			}
		})
	}

	routes, err := admin.ListRoutes(ctx, &adminv1.ListRoutesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	checkAdminGolden(t, filepath.Join("testdata", "admin", "list_routes.golden"), routes)
}

// checkAdminGolden compares m, as indented JSON with proto field names, with
// the golden file at path, or rewrites it with -update-admin.
func checkAdminGolden(t *testing.T, path string, m proto.Message) {
	t.Helper()
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil { // protojson's spacing is unstable
		t.Fatal(err)
	}
	buf.WriteByte('\n')
	if *updateAdmin {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-admin to write it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("%s differs:\ngot:\n%s\nwant:\n%s", path, buf.Bytes(), want)
	}
}
