package telemetry_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/goleak"

	"github.com/gatehouse-dev/gatehouse/telemetry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// stuckExporter never finishes an export until its context ends.
type stuckExporter struct{ started chan struct{} }

func (e *stuckExporter) ExportSpans(ctx context.Context, _ []sdktrace.ReadOnlySpan) error {
	select {
	case e.started <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

func (e *stuckExporter) Shutdown(context.Context) error { return nil }

// TestStuckCollectorNeverBlocks ends many spans while the exporter is
// stuck: ending a span never waits (a wait would deadlock this test), and
// what does not fit in the queue is counted as dropped.
func TestStuckCollectorNeverBlocks(t *testing.T) {
	m := telemetry.NewMetrics("test")
	exp := &stuckExporter{started: make(chan struct{}, 1)}
	tr := telemetry.NewTracingWithExporter(telemetry.TracingConfig{SamplingRatio: 1, QueueSize: 8, BatchSize: 2}, exp, m)
	tracer := tr.TracerProvider().Tracer("t")
	const n = 1000
	for range n {
		_, span := tracer.Start(context.Background(), "s")
		span.End()
	}
	<-exp.started
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // give up at once: the stuck export is cancelled
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := value(t, m, "gatehouse_tracing_spans_dropped_total"); got < n-2*8 {
		t.Errorf("dropped %v spans, want at least %d", got, n-16)
	}
}

func TestConfigReloaded(t *testing.T) {
	m := telemetry.NewMetrics("test")
	m.ConfigReloaded(false)
	if value(t, m, "gatehouse_config_last_reload_successful") != 0 {
		t.Error("a failed reload left last_reload_successful at 1")
	}
	m.ConfigReloaded(true)
	if value(t, m, "gatehouse_config_last_reload_successful") != 1 {
		t.Error("a good reload left last_reload_successful at 0")
	}
	var nilMetrics *telemetry.Metrics
	nilMetrics.ConfigReloaded(true) // no-op, no panic
	nilMetrics.AuditLost()
}

// value returns the value of the first series of name in m.
func value(t *testing.T, m *telemetry.Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, x := range mf.GetMetric() {
			if x.Counter != nil {
				return x.GetCounter().GetValue()
			}
			return x.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s", name)
	return 0
}
