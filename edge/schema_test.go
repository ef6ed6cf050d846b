package edge

import (
	"slices"
	"testing"

	"github.com/gatehouse-dev/gatehouse/config"
)

// TestForwardHeaders: the REST header allowlist is the default list (or
// rest.forward_headers) plus every header the config reads from calls.
func TestForwardHeaders(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends: [{ name: b, endpoints: ["127.0.0.1:1"] }]
routes:
  - name: a
    match:
      service: "x.A"
      metadata: [{ name: "x-track", exact: "canary" }]
      headers: [{ name: "x-tenant", present: true }]
      cel: 'metadata["x-region"] == "eu"'
    backend: b
  - name: b
    backend: b
`))
	if err != nil {
		t.Fatal(err)
	}
	got := sortedHeaders(*forwardHeaders(cfg))
	for _, want := range append(slices.Clone(defaultForwardHeaders), "x-track", "x-tenant", "x-region") {
		if !slices.Contains(got, want) {
			t.Errorf("allowlist %v lacks %q", got, want)
		}
	}
	if slices.Contains(got, "cookie") {
		t.Errorf("allowlist %v has cookie", got)
	}
	cfg.Rest = nil
	g := &Gateway{}
	g.schema.headers.Store(forwardHeaders(cfg))
	for key, want := range map[string]bool{"Traceparent": true, "X-Track": true, "Cookie": false, "X-Gatehouse-Http-Method": false, "Grpc-Timeout": false} {
		if _, ok := g.forwardedHeader(key); ok != want {
			t.Errorf("forwardedHeader(%q) = %v, want %v", key, ok, want)
		}
	}
}
