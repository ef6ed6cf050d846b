package upstream

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/clock"

	"github.com/gatehouse-dev/gatehouse/internal/grpccode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// Balancing names how a backend's calls are spread over its endpoints.
type Balancing string

// The load balancing policies. Each is grpc-go's own policy, wrapped by the
// pool's endpoint-state balancer (see balancer.go), except weighted round
// robin, which grpc-go has only for server-reported (ORCA) weights.
const (
	// RoundRobin is grpc-go's round_robin, or, when any endpoint has a
	// weight other than 1, a weighted round robin over the same
	// per-endpoint pick_first children (endpointsharding).
	RoundRobin Balancing = "round_robin"
	// LeastRequest is grpc-go's least_request_experimental (power of two
	// choices over outstanding calls).
	LeastRequest Balancing = "least_request"
	// PickFirst is grpc-go's pick_first: the first reachable endpoint takes
	// every call.
	PickFirst Balancing = "pick_first"
)

// Discovery says where a backend's endpoints come from.
type Discovery string

const (
	// Static endpoints are used as written.
	Static Discovery = "static"
	// DNS endpoints are host:port names, resolved every DNSRefresh; the
	// last known addresses are kept when a lookup fails.
	DNS Discovery = "dns"
)

// Spec describes one backend.
type Spec struct {
	// Name identifies the backend in routes, logs and metrics. Unique in a
	// pool, not empty.
	Name string
	// Endpoints are the backend's addresses ("host:port"). At least one,
	// no duplicates. With DNS discovery each is a name to resolve.
	Endpoints []string
	// Discovery is Static (the default, "") or DNS.
	Discovery Discovery
	// DNSRefresh is how often DNS endpoints are re-resolved; 30s if zero.
	DNSRefresh time.Duration
	// Balancing is the load balancing policy; RoundRobin if empty.
	Balancing Balancing
	// Weights are relative endpoint weights for RoundRobin, keyed by
	// endpoint as written in Endpoints; unlisted endpoints weigh 1.
	Weights map[string]uint32
	// HealthCheck turns on active grpc.health.v1 checks of every endpoint;
	// nil leaves them off.
	HealthCheck *HealthCheck
	// Breaker caps calls and trips on failures; nil means no caps and no
	// breaker.
	Breaker *Breaker
	// Outlier ejects endpoints that keep failing; nil leaves it off.
	Outlier *Outlier
	// ConnectTimeout bounds one connection attempt to an endpoint (TCP
	// and the HTTP/2 handshake) before it counts as failed and is retried
	// with backoff, as for a blackholed address; 0 keeps grpc-go's 20s.
	// It is grpc-go's MinConnectTimeout: an attempt also gets at least the
	// current reconnect backoff (1s at first, growing to 120s), so values
	// under 1s act as 1s. [WithConnectTimeout] sets it for every backend
	// and wins.
	ConnectTimeout time.Duration
}

// HealthCheck is active health checking with grpc.health.v1 Check.
type HealthCheck struct {
	// Interval between checks of one endpoint.
	Interval time.Duration
	// Timeout of one check.
	Timeout time.Duration
	// UnhealthyThreshold failed checks in a row mark a healthy endpoint
	// unhealthy. An endpoint not yet seen healthy is unhealthy at its first
	// failed check.
	UnhealthyThreshold int
	// HealthyThreshold passed checks in a row mark it healthy.
	HealthyThreshold int
	// Service is the service name sent in the check ("" for the server).
	Service string
}

// Breaker caps the calls in flight to a backend and stops calling it for a
// while when it keeps failing. Zero values turn each part off.
type Breaker struct {
	// MaxConcurrent caps calls in flight; 0 is no cap.
	MaxConcurrent int
	// MaxPending caps calls waiting for a connection (for a ready endpoint
	// to be picked); 0 is no cap.
	MaxPending int
	// ConsecutiveFailures in a row open the breaker; 0 turns this off.
	ConsecutiveFailures int
	// FailureRatio over at least MinRequests calls in the current Window
	// opens the breaker; 0 turns this off.
	FailureRatio float64
	// MinRequests before FailureRatio counts.
	MinRequests int
	// Window is the period after which the closed breaker's counts are
	// cleared; 0 never clears them.
	Window time.Duration
	// OpenFor is how long the breaker stays open before probe calls go
	// through (half-open).
	OpenFor time.Duration
	// HalfOpenProbes is how many probe calls go through while half-open.
	HalfOpenProbes int
}

// Outlier is outlier detection by consecutive failures per endpoint.
type Outlier struct {
	// ConsecutiveFailures in a row eject an endpoint.
	ConsecutiveFailures int
	// EjectionTime is how long the first ejection lasts; the n-th lasts n
	// times as long, up to 10 times.
	EjectionTime time.Duration
	// MaxEjectionPercent of the backend's endpoints may be ejected at once
	// (rounded down: one of three endpoints at 50%).
	MaxEjectionPercent int
}

// RetryPolicy is grpc-go's service-config retryPolicy for one route: the
// pool keeps one connection per backend and distinct policy.
type RetryPolicy struct {
	// Attempts in all, the first included: 2 to 5.
	Attempts int
	// Codes are the retryable status codes.
	Codes []codes.Code
	// Base is the first backoff, Max the largest; grpc-go multiplies the
	// backoff by 2 per retry and jitters it by ±20%.
	Base, Max time.Duration
}

// key identifies the policy among a backend's connections.
func (p *RetryPolicy) key() string {
	if p == nil || p.Attempts < 2 {
		return ""
	}
	cs := slices.Clone(p.Codes)
	slices.Sort(cs)
	return fmt.Sprintf("%d/%v/%v/%v", p.Attempts, cs, p.Base, p.Max)
}

// serviceConfig is the service config of a connection with policy p.
func (p *RetryPolicy) serviceConfig() string {
	if p.key() == "" {
		return BalancerServiceConfig
	}
	names := make([]string, len(p.Codes))
	for i, c := range p.Codes {
		names[i] = `"` + grpccode.Name(c) + `"`
	}
	return fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}],"methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":%d,"initialBackoff":"%.9fs","maxBackoff":"%.9fs","backoffMultiplier":2,"retryableStatusCodes":[%s]}}]}`,
		balancerName, p.Attempts, p.Base.Seconds(), p.Max.Seconds(), strings.Join(names, ","))
}

// CallPolicy is a grpc.CallOption that carries a route's per-call policy to
// the backend connection (the value [Pool.Conn] returns): which retry policy
// applies, what share of the backend's calls retries may add, and how many
// request bytes grpc-go keeps for replay. Other connections ignore it.
type CallPolicy struct {
	grpc.EmptyCallOption
	// Retry is the route's retry policy; nil or Attempts < 2 means none.
	Retry *RetryPolicy
	// BudgetPercent caps retries at this percentage of the backend's calls.
	BudgetPercent int
	// BufferBytes is the replay buffer of one call (grpc.MaxRetryRPCBufferSize).
	BufferBytes int
}

// callPolicy finds the CallPolicy among opts.
func callPolicy(opts []grpc.CallOption) *CallPolicy {
	for _, o := range opts {
		if p, ok := o.(*CallPolicy); ok {
			return p
		}
	}
	return nil
}

// Clock is the time source of health checks, outlier ejection and DNS
// refresh; tests give a fake one.
type Clock = clock.Clock
