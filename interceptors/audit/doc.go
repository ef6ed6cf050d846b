// Package audit records one audit record per call in an audit trail (see
// package github.com/gatehouse-dev/gatehouse/audit): who made it (from
// callinfo), what (method, route, and the request fields configured per
// route, masked when their proto field carries debug_redact or a
// configured path says so), when, from where, the gateway's decision and
// the outcome.
//
// Install it after the access log and before validation and the router
// (recovery → requestid → accesslog → audit → validate → router), both
// variants: proxied calls pass only through stream interceptors. Request
// fields of proxied calls are captured from the first request message,
// decoded with the request type WithRequestTypes resolves: the gateway
// resolves it from the backends' runtime schemas (descriptor sets,
// reflection) and then from the types compiled into the binary. A
// debug_redact field is masked whichever the descriptor came from,
// dynamicpb messages included.
//
// The record names the API key of a call authenticated with one (its id,
// the subject of a principal whose credential is "apikey:<set>"), never the
// key.
//
// When the sink fails, WithFailClosed decides: refuse calls with
// UNAVAILABLE while the sink is unhealthy, and turn a call whose record
// could not be written into UNAVAILABLE; or (the default) keep serving and
// let the sink count the lost records.
package audit
