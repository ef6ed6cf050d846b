package edge

import (
	"context"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"

	trail "github.com/gatehouse-dev/gatehouse/audit"
	"github.com/gatehouse-dev/gatehouse/config"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/interceptors/audit"
	"github.com/gatehouse-dev/gatehouse/interceptors/requestid"
	"github.com/gatehouse-dev/gatehouse/telemetry"
)

// auditState is the audit trail: its sink and the interceptor options.
type auditState struct {
	sink *trail.Sink
	opts []audit.Option

	// types resolves the request type of a method whose fields a route
	// captures: the gateway's runtime schemas (backends[].schema, through
	// Gateway.requestType) once useRequestTypes is called, then the
	// compiled-in ones. A backend's service known only by reflection or a
	// descriptor set is not in the global registry, and without its
	// schema a capture records nothing and debug_redact cannot be honoured.
	types atomic.Pointer[requestTypeFunc]
}

// requestTypeFunc resolves the request type of a full method name.
type requestTypeFunc func(fullMethod string) (protoreflect.MessageType, bool)

// newAuditState opens the audit file of cfg; nil when the audit trail is
// off. m counts written and lost records (m may be nil).
func newAuditState(cfg *configv1.Config, m *telemetry.Metrics) (*auditState, error) {
	s := config.Audit(cfg)
	if s.File == "" {
		return nil, nil
	}
	o := trail.Options{OnWritten: m.AuditWritten, OnLost: m.AuditLost}
	if s.Fsync == "INTERVAL" {
		o.Interval = s.FsyncInterval
	}
	sink, err := trail.Open(s.File, o)
	if err != nil {
		return nil, err
	}
	a := &auditState{sink: sink}
	compiled := requestTypeFunc(compiledInRequestType)
	a.types.Store(&compiled)
	a.opts = []audit.Option{
		audit.WithFailClosed(s.OnSinkFailure != "KEEP_SERVING"),
		audit.WithCapture(s.Capture),
		audit.WithRedact(s.Redact),
		audit.WithRequestTypes(a.requestType),
		audit.WithSkip(unaudited),
		audit.WithRequestID(requestid.FromContext),
		audit.WithTraceID(traceID),
	}
	return a, nil
}

// useRequestTypes makes captures resolve request types with fn, which New
// sets to the gateway's requestType (schema.go): the runtime schemas, then
// the compiled-in ones. Safe to call while calls are audited.
func (a *auditState) useRequestTypes(fn requestTypeFunc) {
	if a == nil || fn == nil {
		return
	}
	a.types.Store(&fn)
}

// requestType resolves the request type of a method for a capture.
func (a *auditState) requestType(fullMethod string) (protoreflect.MessageType, bool) {
	return (*a.types.Load())(fullMethod)
}

// unaudited reports whether a method stays out of the audit trail: health
// checks and reflection, which probes and tools call all the time.
func unaudited(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.") || strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

func (a *auditState) stream() []grpc.StreamServerInterceptor {
	if a == nil {
		return nil
	}
	return []grpc.StreamServerInterceptor{audit.StreamServerInterceptor(a.sink, a.opts...)}
}

func (a *auditState) unary() []grpc.UnaryServerInterceptor {
	if a == nil {
		return nil
	}
	return []grpc.UnaryServerInterceptor{audit.UnaryServerInterceptor(a.sink, a.opts...)}
}

// close writes every accepted record and closes the file.
func (a *auditState) close(ctx context.Context) {
	if a == nil {
		return
	}
	_ = a.sink.Close(ctx)
}
