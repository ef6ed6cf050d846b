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
// decoded when its type is compiled into the binary (WithRequestTypes).
//
// When the sink fails, WithFailClosed decides: refuse calls with
// UNAVAILABLE while the sink is unhealthy, and turn a call whose record
// could not be written into UNAVAILABLE; or (the default) keep serving and
// let the sink count the lost records.
package audit
