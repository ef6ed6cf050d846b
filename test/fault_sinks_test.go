package test

// Fault injection (issue 11), the gateway's sinks: an audit file whose
// writes fail, an audit file that is slow (a FIFO whose reader stops), and
// an OTLP collector that answers late. Every case runs through a real
// gateway over loopback and counts what reached the backend and what the
// gateway's metrics say.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-dev/gatehouse/audit"
	"github.com/gatehouse-dev/gatehouse/edge"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
)

// auditSinkWait is how long a FAIL_CLOSED call waits for its record to be
// written before it is refused: audit.Options.Wait's default, which the
// gateway does not change.
const auditSinkWait = 2 * time.Second

// auditSinkConfig routes the greeter through a gateway with an admin
// listener and the audit file path; extra is appended to the audit block
// (e.g. ", on_sink_failure: KEEP_SERVING"; empty for the default,
// FAIL_CLOSED).
const auditSinkConfig = `
listeners: [{name: edge, address: "127.0.0.1:0"}]
admin: {address: "127.0.0.1:0"}
backends: [{name: greeter, endpoints: [%q]}]
routes: [{name: hello, match: {service: "examples.greeter.v1.GreeterService"}, backend: greeter}]
audit: {file: %q%s}
`

// auditOpens fails the test when audit.Open does not return within 5 s for
// path, instead of letting the gateway's start hang: reading back a file
// that is not a regular file, to continue its chain, blocks for ever on a
// FIFO and never ends on /dev/full.
func auditOpens(t *testing.T, path string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		s, err := audit.Open(path, audit.Options{})
		if err == nil {
			err = s.Close(context.Background())
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("audit.Open(%s): %v", path, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("audit.Open(%s) did not return in 5 s", path)
	}
}

// calls returns how many calls reached the greeter backend.
func (s *seenGreeter) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// sinkCall is one call's result.
type sinkCall struct {
	err  error
	took time.Duration
}

func (c sinkCall) code() codes.Code { return status.Code(c.err) }

// sayHello makes one call with a 10 s deadline and times it.
func sayHello(client greeterv1.GreeterServiceClient) sinkCall {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"})
	return sinkCall{err: err, took: time.Since(start)}
}

// burst makes n calls from workers goroutines and returns them.
func burst(client greeterv1.GreeterServiceClient, n, workers int) []sinkCall {
	out := make([]sinkCall, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				out[i] = sayHello(client)
			}
		})
	}
	wg.Wait()
	return out
}

// latencies returns the median and the largest duration of calls.
func latencies(calls []sinkCall) (median, most time.Duration) {
	d := make([]time.Duration, len(calls))
	for i, c := range calls {
		d[i] = c.took
	}
	slices.Sort(d)
	return d[len(d)/2], d[len(d)-1]
}

// codeCounts counts calls per status code.
func codeCounts(calls []sinkCall) map[codes.Code]int {
	m := map[codes.Code]int{}
	for _, c := range calls {
		m[c.code()]++
	}
	return m
}

// isAuditRefusal reports whether err is the audit interceptor's refusal,
// not an UNAVAILABLE from anywhere else.
func isAuditRefusal(err error) bool {
	s := status.Convert(err)
	return s.Code() == codes.Unavailable && strings.Contains(s.Message(), "audit trail is unavailable")
}

