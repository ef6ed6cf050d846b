package edge

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingWriter is an http.ResponseWriter that records the order of
// writes and flushes, and fails the test if two goroutines use it at once.
type recordingWriter struct {
	t       *testing.T
	inUse   sync.Mutex
	header  http.Header
	body    bytes.Buffer
	ops     []string // "w<n>", "f", "h<code>"
	writes  int
	flushes int
	delay   time.Duration // each flush after the third takes this long
}

func (r *recordingWriter) enter() func() {
	if !r.inUse.TryLock() {
		r.t.Error("the ResponseWriter is used by two goroutines at once")
		r.inUse.Lock()
	}
	return r.inUse.Unlock
}

func (r *recordingWriter) Header() http.Header {
	defer r.enter()()
	return r.header
}

func (r *recordingWriter) WriteHeader(code int) {
	defer r.enter()()
	r.ops = append(r.ops, fmt.Sprintf("h%d", code))
}

func (r *recordingWriter) Write(p []byte) (int, error) {
	defer r.enter()()
	r.writes++
	r.ops = append(r.ops, fmt.Sprintf("w%d", len(p)))
	return r.body.Write(p)
}

func (r *recordingWriter) Flush() {
	defer r.enter()()
	r.ops = append(r.ops, "f")
	if r.flushes++; r.flushes > 3 {
		time.Sleep(r.delay) // a slow client: messages gather meanwhile
	}
}

// TestBatchWriter checks that a unary answer and a slow stream keep one
// flush per message, that a burst is gathered into fewer writes with
// every byte in order, and that the trailers (Header after the body) come
// after the last byte.
func TestBatchWriter(t *testing.T) {
	for _, tt := range []struct {
		name      string
		msgs      int
		gap       time.Duration // between messages
		wantBatch bool          // fewer writes than messages
	}{
		{name: "unary", msgs: 1},
		{name: "slow stream", msgs: 5, gap: 2 * time.Millisecond},
		{name: "burst", msgs: 2000, wantBatch: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rw := &recordingWriter{t: t, header: http.Header{}, delay: 50 * time.Microsecond}
			w := newBatchWriter(rw)
			w.Header().Set("Content-Type", "application/grpc")
			w.WriteHeader(http.StatusOK)
			w.Flush()
			var want bytes.Buffer
			for i := range tt.msgs {
				msg := []byte(fmt.Sprintf("<message %d>", i))
				want.Write(msg)
				_, _ = w.Write(msg[:5]) // as grpc-go does: the 5-byte prefix, then the data
				_, _ = w.Write(msg[5:])
				w.Flush()
				time.Sleep(tt.gap)
			}
			w.Flush()
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0") // trailers: after the body
			body := rw.body.String()
			w.finish()
			if body != want.String() {
				t.Fatalf("body before the trailers: %d bytes, want %d (in order)", len(body), want.Len())
			}
			batched := rw.writes < 2*tt.msgs
			if batched != tt.wantBatch {
				t.Errorf("%d writes for %d messages: batched %v, want %v", rw.writes, tt.msgs, batched, tt.wantBatch)
			}
			if !tt.wantBatch {
				flushes := strings.Count(strings.Join(rw.ops, " "), "f")
				if flushes < tt.msgs+1 {
					t.Errorf("%d flushes for %d messages: each message must leave at once", flushes, tt.msgs)
				}
			}
		})
	}
}
