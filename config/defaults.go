package config

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
)

// The values of Listener.protocol.
const (
	// ProtocolShared serves gRPC over h2c and REST/JSON over HTTP/1.1 and
	// HTTP/2 on one port. It is the default.
	ProtocolShared = "shared"
	// ProtocolGRPC serves gRPC only, on grpc-go's native HTTP/2 transport.
	ProtocolGRPC = "grpc"
)

// Limits are the effective connection and message limits of a listener:
// configv1.Limits with every default filled in.
type Limits struct {
	// MaxConcurrentStreams bounds the concurrent streams (calls) per
	// connection.
	MaxConcurrentStreams uint32
	// MaxMessageBytes is the largest message accepted from a client or a
	// backend.
	MaxMessageBytes int
	// MaxHeaderBytes is the largest request header block.
	MaxHeaderBytes int
	// ReadHeaderTimeout is how long a client may take to send its request
	// headers.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a connection that has had no open call this long.
	IdleTimeout time.Duration
	// KeepaliveMinPing is the shortest interval at which clients may ping;
	// clients that ping more often are disconnected.
	KeepaliveMinPing time.Duration
	// KeepalivePermitWithoutCalls lets clients ping with no call open.
	KeepalivePermitWithoutCalls bool
	// KeepalivePing is how long a connection is idle before the gateway
	// pings it.
	KeepalivePing time.Duration
	// KeepaliveTimeout is how long the gateway waits for a ping's answer
	// before closing the connection.
	KeepaliveTimeout time.Duration
	// MaxConcurrentCalls caps the calls in flight on the whole listener;
	// more are refused at once with RESOURCE_EXHAUSTED. 0 is no cap.
	MaxConcurrentCalls int
}

// defaults holds every default of the configuration, in one literal. The
// values are those documented in config.proto.
var defaults = struct {
	limits        Limits
	shutdownGrace time.Duration
	protocol      string
	logLevel      string
	telemetry     TelemetrySettings
	audit         AuditSettings
	resilience    resilienceDefaults
}{
	limits: Limits{
		MaxConcurrentStreams:        100,
		MaxMessageBytes:             4 << 20,  // 4 MiB
		MaxHeaderBytes:              16 << 10, // 16 KiB
		ReadHeaderTimeout:           10 * time.Second,
		IdleTimeout:                 5 * time.Minute,
		KeepaliveMinPing:            10 * time.Second,
		KeepalivePermitWithoutCalls: false,
		KeepalivePing:               2 * time.Hour,
		KeepaliveTimeout:            20 * time.Second,
		MaxConcurrentCalls:          10000,
	},
	shutdownGrace: 30 * time.Second,
	protocol:      ProtocolShared,
	logLevel:      "info",
	telemetry: TelemetrySettings{
		OTLPProtocol:        "GRPC",
		SamplingRatio:       1,
		ServiceName:         "gatehouse",
		QueueSize:           2048,
		AccessLogFile:       "-",
		SampleSuccesses:     1,
		AccessLogMaxSizeMB:  100,
		AccessLogMaxBackups: 5,
		Metrics:             true,
	},
	audit: AuditSettings{
		Fsync:         "PER_RECORD",
		FsyncInterval: time.Second,
		OnSinkFailure: "FAIL_CLOSED",
	},
	resilience: resilienceDefaults{
		dnsRefresh:    30 * time.Second,
		loadBalancing: "ROUND_ROBIN",
		health:        HealthCheckSettings{Interval: 5 * time.Second, Timeout: time.Second, UnhealthyThreshold: 3, HealthyThreshold: 1},
		breaker: BreakerSettings{
			MaxConcurrent: 1024, MaxPending: 1024, ConsecutiveFailures: 5,
			MinRequests: 20, Window: 10 * time.Second, OpenFor: 30 * time.Second, HalfOpenProbes: 1,
		},
		outlier: OutlierSettings{ConsecutiveFailures: 5, EjectionTime: 30 * time.Second, MaxEjectionPercent: 50, Interval: time.Second},
		retry: RetrySettings{
			On: []string{"UNAVAILABLE"}, BackoffBase: 25 * time.Millisecond, BackoffMax: 250 * time.Millisecond,
			BudgetPercent: 20, BufferBytes: 65536,
		},
	},
}

// DefaultLimits returns the limits of a listener that sets none.
func DefaultLimits() Limits {
	return defaults.limits
}

// ListenerLimits returns the effective limits of l: each limit that l sets,
// and the default for each that it leaves out. l may be nil.
func ListenerLimits(l *configv1.Listener) Limits {
	lim := defaults.limits
	cl := l.GetLimits()
	if cl == nil {
		return lim
	}
	if cl.MaxConcurrentCalls != nil {
		lim.MaxConcurrentCalls = int(cl.GetMaxConcurrentCalls())
	}
	if cl.MaxConcurrentStreams != nil {
		lim.MaxConcurrentStreams = cl.GetMaxConcurrentStreams()
	}
	if cl.MaxMessageBytes != nil {
		lim.MaxMessageBytes = int(cl.GetMaxMessageBytes())
	}
	if cl.MaxHeaderBytes != nil {
		lim.MaxHeaderBytes = int(cl.GetMaxHeaderBytes())
	}
	durationOr(&lim.ReadHeaderTimeout, cl.GetReadHeaderTimeout())
	durationOr(&lim.IdleTimeout, cl.GetIdleTimeout())
	if ka := cl.GetKeepalive(); ka != nil {
		durationOr(&lim.KeepaliveMinPing, ka.GetMinPingInterval())
		lim.KeepalivePermitWithoutCalls = ka.GetPermitWithoutCalls()
		durationOr(&lim.KeepalivePing, ka.GetPingInterval())
		durationOr(&lim.KeepaliveTimeout, ka.GetPingTimeout())
	}
	return lim
}

// ShutdownGrace returns how long a shutdown waits for in-flight calls:
// shutdown_grace, or 30s when it is not set. c may be nil.
func ShutdownGrace(c *configv1.Config) time.Duration {
	d := defaults.shutdownGrace
	durationOr(&d, c.GetShutdownGrace())
	return d
}

// ListenerProtocol returns what l speaks: [ProtocolShared] (the default) or
// [ProtocolGRPC]. l may be nil.
func ListenerProtocol(l *configv1.Listener) string {
	if p := l.GetProtocol(); p != "" {
		return p
	}
	return defaults.protocol
}

// LogLevel returns the minimum level of process logs: "debug", "info" (the
// default), "warn" or "error". c may be nil.
func LogLevel(c *configv1.Config) string {
	if l := c.GetLogging().GetLevel(); l != "" {
		return l
	}
	return defaults.logLevel
}

// durationOr sets *dst to d when d is set.
func durationOr(dst *time.Duration, d *durationpb.Duration) {
	if d != nil {
		*dst = d.AsDuration()
	}
}
