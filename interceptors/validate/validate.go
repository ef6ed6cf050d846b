package validate

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"

	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Decoder is a request message that is not itself a proto.Message, such as
// the raw frame of a proxied call, but can decode into one. DecodeInto must
// not retain m and must leave the receiver usable (the frame is forwarded
// after it is checked).
type Decoder interface {
	DecodeInto(m proto.Message) error
}

// MaxViolations is the most violations one error reports, in its message and
// in its BadRequest detail, so that a request with thousands of bad list
// items cannot produce trailers larger than clients accept.
const MaxViolations = 20

// StreamServerInterceptor returns a stream server interceptor that validates
// every message the handler receives. A nil v uses
// protovalidate.GlobalValidator.
func StreamServerInterceptor(v protovalidate.Validator, opts ...Option) grpc.StreamServerInterceptor {
	c := newChecker(v, opts)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &serverStream{ServerStream: ss, checker: c, method: info.FullMethod})
	}
}

// UnaryServerInterceptor returns a unary server interceptor that validates
// the request before calling the handler. A nil v uses
// protovalidate.GlobalValidator.
func UnaryServerInterceptor(v protovalidate.Validator, opts ...Option) grpc.UnaryServerInterceptor {
	c := newChecker(v, opts)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		var lk lookup
		if err := c.check(info.FullMethod, req, &lk); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

type checker struct {
	*options
	validator protovalidate.Validator
	// ruled caches, per request message descriptor, whether a message of
	// that type can carry a buf.validate rule (mayHaveRules).
	ruled sync.Map // protoreflect.MessageDescriptor → bool
}

func newChecker(v protovalidate.Validator, opts []Option) *checker {
	if v == nil {
		v = protovalidate.GlobalValidator
	}
	return &checker{options: evaluate(opts), validator: v}
}

// lookup memoizes, for one call, the request type of its method and
// whether its frames need checking.
type lookup struct {
	done bool
	typ  protoreflect.MessageType
	// known: the type is known and has rules, so frames are decoded and
	// checked.
	known bool
}

// check validates m, a request of method.
func (c *checker) check(method string, m any, lk *lookup) error {
	switch m := m.(type) {
	case proto.Message:
		return c.validate(m)
	case Decoder:
		if !lk.done {
			lk.typ, lk.known = c.requestType(method)
			// A type without rules anywhere in it cannot fail validation:
			// its frames pass without being decoded.
			lk.known = lk.known && c.hasRules(lk.typ.Descriptor())
			lk.done = true
		}
		if !lk.known {
			return nil
		}
		msg := lk.typ.New().Interface()
		if err := m.DecodeInto(msg); err != nil {
			return status.Errorf(codes.InvalidArgument, "request is not a valid %s: %v", lk.typ.Descriptor().FullName(), err)
		}
		return c.validate(msg)
	}
	return nil
}

// hasRules reports, once per descriptor, whether messages of type md can
// carry a buf.validate rule.
func (c *checker) hasRules(md protoreflect.MessageDescriptor) bool {
	if v, ok := c.ruled.Load(md); ok {
		return v.(bool)
	}
	r := mayHaveRules(md, map[protoreflect.FullName]bool{})
	c.ruled.Store(md, r)
	return r
}

// mayHaveRules reports whether md, or any message type reachable through
// its fields (nested messages, repeated and map values, recursion included),
// carries a buf.validate option on the message, a oneof or a field, or
// options that could not be read (unknown fields: an extension the
// descriptor's source did not resolve), which may be rules. seen holds the
// types already walked.
func mayHaveRules(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	if seen[md.FullName()] {
		return false
	}
	seen[md.FullName()] = true
	if optionsMayHaveRules(md.Options()) {
		return true
	}
	for i, oneofs := 0, md.Oneofs(); i < oneofs.Len(); i++ {
		if optionsMayHaveRules(oneofs.Get(i).Options()) {
			return true
		}
	}
	for i, fields := 0, md.Fields(); i < fields.Len(); i++ {
		fd := fields.Get(i)
		if optionsMayHaveRules(fd.Options()) {
			return true
		}
		if m := fd.Message(); m != nil && mayHaveRules(m, seen) {
			return true
		}
	}
	return false
}

// optionsMayHaveRules reports whether descriptor options hold a buf.validate
// extension or unknown fields.
func optionsMayHaveRules(opts proto.Message) bool {
	if opts == nil {
		return false
	}
	m := opts.ProtoReflect()
	if !m.IsValid() {
		return false
	}
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		found = fd.IsExtension() && strings.HasPrefix(string(fd.FullName()), "buf.validate.")
		return !found
	})
	return found
}

func (c *checker) validate(m proto.Message) error {
	err := c.validator.Validate(m)
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if errors.As(err, &verr) {
		return invalid(verr)
	}
	// The rules do not compile or failed to evaluate: the schema's fault,
	// not the client's.
	return status.Errorf(codes.Internal, "cannot validate request: %v", err)
}

// invalid turns violations into an InvalidArgument status with a
// BadRequest detail.
func invalid(verr *protovalidate.ValidationError) error {
	vs := verr.Violations
	more := 0
	if len(vs) > MaxViolations {
		vs, more = vs[:MaxViolations], len(vs)-MaxViolations
	}
	var msg strings.Builder
	msg.WriteString("invalid request: ")
	br := &errdetails.BadRequest{FieldViolations: make([]*errdetails.BadRequest_FieldViolation, 0, len(vs))}
	for i, v := range vs {
		if i > 0 {
			msg.WriteString("; ")
		}
		msg.WriteString(v.String()) // "path: reason"
		desc := v.Proto.GetMessage()
		if desc == "" {
			desc = "[" + v.Proto.GetRuleId() + "]"
		}
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       protovalidate.FieldPathString(v.Proto.GetField()),
			Description: desc,
		})
	}
	if more > 0 {
		msg.WriteString("; and " + strconv.Itoa(more) + " more")
	}
	st := status.New(codes.InvalidArgument, msg.String())
	if ds, err := st.WithDetails(br); err == nil {
		st = ds
	}
	return st.Err()
}

// serverStream validates each message the handler receives.
type serverStream struct {
	grpc.ServerStream
	checker *checker
	method  string
	lookup  lookup // touched only by RecvMsg, which is not called concurrently.
}

// RecvMsg receives a message and validates it. It returns the validation's
// status error, if any, instead of the message.
func (s *serverStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.checker.check(s.method, m, &s.lookup)
}
