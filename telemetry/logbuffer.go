package telemetry

import (
	"io"
	"sync"
	"time"
)

// LogBuffer takes log lines off the call path: Write appends to a memory
// buffer and returns, and a background goroutine writes the buffer out in
// one system call every interval, or as soon as it holds 64 KiB. Nothing
// is dropped: a Write that would grow the buffer past 4 MiB waits for the
// flush in progress (back-pressure instead of loss). Close writes what is
// left.
//
// An access log line costs a write(2) per call when written directly;
// batched, the syscall is shared by every call of the interval.
type LogBuffer struct {
	w        io.Writer
	interval time.Duration

	mu     sync.Mutex
	cond   *sync.Cond // signalled when a flush frees room
	buf    []byte     // lines waiting to be written
	spare  []byte     // the other buffer, swapped in while one is written
	closed bool
	err    error // the last write error, reported by Close

	kick chan struct{}
	done chan struct{}
}

// AccessLogFlush is how long an access log line may wait in a LogBuffer
// in front of the access log (cmd/gatehouse serve, and the benchmark's
// profiling build of it).
const AccessLogFlush = 100 * time.Millisecond

const (
	logFlushAt = 64 << 10 // flush early once this much is buffered
	logLimit   = 4 << 20  // Write waits beyond this
)

// NewLogBuffer returns a LogBuffer over w that flushes every interval (at
// most; sooner when 64 KiB are waiting).
func NewLogBuffer(w io.Writer, interval time.Duration) *LogBuffer {
	b := &LogBuffer{w: w, interval: interval, kick: make(chan struct{}, 1), done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	go b.run()
	return b
}

// Write implements io.Writer. It never returns an error for a line it
// accepted; write errors are reported by Close.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	for len(b.buf)+len(p) > logLimit && len(b.buf) > 0 && !b.closed {
		b.kickLocked()
		b.cond.Wait()
	}
	if b.closed {
		b.mu.Unlock()
		return b.w.Write(p) // after Close: straight through
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= logFlushAt {
		b.kickLocked()
	}
	b.mu.Unlock()
	return len(p), nil
}

func (b *LogBuffer) kickLocked() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *LogBuffer) run() {
	defer close(b.done)
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-b.kick:
		}
		if !b.flush() {
			return
		}
	}
}

// flush writes the buffered lines; it reports false once the buffer is
// closed and empty.
func (b *LogBuffer) flush() bool {
	b.mu.Lock()
	if len(b.buf) == 0 {
		closed := b.closed
		b.mu.Unlock()
		return !closed
	}
	out := b.buf
	b.buf, b.spare = b.spare[:0], nil
	b.mu.Unlock()

	_, err := b.w.Write(out)

	b.mu.Lock()
	if err != nil {
		b.err = err
	}
	b.spare = out[:0]
	if cap(b.spare) > logLimit {
		b.spare = nil // a burst's buffer is not kept
	}
	b.cond.Broadcast()
	if b.closed {
		b.kickLocked() // drain the rest without waiting for the ticker
	}
	b.mu.Unlock()
	return true
}

// Close writes every buffered line and stops the flusher; the underlying
// writer stays open (it may be stdout). It returns the last write error
// the buffer met, if any.
func (b *LogBuffer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.cond.Broadcast()
	b.kickLocked()
	b.mu.Unlock()
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}
