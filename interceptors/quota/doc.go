// Package quota enforces rate limits and calendar quotas (package
// github.com/gatehouse-dev/gatehouse/quota) on every call, gRPC or REST.
//
// Policies apply by route name. The interceptors do not know the route
// table: WithRoute gives them a function that names the route a call will
// take (the gateway passes one over its router's table). A call no route
// takes is never limited.
//
// A call over a limit is answered codes.ResourceExhausted with a
// google.rpc.QuotaFailure detail (one violation per refusing policy) and a
// google.rpc.RetryInfo detail, a "grpc-retry-pushback-ms" trailer (which
// grpc-go clients with a retry policy honour) and a "retry-after" header in
// whole seconds. A call refused because the shared store failed under a
// FAIL_CLOSED policy is answered codes.Unavailable with a RetryInfo.
//
// Every answer, allowed or refused, carries the IETF RateLimit headers
// (draft-ietf-httpapi-ratelimit-headers) as response header metadata, one
// list item per enforcing policy:
//
//	ratelimit-policy: "per-user";q=100;w=1, "free-plan-daily";q=10000;w=86400
//	ratelimit: "per-user";r=42;t=1, "free-plan-daily";r=9000;t=3600
//
// where q is the allowance per window of w seconds, r what remains now and
// t the seconds until the allowance is whole again (until a retry may pass,
// when refused). grpc-gateway passes header metadata to REST clients as HTTP
// headers, and answers RESOURCE_EXHAUSTED as 429, so REST clients see
// RateLimit-Policy, RateLimit and Retry-After on a 429. Shadow policies
// add no headers: they are the operator's experiment, not the client's
// contract.
//
// A refusal is recorded in the call's callinfo.Info decision as
// "quota:<policy>", for the access log, the audit trail and spans.
//
// Install it after authentication (policies key on the principal) and
// before validation (a refused call costs no decoding), and install both
// variants: proxied calls pass only through stream interceptors.
package quota
