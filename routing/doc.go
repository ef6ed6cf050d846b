// Package routing owns the gateway's routing: it resolves each call to a
// backend (see [Resolver] and [Target]) and proxies calls to it transparently
// with a [Director].
//
// The director never decodes a proxied message. The gateway's grpc.Server is
// created with grpc.ForceServerCodecV2([NewCodec]()) and
// grpc.UnknownServiceHandler(director.Handler); every call to a service the
// gateway does not implement itself is then received as raw [Frame]s and
// forwarded, with the same bytes, over one bidi stream on a pooled backend
// connection. The gateway's own services (health, reflection, admin) keep
// working on the same server because [Codec] hands every type other than
// *Frame to gRPC's proto codec.
//
// Proxied calls pass only through the server's stream interceptors, never
// its unary ones, whatever the call kind.
package routing
