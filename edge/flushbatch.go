package edge

import (
	"net/http"
	"sync"
	"time"
)

// gRPC through net/http (grpc.Server.ServeHTTP: TLS or plaintext shared
// listeners with grpc_connections: http) flushes the response after every
// message, and each flush is a round trip to net/http's connection
// goroutine and a write to the socket: a server stream of small messages
// costs one syscall and several goroutine switches per message.
//
// batchWriter keeps the first flushes as they are, so that a unary answer
// or a stream's first message leaves at once, but once a stream's flushes
// come back to back (burstGap apart or less), a flusher goroutine takes
// over: messages are gathered while it writes and flushes the previous
// ones, so a burst goes out in a few large writes. Latency stays that of
// one flush (the flusher starts at once); memory is bounded
// (maxBatchPending, after which the stream waits for the flusher). Before
// the trailers (Header after the body) the flusher drains and stops.
//
// Every ResponseWriter call comes from the ServeHTTP goroutine (grpc-go's
// handler transport runs them there); the flusher touches the
// ResponseWriter only while that goroutine is, by the protocol below, not.

// burstGap is how close two flushes must be for the stream to count as a
// burst.
const burstGap = 100 * time.Microsecond

// maxBatchPending bounds what waits for the flusher.
const maxBatchPending = 256 << 10

type batchWriter struct {
	rw      http.ResponseWriter
	flusher http.Flusher

	// Sync mode (the ServeHTTP goroutine only).
	dirty     bool      // written since the last flush
	lastFlush time.Time // of the last flush with data

	// Async mode: the flusher runs.
	async bool // set and cleared by the ServeHTTP goroutine
	mu    sync.Mutex
	cond  *sync.Cond
	buf   []byte // written, not yet given to rw
	spare []byte
	kick  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

func newBatchWriter(rw http.ResponseWriter) *batchWriter {
	w := &batchWriter{rw: rw}
	w.flusher, _ = rw.(http.Flusher)
	w.cond = sync.NewCond(&w.mu)
	return w
}

// Header implements http.ResponseWriter. After the body it means trailers
// come next: the flusher drains and stops first.
func (w *batchWriter) Header() http.Header {
	w.sync()
	return w.rw.Header()
}

// WriteHeader implements http.ResponseWriter.
func (w *batchWriter) WriteHeader(code int) {
	w.sync()
	w.rw.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (w *batchWriter) Write(p []byte) (int, error) {
	if !w.async {
		w.dirty = true
		return w.rw.Write(p)
	}
	w.mu.Lock()
	for len(w.buf) >= maxBatchPending {
		w.cond.Wait()
	}
	w.buf = append(w.buf, p...)
	w.mu.Unlock()
	return len(p), nil
}

// Flush implements http.Flusher.
func (w *batchWriter) Flush() {
	if w.flusher == nil {
		return
	}
	if w.async {
		select {
		case w.kick <- struct{}{}:
		default: // a kick is pending: the flusher takes this too
		}
		return
	}
	if !w.dirty {
		w.flusher.Flush() // headers only
		return
	}
	now := time.Now()
	burst := !w.lastFlush.IsZero() && now.Sub(w.lastFlush) <= burstGap
	w.lastFlush = now
	w.dirty = false
	w.flusher.Flush()
	if burst {
		w.startAsync()
	}
}

// startAsync hands flushing to a flusher goroutine.
func (w *batchWriter) startAsync() {
	w.async = true
	w.kick = make(chan struct{}, 1)
	w.stop = make(chan struct{})
	w.done = make(chan struct{})
	go w.flushLoop()
}

func (w *batchWriter) flushLoop() {
	defer close(w.done)
	for {
		select {
		case <-w.kick:
			w.flushPending()
		case <-w.stop:
			w.flushPending()
			return
		}
	}
}

// flushPending writes and flushes what has gathered.
func (w *batchWriter) flushPending() {
	w.mu.Lock()
	b := w.buf
	w.buf = w.spare[:0]
	w.mu.Unlock()
	if len(b) > 0 {
		_, _ = w.rw.Write(b) // a failed write: the client is gone, grpc-go sees it by the request's context
		w.flusher.Flush()
	}
	w.mu.Lock()
	w.spare = b[:0]
	w.cond.Broadcast()
	w.mu.Unlock()
}

// sync stops the flusher once it has written everything: from here the
// ServeHTTP goroutine owns the ResponseWriter again.
func (w *batchWriter) sync() {
	if !w.async {
		return
	}
	close(w.stop)
	<-w.done
	w.async = false
	w.lastFlush = time.Time{} // the burst is over
}

// finish is called when the handler has returned.
func (w *batchWriter) finish() { w.sync() }
