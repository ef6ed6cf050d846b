package config

import (
	"net"
	"net/netip"
	"strings"
	"time"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
)

// TelemetrySettings are the effective telemetry settings: configv1.Telemetry
// with every default filled in.
type TelemetrySettings struct {
	// Tracing is on when TracingEndpoint is not empty.
	TracingEndpoint string
	// OTLPProtocol is "GRPC" or "HTTP".
	OTLPProtocol string
	// OTLPInsecure sends spans without TLS; by default only to loopback
	// endpoints.
	OTLPInsecure bool
	// SamplingRatio is the fraction of new traces sampled.
	SamplingRatio float64
	// ServiceName is the service.name resource attribute.
	ServiceName string
	// QueueSize bounds the spans waiting for export.
	QueueSize int

	// AccessLog is false when the access log is off.
	AccessLog bool
	// AccessLogFile is "-" for standard output, or a file path.
	AccessLogFile string
	// SampleSuccesses is the fraction of successful calls logged.
	SampleSuccesses float64
	// AccessLogMaxSizeMB and AccessLogMaxBackups rotate the log file.
	AccessLogMaxSizeMB, AccessLogMaxBackups int

	// Metrics is false when /metrics is off.
	Metrics bool
}

// Telemetry returns the effective telemetry settings of c. c may be nil.
func Telemetry(c *configv1.Config) TelemetrySettings {
	s := defaults.telemetry
	t := c.GetTelemetry()
	if tr := t.GetTracing(); tr != nil {
		s.TracingEndpoint = tr.GetOtlp().GetEndpoint()
		if p := tr.GetOtlp().GetProtocol(); p != "" {
			s.OTLPProtocol = p
		}
		if tr.GetOtlp() != nil && tr.GetOtlp().Insecure != nil {
			s.OTLPInsecure = tr.GetOtlp().GetInsecure()
		} else {
			s.OTLPInsecure = loopbackEndpoint(s.TracingEndpoint)
		}
		if tr.SamplingRatio != nil {
			s.SamplingRatio = tr.GetSamplingRatio()
		}
		if n := tr.GetServiceName(); n != "" {
			s.ServiceName = n
		}
		if q := tr.GetQueueSize(); q > 0 {
			s.QueueSize = int(q)
		}
	}
	al := t.GetAccessLog()
	s.AccessLog = !al.GetDisabled()
	if f := al.GetFile(); f != "" {
		s.AccessLogFile = f
	}
	if al != nil && al.SampleSuccesses != nil {
		s.SampleSuccesses = al.GetSampleSuccesses()
	}
	if n := al.GetMaxSizeMb(); n > 0 {
		s.AccessLogMaxSizeMB = int(n)
	}
	if n := al.GetMaxBackups(); n > 0 {
		s.AccessLogMaxBackups = int(n)
	}
	s.Metrics = !t.GetMetrics().GetDisabled()
	return s
}

// loopbackEndpoint reports whether host:port names a loopback host.
func loopbackEndpoint(ep string) bool {
	host, _, err := net.SplitHostPort(ep)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// AuditSettings are the effective audit settings: configv1.Audit with every
// default filled in.
type AuditSettings struct {
	// File is the audit file; empty when the audit trail is off.
	File string
	// Fsync is "PER_RECORD" or "INTERVAL".
	Fsync string
	// FsyncInterval is the fsync period of "INTERVAL".
	FsyncInterval time.Duration
	// OnSinkFailure is "FAIL_CLOSED" or "KEEP_SERVING".
	OnSinkFailure string
	// Capture maps a route's name to the request field paths recorded.
	Capture map[string][]string
	// Redact lists field paths masked wherever they appear.
	Redact []string
}

// Audit returns the effective audit settings of c; File is empty when the
// audit trail is off. c may be nil.
func Audit(c *configv1.Config) AuditSettings {
	s := defaults.audit
	a := c.GetAudit()
	if a == nil {
		return s
	}
	s.File = a.GetFile()
	if f := a.GetFsync(); f != "" {
		s.Fsync = f
	}
	durationOr(&s.FsyncInterval, a.GetFsyncInterval())
	if f := a.GetOnSinkFailure(); f != "" {
		s.OnSinkFailure = f
	}
	s.Capture = map[string][]string{}
	for _, cp := range a.GetCapture() {
		s.Capture[cp.GetRoute()] = append(s.Capture[cp.GetRoute()], cp.GetFields()...)
	}
	s.Redact = append([]string(nil), a.GetRedact()...)
	return s
}
