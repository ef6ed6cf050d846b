package telemetry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/stats"
)

// OTLP protocols, as written in config.
const (
	ProtocolGRPC = "GRPC"
	ProtocolHTTP = "HTTP"
)

// TracingConfig is the effective tracing configuration, every default
// filled in (see config.TracingSettings).
type TracingConfig struct {
	// Endpoint is the collector's host:port.
	Endpoint string
	// Protocol is ProtocolGRPC or ProtocolHTTP.
	Protocol string
	// Insecure sends without TLS.
	Insecure bool
	// SamplingRatio is the fraction of new traces sampled; a sampled parent
	// is always followed.
	SamplingRatio float64
	// ServiceName and ServiceVersion are resource attributes.
	ServiceName, ServiceVersion string
	// QueueSize bounds the spans waiting for export.
	QueueSize int
	// BatchSize is the most spans per export. Default 512.
	BatchSize int
	// Interval is how long a span may wait before its batch is exported.
	// Default 1s.
	Interval time.Duration
	// ExportTimeout bounds one export, retries included. Default 10s.
	ExportTimeout time.Duration
}

// Tracing is the gateway's OpenTelemetry tracer provider and propagators.
// It is not installed globally: the stats handlers are given it.
type Tracing struct {
	tp   *sdktrace.TracerProvider
	prop propagation.TextMapPropagator
	proc *queueProcessor
}

// NewTracing returns a tracer provider exporting to the collector of cfg
// through a bounded queue; m counts exported and dropped spans (m may be
// nil). It does not connect yet: the exporter connects on first export.
func NewTracing(cfg TracingConfig, m *Metrics) (*Tracing, error) {
	exp, err := newExporter(cfg)
	if err != nil {
		return nil, err
	}
	return NewTracingWithExporter(cfg, exp, m), nil
}

// NewTracingWithExporter is NewTracing with the exporter given.
func NewTracingWithExporter(cfg TracingConfig, exp sdktrace.SpanExporter, m *Metrics) *Tracing {
	proc := newQueueProcessor(exp, cfg, m)
	name := cfg.ServiceName
	if name == "" {
		name = "gatehouse"
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", name)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SamplingRatio))),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSpanProcessor(proc),
	)
	return &Tracing{
		tp:   tp,
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		proc: proc,
	}
}

func newExporter(cfg TracingConfig) (sdktrace.SpanExporter, error) {
	timeout := cfg.ExportTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	// Exports are retried briefly; the queue keeps filling meanwhile and
	// drops what does not fit, so calls never wait for the collector.
	switch cfg.Protocol {
	case "", ProtocolGRPC:
		opts := []otlptracegrpc.Option{
			otlptracegrpc.WithEndpoint(cfg.Endpoint),
			otlptracegrpc.WithTimeout(timeout),
			otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: true, InitialInterval: 500 * time.Millisecond, MaxInterval: 2 * time.Second, MaxElapsedTime: timeout}),
		}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		return otlptracegrpc.New(context.Background(), opts...)
	case ProtocolHTTP:
		opts := []otlptracehttp.Option{
			otlptracehttp.WithEndpoint(cfg.Endpoint),
			otlptracehttp.WithTimeout(timeout),
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: true, InitialInterval: 500 * time.Millisecond, MaxInterval: 2 * time.Second, MaxElapsedTime: timeout}),
		}
		if cfg.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		return otlptracehttp.New(context.Background(), opts...)
	}
	return nil, fmt.Errorf("telemetry: unknown OTLP protocol %q", cfg.Protocol)
}

// TracerProvider returns the tracer provider.
func (t *Tracing) TracerProvider() trace.TracerProvider { return t.tp }

// Propagator returns the W3C trace context and baggage propagator.
func (t *Tracing) Propagator() propagation.TextMapPropagator { return t.prop }

// otelOptions are the otelgrpc options of both handlers. otelgrpc's own
// metrics are off: Metrics counts calls per route, which it cannot.
func (t *Tracing) otelOptions() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithPropagators(t.prop),
		otelgrpc.WithMeterProvider(noopmetric.NewMeterProvider()),
	}
}

// ForceFlush exports the spans queued so far.
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.ForceFlush(ctx)
}

// Shutdown exports the spans still queued, until ctx ends, and stops the
// exporter. Spans that end afterwards are dropped.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	err := t.tp.Shutdown(ctx)
	// The provider skips its processors when ctx has ended already; the
	// queue's goroutine must stop all the same.
	_ = t.proc.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return nil // what was left is counted as dropped
	}
	return err
}

var _ stats.Handler = (*serverHandler)(nil)
