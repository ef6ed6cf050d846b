// Package accesslog writes one structured log line per gRPC call, when the
// call ends.
//
// Each line, written with slog.Logger.LogAttrs at the level chosen by the
// code (Info by default), has the message "grpc call" and these attributes:
//
//	grpc.method     full method, "/pkg.Service/Method"
//	route           route that matched, from callinfo ("" when none)
//	backend         backend the route picked, from callinfo
//	grpc.code       status code name, "OK", "NotFound", ...
//	http_status     HTTP status of a call that arrived as REST (WithHTTPStatus)
//	duration_ms     wall time of the call in milliseconds (float)
//	upstream_duration_ms  time spent in backend attempts, from callinfo
//	bytes_received  total size of the request messages read
//	bytes_sent      total size of the response messages written
//	peer            client address (see below)
//	request_id      the call's request id
//	trace_id        the call's trace id, when there is one (WithTraceID)
//	principal       who made the call, from callinfo ("" when anonymous)
//	user_agent      the client's user-agent metadata
//
// WithSampleSuccesses logs a fraction of the calls that end OK; failed
// calls are always logged.
//
// Sizes are message sizes, not wire sizes: a message with a Len() int method
// (the gateway's raw frames) counts Len(), a proto.Message counts proto.Size,
// anything else counts 0.
//
// The peer is the client the gateway decided on when it attached a
// callinfo.Source to the call (x-forwarded-for walked back over trusted
// proxies only). Without one: the transport peer when it is a TCP address;
// when it is not (an in-process connection from another part of the
// gateway, or a Unix socket), the last hop of "x-forwarded-for", which that
// trusted component appended.
//
// The request id is read by default from the "x-request-id" incoming
// metadata, where the requestid interceptor (installed outside this one)
// leaves the effective id; WithRequestID changes that without this package
// importing requestid.
//
// The interceptor attaches a callinfo.Info to the call's context with
// callinfo.With before calling the handler, so that inner layers (the router)
// can record the route and backend it logs. Install it after requestid and
// before validate and the router (recovery → requestid → accesslog →
// validate → router), and install both variants: calls the gateway proxies
// for unknown methods pass only through stream interceptors.
//
// Any slog.Handler takes the lines. NewJSONHandler returns one that writes
// exactly slog.JSONHandler's lines (a test and a fuzz target compare them
// byte for byte) for a third less of the call's time: the gateway's access
// log uses it.
//
// A call whose handler panics is logged with code Internal, which is what the
// recovery interceptor outside it answers; the panic keeps propagating.
package accesslog
