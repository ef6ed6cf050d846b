// Package edge assembles a Gatehouse gateway from its configuration: the
// listeners, the interceptor chain, the router, the director and the backend
// pool. The binary (cmd/gatehouse) and the end-to-end tests (test/) both run
// exactly this assembly.
//
// Data flows one way:
//
//	listener → interceptor chain → router → director → backend pool
//
// A "shared" listener serves gRPC over h2c and REST/JSON over HTTP/1.1 and
// HTTP/2 on one port, with gRPC-Web, CORS, browser stream formats and
// WebSocket. REST and browser requests are turned into gRPC calls over an
// in-process connection into the very same grpc.Server, so they pass
// through the same interceptor chain as native gRPC calls: one policy path,
// never two. A "grpc" listener serves gRPC only, on grpc-go's native
// HTTP/2 transport.
//
// The interceptor chain, outermost first, is wired and documented in
// chain.go: recovery, ingress (client address, inbound identity removed),
// request ID, access log, audit, auth, quota, validation.
//
// Calls to methods the gateway does not serve itself reach the director
// (grpc.UnknownServiceHandler), which asks the router for a backend and
// proxies raw frames.
package edge
