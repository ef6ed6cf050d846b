// Package telemetry sets up the gateway's metrics and traces.
//
// [Metrics] holds a private Prometheus registry (nothing is registered
// globally) with the gateway's series, served in the Prometheus text format
// by [Metrics.Handler]:
//
//	gatehouse_requests_total{route,method,code}            calls handled
//	gatehouse_request_duration_seconds{route,method,code}  call duration histogram
//	gatehouse_requests_in_flight                           calls in progress
//	gatehouse_upstream_attempts_total{backend}             attempts sent to a backend
//	gatehouse_upstream_retries_total{backend}              attempts after the first
//	gatehouse_upstream_errors_total{backend,code}          attempts that failed
//	gatehouse_upstream_attempt_duration_seconds{backend}   attempt duration histogram
//	gatehouse_upstream_endpoint_up{backend,endpoint}       1 when the endpoint is READY
//	gatehouse_config_reloads_total{result}                 reloads, "success" or "failure"
//	gatehouse_config_last_reload_successful                1 when the last reload succeeded
//	gatehouse_config_last_reload_success_timestamp_seconds when the config in force was loaded
//	gatehouse_tracing_spans_dropped_total                  spans dropped, queue full
//	gatehouse_tracing_spans_exported_total                 spans the collector accepted
//	gatehouse_tracing_export_errors_total                  failed export batches
//	gatehouse_audit_records_total                          audit records written
//	gatehouse_audit_records_lost_total                     audit records not written (either mode)
//	gatehouse_build_info{version,goversion}                always 1
//
// plus the standard go_* and process_* collectors. Calls that no route took
// are counted under method "unmatched", so that clients cannot grow the
// series without bound by inventing method names.
//
// [Tracing] is an OpenTelemetry tracer provider exporting OTLP over gRPC or
// HTTP through a bounded queue: a span that finds the queue full is dropped
// and counted, never waited for, so a slow or absent collector adds no
// latency to calls.
//
// [ServerHandler] and [ClientHandler] are the grpc stats handlers that feed
// both: the server one on the gateway's listeners, the client one on every
// backend connection, where each attempt (retries included) is one span.
package telemetry