// sumSeries adds up the counters of name whose label has value.
func sumSeries(fams map[string]*dto.MetricFamily, name, label, value string) float64 {
	sum := 0.0
	for _, m := range fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// waitMetric scrapes until cond holds for the value of name, for at most
// 5 s, and returns the last value.
func waitMetric(t *testing.T, g *edge.Gateway, name string, cond func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v := value(t, scrape(t, g), name, nil)
		if cond(v) || time.Now().After(deadline) {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFaultAuditSinkDown points the audit file at /dev/full, on which every
// write fails with ENOSPC. FAIL_CLOSED (the default): the first call, made
// while the sink has not failed yet, reaches the backend and is then failed
// with UNAVAILABLE because its record could not be written; every later
// call is refused before the backend. KEEP_SERVING: every call succeeds and
// every record is counted lost. In both modes health probes, which are not
// audited, keep answering: readiness follows the backends only.
func TestFaultAuditSinkDown(t *testing.T) {
	const devFull = "/dev/full"
	if _, err := os.Stat(devFull); err != nil {
		t.Fatalf("this test needs %s: %v", devFull, err)
	}
	const calls = 20

	t.Run("fail closed", func(t *testing.T) {
		backend, addr := startGreeter(t)
		auditOpens(t, devFull)
		g := startGateway(t, fmt.Sprintf(auditSinkConfig, addr, devFull, ""))
		client := greeterv1.NewGreeterServiceClient(dial(t, g.Addr("edge").String()))

		first := sayHello(client)
		if !isAuditRefusal(first.err) {
			t.Fatalf("first call: %v, want the audit's UNAVAILABLE", first.err)
		}
		if n := backend.calls(); n != 1 {
			t.Fatalf("backend got %d calls after the first, want 1 (the sink fails on its first write, after the call)", n)
		}
		later := burst(client, calls, 4)
		refused := 0
		for _, c := range later {
			if isAuditRefusal(c.err) {
				refused++
			} else {
				t.Errorf("call with the sink down: %v, want the audit's UNAVAILABLE", c.err)
			}
		}
		_, most := latencies(later)
		got := backend.calls()
		logCase(t, "audit down/fail closed", fmt.Sprintf("first call %v after %v; then %d/%d refused, slowest %v; backend got %d call(s)",
			status.Code(first.err), first.took.Round(time.Millisecond), refused, calls, most.Round(time.Millisecond), got))
		if got != 1 {
			t.Errorf("backend got %d calls, want only the first: calls must be refused before the backend once the sink is known down", got)
		}
		if most >= auditSinkWait {
			t.Errorf("a refused call took %v: refusals must not wait for the sink", most)
		}
		// The refusals are audited too (Submit): their records cannot be
		// written either and are counted lost.
		lost := waitMetric(t, g, "gatehouse_audit_records_lost_total", func(v float64) bool { return v >= calls })
		fams := scrape(t, g)
		written := value(t, fams, "gatehouse_audit_records_total", nil)
		unavailable := sumSeries(fams, "gatehouse_requests_total", "code", "Unavailable")
		logCase(t, "audit down/fail closed metrics", fmt.Sprintf("records written %v, lost %v; requests_total{code=Unavailable} %v", written, lost, unavailable))
		if lost < calls || written != 0 {
			t.Errorf("records written %v, lost %v; want 0 written and at least %d lost", written, lost, calls)
		}
		if unavailable != calls+1 {
			t.Errorf("gatehouse_requests_total{code=Unavailable} = %v, want %d", unavailable, calls+1)
		}
		assertReady(t, g)
	})

	t.Run("keep serving", func(t *testing.T) {
		backend, addr := startGreeter(t)
		auditOpens(t, devFull)
		g := startGateway(t, fmt.Sprintf(auditSinkConfig, addr, devFull, ", on_sink_failure: KEEP_SERVING"))
		client := greeterv1.NewGreeterServiceClient(dial(t, g.Addr("edge").String()))
		results := burst(client, calls, 4)
		for _, c := range results {
			if c.err != nil {
				t.Errorf("call with the sink down under KEEP_SERVING: %v", c.err)
			}
		}
		lost := waitMetric(t, g, "gatehouse_audit_records_lost_total", func(v float64) bool { return v >= calls })
		time.Sleep(100 * time.Millisecond) // anything counted twice would show now
		fams := scrape(t, g)
		lost = value(t, fams, "gatehouse_audit_records_lost_total", nil)
		written := value(t, fams, "gatehouse_audit_records_total", nil)
		median, most := latencies(results)
		logCase(t, "audit down/keep serving", fmt.Sprintf("%v; median %v, slowest %v; backend got %d; records written %v, lost %v",
			codeCounts(results), median.Round(time.Microsecond), most.Round(time.Millisecond), backend.calls(), written, lost))
		if n := backend.calls(); n != calls {
			t.Errorf("backend got %d calls, want %d", n, calls)
		}
		if lost != calls || written != 0 {
			t.Errorf("records written %v, lost %v; want 0 and %d (one per call)", written, lost, calls)
		}
		assertReady(t, g)
	})
}

// assertReady checks that the admin listener's readiness probe answers 200:
// health checks are not audited, and readiness follows the backends, not
// the audit sink.
func assertReady(t *testing.T, g *edge.Gateway) {
	t.Helper()
	url := "http://" + g.Addr("admin").String() + "/readyz"
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body, _ := httpDo(t, http.MethodGet, url, "")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("/readyz: %d %s, want 200 (health probes are not audited)", code, strings.TrimSpace(body))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Modes of a fifoReader.
const (
	fifoFast    = iota // read as fast as the gateway writes
	fifoStalled        // read nothing
)

// fifoReader is the process at the other end of a FIFO audit file: it
// reads what the gateway writes, at the pace its mode says, and keeps it.
type fifoReader struct {
	f    *os.File
	mode atomic.Int32
	done chan struct{}

	mu  sync.Mutex
	buf bytes.Buffer
}

// makeFIFO creates a named pipe in a temporary directory.
func makeFIFO(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	return path
}

// Linux fcntl commands for a pipe's capacity.
const (
	fSetPipeSize = 1031 // F_SETPIPE_SZ
	fGetPipeSize = 1032 // F_GETPIPE_SZ
)

// readFIFO opens the FIFO at path, which the gateway holds open already
// but has not written to yet, shrinks the pipe to one page (4 KiB instead
// of 64 KiB: fewer calls fill it), and reads it in mode until the gateway
// closes it. It is stopped when the test ends.
func readFIFO(t *testing.T, path string, mode int32) *fifoReader {
	t.Helper()
	f, err := os.Open(path) // does not block: the gateway holds it open for writing
	if err != nil {
		t.Fatal(err)
	}
	rc, err := f.SyscallConn() // not f.Fd(), which would take f out of the poller
	if err != nil {
		t.Fatal(err)
	}
	var size uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		if _, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, fSetPipeSize, 4096); errno == 0 {
			size, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, fGetPipeSize, 0)
		}
	}); err != nil || errno != 0 {
		t.Fatalf("F_SETPIPE_SZ: %v %v", err, errno)
	}
	t.Logf("FIFO capacity %d B", size)
	r := &fifoReader{f: f, done: make(chan struct{})}
	r.mode.Store(mode)
	go r.run()
	t.Cleanup(func() {
		r.mode.Store(fifoFast)
		_ = r.f.Close() // ends a Read in progress (the FIFO is in the poller)
		<-r.done
	})
	return r
}

