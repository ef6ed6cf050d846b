package test

import (
	"fmt"
	"testing"

	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	"github.com/gatehouse-dev/gatehouse/examples/greeter"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	"google.golang.org/grpc"
)

// TestRESTResponseHeaderRule: backend response metadata reaches REST
// clients by the configured rule (rest.response_headers): as sent by
// default, under a prefix, or not at all.
func TestRESTResponseHeaderRule(t *testing.T) {
	backend := startBackend(t, func(s *grpc.Server) {
		greeterv1.RegisterGreeterServiceServer(s, greeter.New("b"))
	})
	tests := []struct {
		name, rule string
		header     string // the response header to look at
		want       string // its value; "" for absent
		absent     string // a header that must be absent
	}{
		{"default", "", "X-Request-Id-Seen", "r1", "Grpc-Metadata-X-Request-Id-Seen"},
		{"prefix", `{ prefix: "Grpc-Metadata-" }`, "Grpc-Metadata-X-Request-Id-Seen", "r1", "X-Request-Id-Seen"},
		{"drop", `{ drop: ["x-request-id-seen"] }`, "X-Request-Id-Seen", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rest := ""
			if tt.rule != "" {
				rest = "rest: { response_headers: " + tt.rule + " }"
			}
			g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends: [{ name: greeter, endpoints: [%q] }]
routes: [{ name: greeter, match: { service: "examples.greeter.v1.GreeterService" }, backend: greeter }]
%s
`, backend, rest), edge.WithREST(demo.REST()...))
			code, body, hdr := httpDo(t, "POST", "http://"+g.Addr("edge").String()+"/v1/greeter:sayHello", `{"name":"Ada"}`, "X-Request-Id", "r1")
			if code != 200 {
				t.Fatalf("%d %s", code, body)
			}
			if got := hdr.Get(tt.header); got != tt.want {
				t.Errorf("%s = %q, want %q (headers %v)", tt.header, got, tt.want, hdr)
			}
			if tt.absent != "" && hdr.Get(tt.absent) != "" {
				t.Errorf("%s present: %v", tt.absent, hdr)
			}
		})
	}
}
