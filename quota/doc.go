// Package quota decides whether a call is within its rate limits and
// calendar quotas.
//
// A Limiter holds the configured policies. Each policy keys its counter by a
// CEL expression over the call (the principal, the client IP, metadata, the
// route, the method), applies to some routes and, optionally, only when a
// CEL condition holds, and is either a rate limit (GCRA: requests per period
// with a burst) or a calendar quota (requests per UTC day or month). Every
// policy that applies to a call must allow it. The calls whose key cannot
// be evaluated (metadata they lack) share the policy's one counter for the
// empty key; they are counted in gatehouse_quota_key_errors_total, and the
// first is logged.
//
// Counters live in a Store. Memory is the embedded default: GCRA and
// calendar counters in a bounded, sharded map whose idle keys are evicted
// (a GCRA key whose bucket is full again, or a quota whose window has ended,
// carries no state, so dropping it changes no decision). Redis shares the
// counters between gateway replicas: GCRA runs on the Redis server, with the
// server's clock (github.com/go-redis/redis_rate), and calendar quotas in a
// Lua script, so that replicas never disagree about time.
//
// Every Redis call is bounded by a timeout. When it fails, each policy does
// what it says: FAIL_OPEN falls back to an in-memory limiter enforcing the
// policy's limit divided by the number of replicas, FAIL_CLOSED refuses with
// codes.Unavailable. While the store is down the Limiter probes it at most
// once per probe interval instead of making every call wait out the
// timeout, and it goes back to Redis as soon as a probe succeeds. Each
// transition (down, back up) is logged once and counted; every fallback
// decision is counted.
//
// A shadow policy decides and counts, but never refuses: operators try a
// limit on live traffic and watch gatehouse_quota_decisions_total.
//
// The gRPC interceptors that enforce a Limiter's verdicts, with the
// RESOURCE_EXHAUSTED details and the RateLimit headers, are in
// interceptors/quota.
package quota
