package audit_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gatehouse-dev/gatehouse/audit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func rec(i int) *audit.Record {
	return &audit.Record{
		Time:     time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC),
		Method:   "/shop.v1.Orders/Create",
		Route:    "orders",
		Request:  map[string]any{"order_id": i},
		Decision: audit.Decision{Allowed: true},
		Outcome:  audit.Outcome{Code: "OK"},
	}
}

// writeFile writes n records to a new audit file and returns its path.
func writeFile(t *testing.T, n int, opts audit.Options) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, err := audit.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := s.Write(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return path
}

func verify(t *testing.T, data []byte) (audit.Summary, *audit.VerifyError) {
	t.Helper()
	sum, err := audit.Verify(bytes.NewReader(data))
	if err == nil {
		return sum, nil
	}
	var verr *audit.VerifyError
	if !errors.As(err, &verr) {
		t.Fatalf("Verify: %v", err)
	}
	return sum, verr
}

func TestVerifyFindsTampering(t *testing.T) {
	path := writeFile(t, 6, audit.Options{})
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum, verr := verify(t, data)
	if verr != nil || sum.Records != 6 || sum.LastSeq != 6 || len(sum.Head) != 64 {
		t.Fatalf("intact file: %+v, %v", sum, verr)
	}
	lines := strings.SplitAfter(string(data), "\n")
	lines = lines[:len(lines)-1] // the empty string after the last newline
	join := func(ls ...string) []byte { return []byte(strings.Join(ls, "")) }
	swap := append([]string(nil), lines...)
	swap[2], swap[3] = swap[3], swap[2]

	tests := []struct {
		name     string
		data     []byte
		wantLine int
		wantKind string
	}{
		{"one byte changed", bytes.Replace(data, []byte(`"order_id":2`), []byte(`"order_id":7`), 1), 3, audit.Altered},
		{"one byte of the hash changed", flipHash(lines, 1), 2, audit.Altered},
		{"last record changed", bytes.Replace(data, []byte(`"order_id":5`), []byte(`"order_id":9`), 1), 6, audit.Altered},
		{"not JSON any more", bytes.Replace(data, []byte(`"method"`), []byte(`"method`), 1), 1, audit.Altered},
		{"middle line removed", join(append(append([]string(nil), lines[:3]...), lines[4:]...)...), 4, audit.Removed},
		{"first line removed", join(lines[1:]...), 1, audit.Removed},
		{"two lines swapped", join(swap...), 3, audit.Reordered},
		{"last two lines swapped", join(append(append([]string(nil), lines[:4]...), lines[5], lines[4])...), 5, audit.Reordered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, verr := verify(t, tt.data)
			if verr == nil {
				t.Fatal("verified, want an error")
			}
			if verr.Line != tt.wantLine || verr.Kind != tt.wantKind {
				t.Errorf("got %v, want line %d %s", verr, tt.wantLine, tt.wantKind)
			}
		})
	}
}

// flipHash changes one hex digit of line i's hash.
func flipHash(lines []string, i int) []byte {
	out := append([]string(nil), lines...)
	l := out[i]
	j := strings.LastIndex(l, `"}`) - 1
	c := byte('0')
	if l[j] == '0' {
		c = '1'
	}
	out[i] = l[:j] + string(c) + l[j+1:]
	return []byte(strings.Join(out, ""))
}