func (r *fifoReader) run() {
	defer close(r.done)
	chunk := make([]byte, 64<<10)
	for {
		if r.mode.Load() == fifoStalled {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		n, err := r.f.Read(chunk)
		r.mu.Lock()
		r.buf.Write(chunk[:n])
		r.mu.Unlock()
		if err != nil {
			return // io.EOF once the gateway closed it, or closed here
		}
	}
}

// bytes returns what was read so far.
func (r *fifoReader) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

// records returns the complete lines read so far.
func (r *fifoReader) records() int { return bytes.Count(r.bytes(), []byte("\n")) }

// waitEOF waits until the gateway has closed its end and everything was
// read.
func (r *fifoReader) waitEOF(t *testing.T) {
	t.Helper()
	r.mode.Store(fifoFast)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the FIFO reader saw no end of file 5 s after the gateway shut down")
	}
}

// shutdownTimed shuts g down with a 10 s context and returns how long it
// took.
func shutdownTimed(t *testing.T, g *edge.Gateway) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := g.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	return time.Since(start)
}

// TestFaultAuditSinkSlow makes the audit file a FIFO whose reader stops
// reading for a while: the sink's writer blocks once the pipe (shrunk to
// 4 KiB) is full. The sink queues at most 1024 records, writes at most 256
// at once, and a FAIL_CLOSED call waits at most 2 s for its record
// (audit.Options defaults; the config sets none of them). The gateway can
// start on a FIFO only since audit.Open no longer reads a file that is not
// a regular file back (it blocked for ever).
//
// KEEP_SERVING: calls with a fast reader, for a baseline; then the reader
// stops, cheap audited calls (to a method no route takes) fill the pipe and
// the queue until records are lost, and the same calls as the baseline run
// again: they keep their latency (records are queued, never waited for)
// and every one of their records is counted lost. Once the reader catches
// up every call's record is either written or counted lost, and what was
// written is one unbroken chain. (A reader that takes 1 KiB every 100 ms
// behaves alike, except that each time the writer's blocked batch
// completes, up to 256 queue slots free at once: how many of a given set of
// calls lose their record is then a race. A stopped reader makes it
// exact.)
//
// FAIL_CLOSED: the reader reads nothing; once the pipe is full the next
// call is refused with UNAVAILABLE after the sink's wait (not hanging), and
// the calls after it are refused at once, before the backend; once the
// reader resumes, calls succeed again.
func TestFaultAuditSinkSlow(t *testing.T) {
	t.Run("keep serving", func(t *testing.T) {
		backend, addr := startGreeter(t)
		path := makeFIFO(t)
		auditOpens(t, path)
		g := startGateway(t, fmt.Sprintf(auditSinkConfig, addr, path, ", on_sink_failure: KEEP_SERVING"))
		r := readFIFO(t, path, fifoFast)
		cc := dial(t, g.Addr("edge").String())
		client := greeterv1.NewGreeterServiceClient(cc)
		const workers, calls, floodRound, floodMax = 8, 200, 200, 4000

		fast := burst(client, calls, workers)
		if c := codeCounts(fast); c[codes.OK] != calls {
			t.Fatalf("fast sink: %v", c)
		}
		if v := waitMetric(t, g, "gatehouse_audit_records_total", func(v float64) bool { return v >= calls }); v != calls {
			t.Fatalf("fast sink: %v records written, want %d", v, calls)
		}
		recordSize := len(r.bytes()) / max(r.records(), 1)

		// The reader stops; flood until the queue overflows.
		r.mode.Store(fifoStalled)
		start := time.Now()
		flooded := 0
		floodEnd := start.Add(8 * time.Second)
		for flooded < floodMax && time.Now().Before(floodEnd) && value(t, scrape(t, g), "gatehouse_audit_records_lost_total", nil) == 0 {
			var next atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for time.Now().Before(floodEnd) && next.Add(1) <= floodRound {
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						_, _ = grpcInvoke(ctx, cc, "/no.such.Service/Nope")
						cancel()
					}
				})
			}
			wg.Wait()
			flooded += int(min(next.Load(), floodRound))
		}
		floodWall := time.Since(start)
		fams := scrape(t, g)
		lostFlood := value(t, fams, "gatehouse_audit_records_lost_total", nil)
		if lostFlood == 0 {
			t.Fatalf("no record lost after %d calls in %v with a reader that reads nothing (records ~%d B)", flooded, floodWall.Round(time.Millisecond), recordSize)
		}

		slow := burst(client, calls, workers)
		if c := codeCounts(slow); c[codes.OK] != calls {
			t.Errorf("slow sink under KEEP_SERVING: %v, want every call OK", c)
		}
		lostSlow := value(t, scrape(t, g), "gatehouse_audit_records_lost_total", nil) - lostFlood

		// The reader catches up: every record is written or counted lost.
		r.mode.Store(fifoFast)
		total := float64(2*calls + flooded)
		accounted := func() (written, lost float64) {
			fams := scrape(t, g)
			return value(t, fams, "gatehouse_audit_records_total", nil), value(t, fams, "gatehouse_audit_records_lost_total", nil)
		}
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if w, l := accounted(); w+l >= total {
				break
			}
		}
		written, lost := accounted()

		medFast, maxFast := latencies(fast)
		medSlow, maxSlow := latencies(slow)
		logCase(t, "audit slow/keep serving", fmt.Sprintf(
			"records ~%d B; fast sink: %d calls, median %v, slowest %v; reader stopped: %d flood calls in %v, %v lost; "+
				"then %d calls, median %v, slowest %v, %v more lost; after catching up %v written + %v lost = %v of %v; backend got %d",
			recordSize, calls, medFast.Round(time.Microsecond), maxFast.Round(time.Millisecond),
			flooded, floodWall.Round(time.Millisecond), lostFlood,
			calls, medSlow.Round(time.Microsecond), maxSlow.Round(time.Millisecond), lostSlow,
			written, lost, written+lost, total, backend.calls()))

		// Generous: a call that waited for the sink would wait its full
		// write timeout (2 s), or until the reader took its record.
		if limit := 3*medFast + 50*time.Millisecond; medSlow > limit {
			t.Errorf("median latency %v with a slow sink, %v with a fast one: calls wait for the sink", medSlow, medFast)
		}
		if maxSlow > auditSinkWait+time.Second {
			t.Errorf("slowest call took %v with a slow sink under KEEP_SERVING", maxSlow)
		}
		// The queue is full and the writer is blocked: no record finds room.
		if lostSlow != calls {
			t.Errorf("%v of %d records counted lost with a full queue, want all", lostSlow, calls)
		}
		if written+lost != total {
			t.Errorf("%v written + %v lost = %v, want every call's record accounted for (%v)", written, lost, written+lost, total)
		}
		if n := backend.calls(); n != 2*calls {
			t.Errorf("backend got %d calls, want %d", n, 2*calls)
		}

		shutdownTimed(t, g)
		r.waitEOF(t)
		sum, err := audit.Verify(bytes.NewReader(r.bytes()))
		if err != nil {
			t.Fatalf("what the FIFO carried does not verify: %v", err)
		}
		if float64(sum.Records) != written || sum.LastSeq != uint64(sum.Records) {
			t.Errorf("the FIFO carried %d records (last seq %d), the metrics say %v written", sum.Records, sum.LastSeq, written)
		}
	})

	t.Run("fail closed", func(t *testing.T) {
		backend, addr := startGreeter(t)
		path := makeFIFO(t)
		auditOpens(t, path)
		g := startGateway(t, fmt.Sprintf(auditSinkConfig, addr, path, ""))
		r := readFIFO(t, path, fifoStalled)
		client := greeterv1.NewGreeterServiceClient(dial(t, g.Addr("edge").String()))

		// Calls succeed while the pipe takes their records; the first that
		// does not fit waits for the sink and is refused.
		ok := 0
		var stuck sinkCall
		for {
			c := sayHello(client)
			if c.err == nil {
				ok++
				if ok > 2000 {
					t.Fatalf("%d calls succeeded with a reader that reads nothing", ok)
				}
				continue
			}
			stuck = c
			break
		}
		if !isAuditRefusal(stuck.err) {
			t.Fatalf("call %d: %v, want the audit's UNAVAILABLE", ok+1, stuck.err)
		}
		if stuck.took > auditSinkWait+3*time.Second {
			t.Errorf("the call whose record did not fit took %v, want it refused after the sink's wait (%v)", stuck.took, auditSinkWait)
		}
		reached := backend.calls() // the stuck call reached the backend: its record is made when it ends

		// The sink is stuck: calls are refused at once, before the backend.
		const during = 16
		refusedCalls := burst(client, during, 8)
		refused := 0
		for _, c := range refusedCalls {
			if isAuditRefusal(c.err) {
				refused++
			} else {
				t.Errorf("call while the sink is stuck: %v, want the audit's UNAVAILABLE", c.err)
			}
		}
		_, most := latencies(refusedCalls)
		after := backend.calls()

		// The reader resumes: calls succeed again.
		r.mode.Store(fifoFast)
		resumed := time.Now()
		var recovered time.Duration
		for recovered == 0 {
			if c := sayHello(client); c.err == nil {
				recovered = time.Since(resumed)
			} else if time.Since(resumed) > 5*time.Second {
				t.Fatalf("5 s after the reader resumed calls still fail: %v", c.err)
			}
		}
		logCase(t, "audit slow/fail closed", fmt.Sprintf(
			"%d calls OK before the pipe filled; the next refused (%v) after %v; then %d/%d refused, slowest %v, backend calls %d -> %d; OK again %v after the reader resumed",
			ok, status.Code(stuck.err), stuck.took.Round(time.Millisecond), refused, during, most.Round(time.Millisecond), reached, after, recovered.Round(time.Millisecond)))
		if after != reached {
			t.Errorf("%d calls reached the backend while the sink was stuck, want none", after-reached)
		}
		if most >= auditSinkWait {
			t.Errorf("a call took %v while the sink was known stuck: it must be refused at once, not after the sink's wait", most)
		}

		shutdownTimed(t, g)
		r.waitEOF(t)
		data := r.bytes()
		sum, err := audit.Verify(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("what the FIFO carried does not verify: %v", err)
		}
		byAudit := 0
		var recs []audit.Record
		for _, l := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
			var rec audit.Record
			if err := json.Unmarshal(l, &rec); err != nil {
				t.Fatal(err)
			}
			recs = append(recs, rec)
			if rec.Decision.By == "audit" {
				byAudit++
			}
		}
		// The calls so far were made one at a time: record ok+1 is the call
		// that waited for the sink. It was written once the reader resumed,
		// with the outcome the backend gave; the UNAVAILABLE the client got
		// instead must follow it, as a record of the same call by "audit".
		stuckOutcome, amended := "none", false
		if len(recs) > ok {
			stuck := recs[ok]
			stuckOutcome = stuck.Outcome.Code
			for _, rec := range recs[ok+1:] {
				if rec.RequestID == stuck.RequestID && rec.Decision.By == "audit" && rec.Outcome.Code == "Unavailable" {
					amended = true
				}
			}
			if stuck.RequestID == "" {
				t.Errorf("the stuck call's record has no request id")
			}
		}
		logCase(t, "audit slow/fail closed trail", fmt.Sprintf("%d records, %d of them refusals by the audit; the refused call's record (seq %d) says %s, followed by its UNAVAILABLE: %v",
			sum.Records, byAudit, ok+1, stuckOutcome, amended))
		if stuckOutcome == "OK" && !amended {
			t.Errorf("the call whose record timed out is recorded OK and nothing records the UNAVAILABLE its client got")
		}
		if byAudit < refused {
			t.Errorf("%d refusals recorded, want at least the %d refused while stuck", byAudit, refused)
		}
	})
}

