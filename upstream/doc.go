// Package upstream keeps the gateway's connections to its backends: one
// pooled grpc.ClientConn per backend, created once and reused by every call,
// balancing round-robin over the backend's endpoints and reporting the
// connectivity state of each endpoint.
//
// The router asks a [Pool] for a backend's connection by name
// ([Pool.Conn]); admin and health endpoints read [Pool.Backends] and
// [Pool.Ready]; a configuration reload calls [Pool.Update].
package upstream
