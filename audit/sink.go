package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of Write and Submit.
var (
	// ErrClosed: the sink is closed, the record was not accepted.
	ErrClosed = errors.New("audit: sink closed")
	// ErrSlow: the record waited too long for the sink, which is slow or
	// stuck.
	ErrSlow = errors.New("audit: sink too slow")
)

// File is what a Sink writes to; *os.File is one.
type File interface {
	io.Writer
	Sync() error
	Close() error
}

// Options configure a Sink.
type Options struct {
	// Interval, when positive, fsyncs every Interval instead of after each
	// batch of records (the default, "PER_RECORD").
	Interval time.Duration
	// QueueSize bounds the records waiting to be written. Default 1024.
	QueueSize int
	// Wait bounds how long Write waits for its record to be written. Default
	// 2s.
	Wait time.Duration
	// OnWritten and OnLost, when set, are called once per record written and
	// per record not written (refused by a full queue, or failed to write;
	// a Write that gave up waiting counts only if its record then fails).
	OnWritten, OnLost func()
}

// Sink appends records to an audit file, chaining them. Writes are grouped:
// one goroutine writes every record queued, then fsyncs once (or every
// Interval), then tells each writer. A write that fails part way (a full
// disk) is cut off the file, its records counted lost, so that the records
// written afterwards continue a chain that verifies. It is safe for
// concurrent use.
type Sink struct {
	f    File
	opts Options

	mu     sync.RWMutex // held for reading while a record is queued
	closed bool
	queue  chan *pending
	done   chan struct{}

	failing atomic.Bool // the last write or fsync failed, or a Write gave up waiting since

	// Owned by the writer goroutine.
	seq  uint64
	prev string
	err  error // the first error of the writer, for Close

	// rewind, when not nil, can cut the file back to off, the end of the
	// last record written whole; torn is true while a failed write may
	// have left part of a record after off (the cut itself failed).
	rewind rewinder
	off    int64
	torn   bool
}

// rewinder is a File that can be cut back after a failed write (*os.File
// is one).
type rewinder interface {
	Truncate(size int64) error
	Seek(offset int64, whence int) (int64, error)
}

type pending struct {
	rec    *Record
	result chan error // nil for Submit
}

// Open opens (or creates) the audit file at path and continues its chain:
// the next record follows the file's last one. A partial last line, left
// by a crash during a write, is cut off first: it was never acknowledged.
//
// A path that is not a regular file (a named pipe read by a log shipper, a
// device such as /dev/stdout) cannot be read back: reading it would block
// for ever (a pipe the gateway itself holds open for writing never ends) or
// never end (/dev/full reads zeros), and it can be neither truncated nor
// fsynced (EINVAL). Its chain starts anew, from seq 1, each time it is
// opened, and records are not fsynced: a write that returns is all there
// is.
func Open(path string, opts Options) (*Sink, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	if !st.Mode().IsRegular() {
		return newSink(stream{f}, opts, 0, genesis, nil, 0), nil
	}
	seq, prev, end, err := tail(f)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("audit: %s: %w", path, err)
	}
	if err := f.Truncate(end); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	if _, err := f.Seek(end, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	return newSink(f, opts, seq, prev, f, end), nil
}

// stream is an audit file that is not a regular file (see Open): there is
// nothing to fsync, and fsync fails on it. It cannot be cut back either: a
// write that fails part way leaves part of a record in it, which Verify
// then reports.
type stream struct{ *os.File }

// Sync does nothing.
func (stream) Sync() error { return nil }

// New returns a Sink that starts a new chain on f, at f's current offset.
// When f can also Truncate and Seek (an *os.File can), a write that fails
// part way is cut off, as for Open.
func New(f File, opts Options) *Sink {
	var rw rewinder
	var off int64
	if r, ok := f.(rewinder); ok {
		if o, err := r.Seek(0, io.SeekCurrent); err == nil {
			rw, off = r, o
		}
	}
	return newSink(f, opts, 0, genesis, rw, off)
}

func newSink(f File, opts Options, seq uint64, prev string, rw rewinder, off int64) *Sink {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
	if opts.Wait <= 0 {
		opts.Wait = 2 * time.Second
	}
	s := &Sink{
		f: f, opts: opts,
		queue: make(chan *pending, opts.QueueSize),
		done:  make(chan struct{}),
		seq:   seq, prev: prev,
		rewind: rw, off: off,
	}
	go s.run()
	return s
}

// tail reads the file's last complete record: its seq, its hash and the
// offset just after it.
func tail(f *os.File) (seq uint64, prev string, end int64, err error) {
	prev = genesis
	r := bufio.NewReaderSize(f, 64<<10)
	var off int64
	var last []byte
	for {
		line, rerr := r.ReadBytes('\n')
		if rerr == io.EOF {
			break // a partial line (no newline) is dropped
		}
		if rerr != nil {
			return 0, "", 0, rerr
		}
		off += int64(len(line))
		if l := bytes.TrimSuffix(line, []byte("\n")); len(l) > 0 {
			last = l
		}
	}
	if last != nil {
		rec, h, derr := decode(last)
		if derr != nil {
			return 0, "", 0, fmt.Errorf("the last record does not verify (%v): run `gatehouse audit verify`", derr)
		}
		seq, prev = rec.Seq, h
	}
	return seq, prev, off, nil
}

// Healthy reports whether the sink is keeping up: its last write succeeded,
// no Write has given up waiting (ErrSlow) since, and its queue has room.
func (s *Sink) Healthy() bool {
	return !s.failing.Load() && len(s.queue) < cap(s.queue)
}

