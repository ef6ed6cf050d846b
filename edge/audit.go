package edge

import (
	"context"
	"strings"

	"google.golang.org/grpc"

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
}

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
	return &auditState{
		sink: sink,
		opts: []audit.Option{
			audit.WithFailClosed(s.OnSinkFailure != "KEEP_SERVING"),
			audit.WithCapture(s.Capture),
			audit.WithRedact(s.Redact),
			audit.WithRequestTypes(compiledInRequestType),
			audit.WithSkip(unaudited),
			audit.WithRequestID(requestid.FromContext),
			audit.WithTraceID(traceID),
		},
	}, nil
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
