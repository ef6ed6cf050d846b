package telemetry

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowWriter records what it is given, one write at a time, and can be
// held to simulate a slow disk or pipe.
type slowWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	hold   chan struct{} // when set, each Write waits for a receive
	err    error
}

func (w *slowWriter) Write(p []byte) (int, error) {
	if w.hold != nil {
		<-w.hold
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	w.buf.Write(p)
	return len(p), w.err
}

func (w *slowWriter) snapshot() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String(), w.writes
}

func TestLogBufferBatchesAndKeepsEveryLine(t *testing.T) {
	w := &slowWriter{}
	b := NewLogBuffer(w, time.Hour) // only Close (or 64 KiB) flushes
	var want strings.Builder
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				line := fmt.Sprintf("goroutine %d line %d\n", g, i)
				if _, err := b.Write([]byte(line)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if got, _ := w.snapshot(); got != "" && len(got) < logFlushAt {
		t.Errorf("%d bytes written before 64 KiB were buffered", len(got))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got, writes := w.snapshot()
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 2000 {
		t.Fatalf("%d lines after Close, want 2000", len(lines))
	}
	seen := map[string]bool{}
	for _, l := range lines {
		seen[l] = true
	}
	for g := range 4 {
		for i := range 500 {
			want.Reset()
			fmt.Fprintf(&want, "goroutine %d line %d", g, i)
			if !seen[want.String()] {
				t.Fatalf("line %q lost", want.String())
			}
		}
	}
	if writes > 3 {
		t.Errorf("%d writes for %d bytes, want them batched", writes, len(got))
	}
}

func TestLogBufferFlushesOnInterval(t *testing.T) {
	w := &slowWriter{}
	b := NewLogBuffer(w, 10*time.Millisecond)
	defer b.Close()
	_, _ = b.Write([]byte("one\n"))
	for deadline := time.Now().Add(5 * time.Second); ; {
		if got, _ := w.snapshot(); got == "one\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the line was not flushed on the interval")
		}
		time.Sleep(time.Millisecond)
	}
}

// A writer that stalls makes Write wait once the buffer is full, instead of
// growing without bound or dropping lines.
func TestLogBufferBackPressure(t *testing.T) {
	w := &slowWriter{hold: make(chan struct{})}
	b := NewLogBuffer(w, time.Millisecond)
	line := bytes.Repeat([]byte("x"), 1023)
	line = append(line, '\n')
	blocked := make(chan struct{})
	go func() {
		defer close(blocked)
		for range 2 * logLimit / len(line) {
			_, _ = b.Write(line)
		}
	}()
	select {
	case <-blocked:
		t.Fatal("8 MiB buffered in front of a stalled writer; want Write to wait")
	case <-time.After(200 * time.Millisecond):
	}
	close(w.hold) // the writer recovers
	<-blocked
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := w.snapshot(); len(got) != 2*logLimit/len(line)*len(line) {
		t.Errorf("%d bytes written, want %d", len(got), 2*logLimit/len(line)*len(line))
	}
}

func TestLogBufferReportsWriteErrors(t *testing.T) {
	w := &slowWriter{err: errors.New("disk full")}
	b := NewLogBuffer(w, time.Millisecond)
	_, _ = b.Write([]byte("x\n"))
	if err := b.Close(); err == nil || err.Error() != "disk full" {
		t.Errorf("Close = %v, want the write error", err)
	}
}
