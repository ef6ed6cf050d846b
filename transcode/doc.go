// Package transcode serves REST/JSON for gRPC methods whose schema the
// gateway learns at run time, without rebuilding it.
//
// A Manager keeps each backend's schema (a Schema): read from a descriptor
// set file, or fetched by gRPC server reflection of the backend
// (grpc.reflection.v1, falling back to v1alpha) and refreshed on an
// interval. A schema that fails to load is a *LoadError naming the backend;
// the backend's last good schema keeps serving. Every change publishes a new
// immutable Set, the merged view of all schemas.
//
// Register adds to a grpc-gateway runtime.ServeMux one handler per HTTP
// binding of each method of a Set: its google.api.http rule and
// additional_bindings (path templates, custom verbs, body and response_body
// as grpc-gateway reads them), or POST /pkg.Service/Method for methods
// without one when the backend's auto-mapping is on. The handlers do what
// grpc-gateway's generated handlers do, step by step and with the same
// runtime functions (AnnotateContext, the mux's marshalers,
// PopulateFieldFromPath, PopulateQueryParameters, HTTPError,
// ForwardResponseMessage), over dynamicpb messages, so that a REST client
// gets the same answers from a runtime schema as from generated code.
// Client- and bidi-streaming methods are served as generated handlers
// serve them: the body is a sequence of requests read with the inbound
// marshaler's decoder (newline-delimited JSON, one message per line), the
// call is half-closed at its end, and the answer is the one response
// (ForwardResponseMessage) or, for bidi, the response stream
// (ForwardResponseStream).
//
// Two things are stricter, on purpose: a field set by both the path and the
// body is refused (INVALID_ARGUMENT, 400, naming the field), even with the
// same value or the field's default (the body's JSON is looked at for the
// field's key), and in strict mode so are query parameters that name no
// field.
//
// OpenAPI builds an OpenAPI 3.1 document from a Set.
package transcode