// Write queues rec and waits until it is written (and fsynced, unless
// Interval is set), or until the sink is too slow. rec must not be used
// afterwards. The error says the record may be lost.
//
// A Write that gives up (ErrSlow) marks the sink unhealthy until the writer
// next finishes a batch: a writer stuck in a write that does not return (a
// pipe nobody reads, a hung disk) holds one batch and leaves the queue
// empty, and without this Healthy would go on reporting true, so that a
// fail-closed gateway would send every call to its backend and only then
// fail it, after Wait.
func (s *Sink) Write(rec *Record) error {
	p := &pending{rec: rec, result: make(chan error, 1)}
	t := time.NewTimer(s.opts.Wait)
	defer t.Stop()
	err := s.enqueue(p, t.C)
	if err != nil {
		s.lost(1) // never queued
	}
	if err == nil {
		select {
		case err = <-p.result:
			return err
		case <-t.C:
			select {
			case err = <-p.result: // written just in time
				return err
			default:
			}
			err = ErrSlow // it may still be written later
		}
	}
	if errors.Is(err, ErrSlow) {
		s.failing.Store(true)
	}
	return err
}

// Submit queues rec without waiting; false when the queue is full or the
// sink closed, and the record is lost (and counted). Records that fail to be
// written later are counted as lost too.
func (s *Sink) Submit(rec *Record) bool {
	if err := s.enqueue(&pending{rec: rec}, nil); err != nil {
		s.lost(1)
		return false
	}
	return true
}

// enqueue queues p, waiting for room until wait fires (never, when wait is
// nil: it fails at once on a full queue).
func (s *Sink) enqueue(p *pending, wait <-chan time.Time) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case s.queue <- p:
		return nil
	default:
	}
	if wait == nil {
		return ErrSlow
	}
	select {
	case s.queue <- p:
		return nil
	case <-wait:
		return ErrSlow
	}
}

// Close stops accepting records, writes and fsyncs every record accepted
// so far and closes the file. When ctx ends first, Close returns ctx's
// error and the writing goes on in the background.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.queue)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Sink) lost(n int) {
	if s.opts.OnLost != nil {
		for range n {
			s.opts.OnLost()
		}
	}
}

// run is the writer goroutine.
func (s *Sink) run() {
	defer close(s.done)
	var tick <-chan time.Time
	if s.opts.Interval > 0 {
		t := time.NewTicker(s.opts.Interval)
		defer t.Stop()
		tick = t.C
	}
	dirty := false
	var batch []*pending
	var buf bytes.Buffer
	for {
		select {
		case p, ok := <-s.queue:
			if !ok {
				if dirty {
					s.note(s.f.Sync())
				}
				s.note(s.f.Close())
				return
			}
			batch = append(batch[:0], p)
		more:
			for len(batch) < 256 {
				select {
				case p, ok := <-s.queue:
					if !ok {
						break more
					}
					batch = append(batch, p)
				default:
					break more
				}
			}
			err := s.writeBatch(batch, &buf)
			if err == nil {
				if s.opts.Interval > 0 {
					dirty = true
				} else {
					err = s.f.Sync()
				}
			}
			s.failing.Store(err != nil)
			s.note(err)
			for _, p := range batch {
				if p.result != nil {
					p.result <- err
				}
				if err != nil {
					s.lost(1) // Write's caller learns it too, and fails its call
				} else if s.opts.OnWritten != nil {
					s.opts.OnWritten()
				}
			}
			clear(batch)
		case <-tick:
			if dirty {
				err := s.f.Sync()
				s.failing.Store(err != nil)
				s.note(err)
				dirty = err != nil
			}
		}
	}
}

// writeBatch chains and writes the records of batch in one write. On error
// the chain does not advance, so the next records follow the last one
// written, and the file is cut back to the end of that record: a write that
// failed part way (a full disk) must not leave part of a line in the middle
// of the file, which would make every later record fail to verify. When
// the cut fails too, no record is written until a later batch's cut
// succeeds: each is lost, and counted, rather than chained after garbage.
func (s *Sink) writeBatch(batch []*pending, buf *bytes.Buffer) error {
	if s.torn {
		if err := s.cut(); err != nil {
			return err
		}
	}
	buf.Reset()
	seq, prev := s.seq, s.prev
	for _, p := range batch {
		seq++
		p.rec.Seq, p.rec.Prev = seq, prev
		line, h, err := encode(p.rec)
		if err != nil {
			return err
		}
		buf.Write(line)
		buf.WriteByte('\n')
		prev = h
	}
	if _, err := s.f.Write(buf.Bytes()); err != nil {
		if s.rewind != nil {
			s.torn = true
			if cerr := s.cut(); cerr != nil {
				return errors.Join(err, cerr)
			}
		}
		return err
	}
	s.seq, s.prev = seq, prev
	s.off += int64(buf.Len())
	return nil
}

// cut truncates the file back to the end of the last record written whole
// and moves the write offset there.
func (s *Sink) cut() error {
	if err := s.rewind.Truncate(s.off); err != nil {
		return fmt.Errorf("audit: cutting off a partly written record: %w", err)
	}
	if _, err := s.rewind.Seek(s.off, io.SeekStart); err != nil {
		return fmt.Errorf("audit: cutting off a partly written record: %w", err)
	}
	s.torn = false
	return nil
}

func (s *Sink) note(err error) {
	if err != nil && s.err == nil {
		s.err = err
	}
}
