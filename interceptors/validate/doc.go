// Package validate checks request messages against their protovalidate
// (buf.validate) rules before the handler or the backend sees them.
//
// A request that is a proto.Message, as in the gateway's own services, is
// validated directly. A request the transparent director proxies is a raw
// frame, not a proto.Message; when it implements Decoder and the method's
// request type is known (WithRequestTypes), it is decoded into a new message
// of that type and validated. Frames of methods whose type is unknown, or
// whose type has no buf.validate rule anywhere in it (on the message, a
// oneof, a field, or any message type reachable through its fields), pass
// untouched, without being decoded: proxying costs no decode unless a rule
// needs one.
//
// A request that breaks its rules is answered codes.InvalidArgument; the
// status message names each field path and reason, and carries a
// google.rpc.BadRequest detail with one FieldViolation per violation. A
// frame that does not decode as the method's request type is also answered
// codes.InvalidArgument. Rules that cannot be compiled or evaluated give
// codes.Internal.
//
// On streams, the check happens in RecvMsg: the handler receives the status
// error from RecvMsg and must return it to the client unchanged (the
// gateway's director does; a director that wraps pump errors as Internal
// would hide the code).
//
// The interceptors cache, per message descriptor, whether the type has
// rules, and the protovalidate.Validator caches its compiled rules per
// message descriptor, so memory is bounded by the number of distinct
// descriptors WithRequestTypes hands out: keep those
// stable (build them once per schema load, and a new Validator with each
// new schema set) rather than per call.
//
// Install it inside accesslog, just before the router (recovery → requestid
// → accesslog → validate → router), and install both variants: calls the
// gateway proxies for unknown methods pass only through stream interceptors.
package validate