// delayCollector is an OTLP trace collector that answers each Export after
// delay (at once when 0), counting the spans it accepted.
type delayCollector struct {
	collectortracepb.UnimplementedTraceServiceServer
	addr     string
	delay    atomic.Int64 // time.Duration
	accepted atomic.Int64
}

func startDelayCollector(t *testing.T) *delayCollector {
	t.Helper()
	c := &delayCollector{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = lis.Addr().String()
	s := grpc.NewServer()
	collectortracepb.RegisterTraceServiceServer(s, c)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return c
}

func (c *delayCollector) Export(ctx context.Context, req *collectortracepb.ExportTraceServiceRequest) (*collectortracepb.ExportTraceServiceResponse, error) {
	if d := time.Duration(c.delay.Load()); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	n := 0
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			n += len(ss.GetSpans())
		}
	}
	c.accepted.Add(int64(n))
	return &collectortracepb.ExportTraceServiceResponse{}, nil
}

// metricsNow reads the gateway's metrics from its registry directly, which
// works after Shutdown too.
func metricsNow(t *testing.T, g *edge.Gateway) func(name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	g.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.Reader(rec.Body))
	if err != nil {
		t.Fatal(err)
	}
	return func(name string) float64 { return value(t, fams, name, nil) }
}

// TestFaultCollectorSlow complements TestCollectorDownAddsNoLatency (a
// collector that never answers): the collector answers, but only after
// 8 s. The same gateway first runs against it answering at once, for a
// baseline. With the slow collector calls keep their latency and the
// spans that do not fit the queue (4) are counted dropped; Shutdown gives
// the export in progress at most spanFlushLimit (2 s), not the collector's
// 8 s; after it every span is counted as exported or dropped, and nothing
// of the exporter is left running.
func TestFaultCollectorSlow(t *testing.T) {
	const (
		delay      = 8 * time.Second
		flushLimit = 2 * time.Second // edge.spanFlushLimit
		calls      = 40
	)
	col := startDelayCollector(t)
	// Everything started from here on must be gone once the gateway, its
	// client and its backend are: this cleanup runs after theirs.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	_, addr := startGreeter(t)
	g := startGateway(t, fmt.Sprintf(greeterConfig, addr, col.addr, 4))
	client := greeterv1.NewGreeterServiceClient(dial(t, g.Addr("edge").String()))

	fast := burst(client, calls, 1)
	if c := codeCounts(fast); c[codes.OK] != calls {
		t.Fatalf("fast collector: %v", c)
	}
	// Let the baseline's spans be exported (or dropped: the queue holds 4),
	// so that the slow run starts with an empty queue.
	var exportedFast, droppedFast float64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		m := metricsNow(t, g)
		exportedFast, droppedFast = m("gatehouse_tracing_spans_exported_total"), m("gatehouse_tracing_spans_dropped_total")
		if exportedFast+droppedFast >= 2*calls || time.Now().After(deadline) {
			break
		}
	}

	col.delay.Store(int64(delay))
	start := time.Now()
	slow := burst(client, calls, 1)
	slowWall := time.Since(start)
	if c := codeCounts(slow); c[codes.OK] != calls {
		t.Errorf("slow collector: %v, want every call OK", c)
	}
	m := metricsNow(t, g)
	droppedSlow := m("gatehouse_tracing_spans_dropped_total") - droppedFast

	took := shutdownTimed(t, g)
	m = metricsNow(t, g)
	exported, dropped, exportErrors := m("gatehouse_tracing_spans_exported_total"), m("gatehouse_tracing_spans_dropped_total"), m("gatehouse_tracing_export_errors_total")

	medFast, maxFast := latencies(fast)
	medSlow, maxSlow := latencies(slow)
	logCase(t, "collector slow", fmt.Sprintf(
		"fast collector: median %v, slowest %v, %v exported, %v dropped; collector answering after %v: %d calls in %v, median %v, slowest %v, %v dropped; "+
			"shutdown took %v; then %v exported + %v dropped (export errors %v), collector accepted %d",
		medFast.Round(time.Microsecond), maxFast.Round(time.Millisecond), exportedFast, droppedFast, delay,
		calls, slowWall.Round(time.Millisecond), medSlow.Round(time.Microsecond), maxSlow.Round(time.Millisecond), droppedSlow,
		took.Round(time.Millisecond), exported, dropped, exportErrors, col.accepted.Load()))

	if exportedFast+droppedFast != 2*calls || exportedFast == 0 {
		t.Errorf("fast collector: %v exported, %v dropped; want %d spans accounted for, most exported", exportedFast, droppedFast, 2*calls)
	}
	if limit := 3*medFast + 20*time.Millisecond; medSlow > limit {
		t.Errorf("median latency %v with a slow collector, %v with a fast one", medSlow, medFast)
	}
	if maxSlow > delay/4 {
		t.Errorf("slowest call took %v with a collector answering after %v: calls must not wait for exports", maxSlow, delay)
	}
	// At most the queue (4) and one batch in export (4) are held while the
	// collector sits on its first export; an export can end (and free its
	// batch) only after delay.
	held := 8.0
	if slowWall > delay {
		held += 4 * float64(slowWall/delay)
	}
	if droppedSlow < 2*calls-held {
		t.Errorf("%v spans dropped with a slow collector, want at least %v", droppedSlow, 2*calls-held)
	}
	if took > flushLimit+2*time.Second {
		t.Errorf("shutdown took %v with an export in progress, want at most about %v (spanFlushLimit), not the collector's %v", took, flushLimit, delay)
	}
	if exported+dropped != 4*calls {
		t.Errorf("after shutdown %v exported + %v dropped = %v spans, want every span of the %d calls (%d) accounted for",
			exported, dropped, exported+dropped, 2*calls, 4*calls)
	}
	if got := col.accepted.Load(); float64(got) != exported {
		t.Errorf("the collector accepted %d spans, the gateway counts %v exported", got, exported)
	}
}
