// Package upstream keeps the gateway's connections to its backends and the
// resilience policies that apply per backend and per endpoint.
//
// A [Pool] holds, per backend, one grpc.ClientConn per distinct retry
// policy (grpc-go's service-config retryPolicy is per connection), behind
// one guarded connection that the router gets from [Pool.Conn]. The guard
// applies the backend's caps (calls in flight, calls waiting for a
// connection) and its circuit breaker (github.com/sony/gobreaker/v2), and
// tracks each call's attempts so that retries stay within the retry budget.
// Routes pass their policy as a [CallPolicy] call option.
//
// Every connection's load balancing policy is grpc-go's own (round_robin,
// pick_first, least_request_experimental, or a weighted round robin built
// on its endpointsharding), wrapped by a registered balancer that reports
// each endpoint's state, runs active grpc.health.v1 checks per endpoint
// and ejects outlier endpoints (see balancer.go). Endpoints are static or
// re-resolved from DNS periodically, keeping the last known addresses when
// a lookup fails.
//
// Admin and health endpoints read [Pool.Backends], [Pool.Ready] and
// [Pool.NotReady]; a configuration reload calls [Pool.Update].
package upstream
