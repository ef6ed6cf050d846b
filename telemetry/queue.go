package telemetry

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// queueProcessor is a batching span processor with a bounded queue that
// never blocks the ending span: one that finds the queue full is dropped
// and counted. The SDK's BatchSpanProcessor behaves alike but keeps its drop
// count to itself; this one reports it to Metrics.
//
// One goroutine exports: a batch when it is full or when the oldest span
// has waited Interval, all that is queued on ForceFlush and Shutdown.
type queueProcessor struct {
	exp       sdktrace.SpanExporter
	m         *Metrics
	batchSize int
	interval  time.Duration
	timeout   time.Duration

	queue chan sdktrace.ReadOnlySpan
	flush chan chan struct{}
	stop  chan struct{}
	done  chan struct{}

	// ctx is cancelled when Shutdown gives up waiting, to end an export in
	// progress.
	ctx    context.Context
	cancel context.CancelFunc

	stopOnce sync.Once
	stopped  atomic.Bool
}

var _ sdktrace.SpanProcessor = (*queueProcessor)(nil)

func newQueueProcessor(exp sdktrace.SpanExporter, cfg TracingConfig, m *Metrics) *queueProcessor {
	p := &queueProcessor{
		exp:       exp,
		m:         m,
		batchSize: cfg.BatchSize,
		interval:  cfg.Interval,
		timeout:   cfg.ExportTimeout,
		flush:     make(chan chan struct{}),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if p.batchSize <= 0 {
		p.batchSize = 512
	}
	if p.interval <= 0 {
		p.interval = time.Second
	}
	if p.timeout <= 0 {
		p.timeout = 10 * time.Second
	}
	size := cfg.QueueSize
	if size <= 0 {
		size = 2048
	}
	// The batch being filled holds spans too: at most the queue's size, so
	// that no more than twice the queue is ever held.
	p.batchSize = min(p.batchSize, size)
	p.queue = make(chan sdktrace.ReadOnlySpan, size)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	go p.run()
	return p
}

// OnStart does nothing.
func (p *queueProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues s for export, or drops it when the queue is full. It never
// blocks.
func (p *queueProcessor) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	if p.stopped.Load() {
		p.m.spans(0, 1, false)
		return
	}
	select {
	case p.queue <- s:
	default:
		p.m.spans(0, 1, false)
	}
}

// ForceFlush exports everything queued so far and waits for it, until ctx
// ends.
func (p *queueProcessor) ForceFlush(ctx context.Context) error {
	if p.stopped.Load() {
		return nil
	}
	ack := make(chan struct{})
	select {
	case p.flush <- ack:
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is queued and stops the exporter. When ctx ends
// first, the export in progress is cancelled and the rest dropped.
func (p *queueProcessor) Shutdown(ctx context.Context) error {
	first := false
	p.stopOnce.Do(func() {
		first = true
		p.stopped.Store(true)
		close(p.stop)
	})
	select {
	case <-p.done:
	case <-ctx.Done():
		p.cancel()
		<-p.done
	}
	p.cancel()
	if !first {
		return nil
	}
	return p.exp.Shutdown(ctx)
}

func (p *queueProcessor) run() {
	defer close(p.done)
	batch := make([]sdktrace.ReadOnlySpan, 0, p.batchSize)
	timer := time.NewTimer(p.interval)
	defer timer.Stop()
	export := func() {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(p.ctx, p.timeout)
		err := p.exp.ExportSpans(ctx, batch)
		cancel()
		if err != nil {
			p.m.spans(0, len(batch), true)
		} else {
			p.m.spans(len(batch), 0, false)
		}
		clear(batch)
		batch = batch[:0]
	}
	drain := func() {
		for {
			select {
			case s := <-p.queue:
				batch = append(batch, s)
				if len(batch) >= p.batchSize {
					export()
				}
			default:
				export()
				return
			}
		}
	}
	for {
		select {
		case s := <-p.queue:
			batch = append(batch, s)
			if len(batch) >= p.batchSize {
				export()
			}
		case <-timer.C:
			export()
			timer.Reset(p.interval)
		case ack := <-p.flush:
			drain()
			close(ack)
		case <-p.stop:
			drain()
			return
		}
	}
}
