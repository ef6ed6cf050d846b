// Package requestid gives every call a request id that the client, the
// gateway's logs and the backend all agree on.
//
// An inbound "x-request-id" is kept when it is sane (1 to 128 characters of
// [A-Za-z0-9._:-]); otherwise the gateway mints one (128 random bits as 32
// hex digits). The effective id is then
//
//   - stored in the context, read with FromContext;
//   - written into the context's incoming metadata in place of whatever the
//     client sent, so a proxy forwarding incoming metadata to the backend
//     forwards the effective id, and inner interceptors that read metadata
//     (the access log) see it too;
//   - returned to the client as the "x-request-id" response header. It is
//     set with SetHeader, so headers the handler sends later are merged with
//     it.
//
// Install it just inside recovery (recovery → requestid → accesslog →
// validate → router), and install both variants: calls the gateway proxies
// for unknown methods pass only through stream interceptors.
package requestid