func TestOpenContinuesTheChain(t *testing.T) {
	path := writeFile(t, 3, audit.Options{})
	// A crash left half a line: it was never acknowledged, Open cuts it.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(`{"seq":4,"prev":"ab`)
	_ = f.Close()

	s, err := audit.Open(path, audit.Options{Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := s.Write(rec(10 + i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	sum, verr := verify(t, data)
	if verr != nil || sum.Records != 5 || sum.LastSeq != 5 {
		t.Fatalf("%+v %v\n%s", sum, verr, data)
	}
}

func TestOpenRefusesATamperedTail(t *testing.T) {
	path := writeFile(t, 2, audit.Options{})
	data, _ := os.ReadFile(path)
	_ = os.WriteFile(path, bytes.Replace(data, []byte(`"order_id":1`), []byte(`"order_id":3`), 1), 0o600)
	if _, err := audit.Open(path, audit.Options{}); err == nil {
		t.Fatal("Open accepted a file whose last record does not verify")
	}
}

// TestCloseWritesEveryAcceptedRecord submits records from many goroutines
// while the sink closes: every record accepted is in the file.
func TestCloseWritesEveryAcceptedRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	var written atomic.Int64
	s, err := audit.Open(path, audit.Options{Interval: time.Hour, QueueSize: 4096, OnWritten: func() { written.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				if s.Submit(rec(g*1000 + i)) {
					accepted.Add(1)
				}
			}
		})
	}
	time.Sleep(time.Millisecond)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	data, _ := os.ReadFile(path)
	sum, verr := verify(t, data)
	if verr != nil {
		t.Fatal(verr)
	}
	if int64(sum.Records) != accepted.Load() || written.Load() != accepted.Load() {
		t.Fatalf("file has %d records, %d written, %d accepted", sum.Records, written.Load(), accepted.Load())
	}
	if s.Submit(rec(0)) || s.Write(rec(0)) != audit.ErrClosed {
		t.Error("a closed sink accepted a record")
	}
}

// failingFile fails every write while fail is set.
type failingFile struct {
	mu   sync.Mutex
	fail bool
	buf  bytes.Buffer
}

func (f *failingFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return 0, errors.New("disk full")
	}
	return f.buf.Write(p)
}
func (f *failingFile) Sync() error  { return nil }
func (f *failingFile) Close() error { return nil }

func (f *failingFile) set(fail bool) {
	f.mu.Lock()
	f.fail = fail
	f.mu.Unlock()
}

func TestFailingSink(t *testing.T) {
	f := &failingFile{fail: true}
	var lost atomic.Int64
	s := audit.New(f, audit.Options{OnLost: func() { lost.Add(1) }})
	defer s.Close(context.Background())
	if err := s.Write(rec(1)); err == nil {
		t.Fatal("Write succeeded on a failing file")
	}
	if s.Healthy() {
		t.Error("Healthy after a failed write")
	}
	s.Submit(rec(2))
	for deadline := time.Now().Add(5 * time.Second); lost.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	f.set(false)
	if err := s.Write(rec(3)); err != nil {
		t.Fatal(err)
	}
	if !s.Healthy() {
		t.Error("not Healthy after a good write")
	}
	if lost.Load() != 2 {
		t.Errorf("lost = %d, want 2 (the written one that failed, the submitted one)", lost.Load())
	}
	// The chain skips nothing: the record written is seq 1.
	sum, verr := verify(t, f.buf.Bytes())
	if verr != nil || sum.Records != 1 {
		t.Fatalf("%+v %v", sum, verr)
	}
}

// tornFile is an audit file on a disk that fills up once: when room is
// set, the next write that does not fit stores room bytes and then fails,
// as write(2) does with ENOSPC, leaving part of a record (then the disk has
// room again); Truncate fails while truncFails > 0.
type tornFile struct {
	*os.File
	mu         sync.Mutex
	room       int // bytes that still fit; < 0: no limit
	truncFails int
}

func (f *tornFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.room < 0 || len(p) <= f.room {
		return f.File.Write(p)
	}
	n, err := f.File.Write(p[:f.room])
	if err == nil {
		err = errors.New("no space left on device")
	}
	f.room = -1
	return n, err
}

func (f *tornFile) Truncate(size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.truncFails > 0 {
		f.truncFails--
		return errors.New("I/O error")
	}
	return f.File.Truncate(size)
}

func (f *tornFile) set(room, truncFails int) {
	f.mu.Lock()
	f.room, f.truncFails = room, truncFails
	f.mu.Unlock()
}

// TestPartialWriteIsCutOff: a write that fails part way through a record
// (a full disk) leaves nothing of it in the file; the records written
// afterwards continue the chain, and the file verifies. When cutting the
// partial record off fails too, the records that follow are lost (and
// counted) until a cut succeeds, instead of being chained after it.
func TestPartialWriteIsCutOff(t *testing.T) {
	tests := []struct {
		name       string
		truncFails int
		failing    int // records refused while the disk is full or the cut fails
	}{
		{"cut at once", 0, 1},
		{"cut fails twice, then succeeds", 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			osf, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			f := &tornFile{File: osf, room: -1}
			var lost, written atomic.Int64
			s := audit.New(f, audit.Options{OnLost: func() { lost.Add(1) }, OnWritten: func() { written.Add(1) }})
			for i := range 3 {
				if err := s.Write(rec(i)); err != nil {
					t.Fatal(err)
				}
			}
			f.set(40, tt.truncFails) // the next record stops after 40 bytes
			for i := range tt.failing {
				if err := s.Write(rec(10 + i)); err == nil {
					t.Fatalf("record %d: Write succeeded on a full disk", i)
				}
			}
			if s.Healthy() {
				t.Error("Healthy after a failed write")
			}
			for i := range 2 {
				if err := s.Write(rec(20 + i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(context.Background()); err == nil {
				t.Error("Close reported no write error")
			}
			data, _ := os.ReadFile(path)
			sum, verr := verify(t, data)
			if verr != nil {
				t.Fatalf("the file does not verify after a partial write: %v\n%s", verr, data)
			}
			if sum.Records != 5 || sum.LastSeq != 5 {
				t.Errorf("%d records, last seq %d; want 5, 5", sum.Records, sum.LastSeq)
			}
			if lost.Load() != int64(tt.failing) || written.Load() != 5 {
				t.Errorf("lost %d, written %d; want %d, 5", lost.Load(), written.Load(), tt.failing)
			}
		})
	}
}
