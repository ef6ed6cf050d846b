package config

import (
	"strings"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
)

// neverForwarded are REST request headers that never become metadata
// whatever rest.forward_headers says: they describe one HTTP hop, or gRPC or
// the gateway reserve them.
var neverForwarded = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true, "te": true, "trailer": true,
	"host": true, "content-length": true, "content-type": true,
	"accept-encoding": true, "proxy-authorization": true, "proxy-authenticate": true,
}

// checkSchema checks backends' schema sources, rest options and routes'
// validate_requests.
func (c checker) checkSchema(cfg *configv1.Config) {
	hasSchema := map[string]bool{}
	for i, b := range cfg.GetBackends() {
		s := b.GetSchema()
		if s == nil {
			continue
		}
		p := path{}.field("backends").index(i).field("schema")
		switch {
		case s.GetReflection() != nil && s.GetDescriptorSet() != "":
			c.errorf(p.field("descriptor_set"), "give one of reflection or descriptor_set, not both")
		case s.GetReflection() == nil && s.GetDescriptorSet() == "":
			c.errorf(p, "give reflection or descriptor_set: without a source the backend has no schema")
		}
		hasSchema[b.GetName()] = true
	}
	seen := map[string]int{}
	for i, h := range cfg.GetRest().GetForwardHeaders() {
		p := path{}.field("rest").field("forward_headers").index(i)
		if j, dup := seen[h]; dup {
			c.errorf(p, "duplicate header %q, also forward_headers[%d]", h, j)
			continue
		}
		seen[h] = i
		if neverForwarded[h] || strings.HasPrefix(h, "grpc-") || strings.HasPrefix(h, "x-gatehouse-") {
			c.errorf(p, "%q is never forwarded: it is hop-by-hop or reserved", h)
		}
	}
	for i, r := range cfg.GetRoutes() {
		if !r.GetValidateRequests() || r.GetBackend() == "" {
			continue
		}
		if _, known := hasSchema[r.GetBackend()]; !known {
			c.errorf(path{}.field("routes").index(i).field("validate_requests"),
				"backend %q has no schema: give it one (backends[].schema) so that requests can be validated", r.GetBackend())
		}
	}
}
