package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
)

// Kinds of load.
const (
	kindUnary  = "unary"
	kindStream = "stream"
	kindBidi   = "bidi"
	kindREST   = "rest"
)

// load is one shape of traffic, driven identically at every target.
type load struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Size  int    `json:"size"`  // payload bytes, each way
	Conc  int    `json:"conc"`  // concurrent calls (worker goroutines)
	Conns int    `json:"conns"` // client connections the workers share
	Msgs  int    `json:"msgs,omitempty"`
}

// allLoads is every load, in the order they run.
var allLoads = []load{
	{Name: "unary-64B-c1", Kind: kindUnary, Size: 64, Conc: 1, Conns: 1},
	{Name: "unary-64B-c50", Kind: kindUnary, Size: 64, Conc: 50, Conns: 10},
	{Name: "unary-16KiB-c1", Kind: kindUnary, Size: 16 << 10, Conc: 1, Conns: 1},
	{Name: "unary-16KiB-c50", Kind: kindUnary, Size: 16 << 10, Conc: 50, Conns: 10},
	{Name: "stream-1000x64B", Kind: kindStream, Size: 64, Conc: 1, Conns: 1, Msgs: 1000},
	{Name: "bidi-pingpong-64B", Kind: kindBidi, Size: 64, Conc: 1, Conns: 1},
	{Name: "rest-sayhello-c1", Kind: kindREST, Conc: 1, Conns: 1},
	{Name: "rest-sayhello-c50", Kind: kindREST, Conc: 50, Conns: 10},
}

// Methods the load generator calls.
const (
	methodUnary    = "/grpc.testing.TestService/UnaryCall"
	methodStream   = "/grpc.testing.TestService/StreamingOutputCall"
	methodBidi     = "/grpc.testing.TestService/FullDuplexCall"
	methodSayHello = "/examples.greeter.v1.GreeterService/SayHello"
	restPath       = "/v1/greeter:sayHello"
	restName       = "bench"
)

// rawCodec sends pre-marshalled requests and counts response bytes without
// decoding them, so the load generator spends as little CPU as it can.
type rawCodec struct{}

// rawMsg is a pre-marshalled request, or a response's size.
type rawMsg struct {
	b []byte
	n int
}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rawMsg)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	// SliceBuffer's Free is a no-op: the shared request bytes stay ours.
	return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMsg)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	m.n = data.Len()
	return nil
}

func (rawCodec) Name() string { return "proto" }

var rawCall = grpc.ForceCodecV2(rawCodec{})

// phase is one timed stretch of load on one target.
type phase struct {
	calls, errs int64
	firstErr    string
	elapsed     time.Duration
	lat         []int64 // nanoseconds, one per successful call, sorted
}

// driver runs one load against one address.
type driver struct {
	l       load
	addr    string // host:port
	rest    bool   // REST/JSON over HTTP/1.1 instead of gRPC
	req     []byte // pre-marshalled request (gRPC) or body (REST)
	minResp int    // smallest acceptable response, in bytes
	conns   []*grpc.ClientConn
	http    *http.Client
}

// newDriver connects to addr. For REST loads, rest selects HTTP/JSON
// (the gateway's transcoded route); otherwise the same call goes over gRPC
// (the direct baseline).
func newDriver(l load, addr string, rest bool) (*driver, error) {
	d := &driver{l: l, addr: addr, rest: rest}
	var m proto.Message
	switch l.Kind {
	case kindUnary:
		m = &testgrpc.SimpleRequest{ResponseSize: int32(l.Size), Payload: &testgrpc.Payload{Body: make([]byte, l.Size)}}
		d.minResp = l.Size
	case kindStream:
		req := &testgrpc.StreamingOutputCallRequest{}
		for range l.Msgs {
			req.ResponseParameters = append(req.ResponseParameters, &testgrpc.ResponseParameters{Size: int32(l.Size)})
		}
		m = req
		d.minResp = l.Size
	case kindBidi:
		m = &testgrpc.StreamingOutputCallRequest{
			ResponseParameters: []*testgrpc.ResponseParameters{{Size: int32(l.Size)}},
			Payload:            &testgrpc.Payload{Body: make([]byte, l.Size)},
		}
		d.minResp = l.Size
	case kindREST:
		if rest {
			d.req = []byte(`{"name":"` + restName + `"}`)
			tr := &http.Transport{
				MaxIdleConns:        l.Conc,
				MaxIdleConnsPerHost: l.Conc,
				MaxConnsPerHost:     l.Conc,
				DisableCompression:  true,
				IdleConnTimeout:     time.Minute,
			}
			d.http = &http.Client{Transport: tr}
			d.minResp = len("Hello, " + restName)
			return d, nil
		}
		m = &greeterv1.SayHelloRequest{Name: restName}
		d.minResp = len("Hello, " + restName)
	default:
		return nil, fmt.Errorf("unknown load kind %q", l.Kind)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	d.req = b
	for range l.Conns {
		c, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			d.close()
			return nil, err
		}
		c.Connect()
		d.conns = append(d.conns, c)
	}
	return d, nil
}

func (d *driver) close() {
	for _, c := range d.conns {
		_ = c.Close()
	}
	if d.http != nil {
		d.http.CloseIdleConnections()
	}
}

// run drives the load for dur with l.Conc workers and returns what they
// measured. Latencies are recorded only when record is set.
func (d *driver) run(dur time.Duration, record bool) *phase {
	ctx, cancel := context.WithTimeout(context.Background(), dur+30*time.Second)
	defer cancel()
	var stop atomic.Bool
	type result struct {
		calls, errs int64
		firstErr    error
		lat         []int64
	}
	results := make([]result, d.l.Conc)
	var wg sync.WaitGroup
	start := time.Now()
	timer := time.AfterFunc(dur, func() { stop.Store(true) })
	defer timer.Stop()
	for i := range d.l.Conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			if record {
				r.lat = make([]int64, 0, 1<<14)
			}
			var conn *grpc.ClientConn
			if len(d.conns) > 0 {
				conn = d.conns[i%len(d.conns)]
			}
			fail := func(err error) {
				r.errs++
				if r.firstErr == nil {
					r.firstErr = err
				}
				time.Sleep(time.Millisecond) // no hot loop on a dead target
			}
			ok := func(t0 time.Time) {
				r.calls++
				if record {
					r.lat = append(r.lat, int64(time.Since(t0)))
				}
			}
			switch {
			case d.rest:
				d.restWorker(ctx, &stop, ok, fail)
			case d.l.Kind == kindBidi:
				d.bidiWorker(ctx, conn, &stop, ok, fail)
			case d.l.Kind == kindStream:
				d.streamWorker(ctx, conn, &stop, ok, fail)
			default:
				method := methodUnary
				if d.l.Kind == kindREST {
					method = methodSayHello
				}
				req := &rawMsg{b: d.req}
				var resp rawMsg
				for !stop.Load() {
					t0 := time.Now()
					resp.n = 0
					if err := conn.Invoke(ctx, method, req, &resp, rawCall); err != nil {
						fail(err)
						continue
					}
					if resp.n < d.minResp {
						fail(fmt.Errorf("short response: %d bytes", resp.n))
						continue
					}
					ok(t0)
				}
			}
		}()
	}
	wg.Wait()
	p := &phase{elapsed: time.Since(start)}
	n := 0
	for _, r := range results {
		n += len(r.lat)
	}
	p.lat = make([]int64, 0, n)
	for _, r := range results {
		p.calls += r.calls
		p.errs += r.errs
		if r.firstErr != nil && p.firstErr == "" {
			p.firstErr = r.firstErr.Error()
		}
		p.lat = append(p.lat, r.lat...)
	}
	sort.Slice(p.lat, func(i, j int) bool { return p.lat[i] < p.lat[j] })
	return p
}

var (
	streamDesc = grpc.StreamDesc{StreamName: "StreamingOutputCall", ServerStreams: true}
	bidiDesc   = grpc.StreamDesc{StreamName: "FullDuplexCall", ServerStreams: true, ClientStreams: true}
)

// streamWorker opens one server stream after another; a call is a whole
// stream of l.Msgs messages, and its latency the stream's total time.
func (d *driver) streamWorker(ctx context.Context, conn *grpc.ClientConn, stop *atomic.Bool, ok func(time.Time), fail func(error)) {
	req := &rawMsg{b: d.req}
	var resp rawMsg
	for !stop.Load() {
		t0 := time.Now()
		err := func() error {
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			cs, err := conn.NewStream(sctx, &streamDesc, methodStream, rawCall)
			if err != nil {
				return err
			}
			if err := cs.SendMsg(req); err != nil {
				return err
			}
			if err := cs.CloseSend(); err != nil {
				return err
			}
			n := 0
			for {
				resp.n = 0
				err := cs.RecvMsg(&resp)
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
				if resp.n < d.minResp {
					return fmt.Errorf("short message: %d bytes", resp.n)
				}
				n++
			}
			if n != d.l.Msgs {
				return fmt.Errorf("stream ended after %d of %d messages", n, d.l.Msgs)
			}
			return nil
		}()
		if err != nil {
			fail(err)
			continue
		}
		ok(t0)
	}
}

// bidiWorker keeps one bidi stream open and plays ping-pong on it; a call
// is one round trip.
func (d *driver) bidiWorker(ctx context.Context, conn *grpc.ClientConn, stop *atomic.Bool, ok func(time.Time), fail func(error)) {
	req := &rawMsg{b: d.req}
	var resp rawMsg
	for !stop.Load() {
		err := func() error {
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			cs, err := conn.NewStream(sctx, &bidiDesc, methodBidi, rawCall)
			if err != nil {
				return err
			}
			for !stop.Load() {
				t0 := time.Now()
				if err := cs.SendMsg(req); err != nil {
					return err
				}
				resp.n = 0
				if err := cs.RecvMsg(&resp); err != nil {
					return err
				}
				if resp.n < d.minResp {
					return fmt.Errorf("short message: %d bytes", resp.n)
				}
				ok(t0)
			}
			if err := cs.CloseSend(); err != nil {
				return err
			}
			if err := cs.RecvMsg(&resp); err != io.EOF {
				return fmt.Errorf("bidi stream did not end cleanly: %v", err)
			}
			return nil
		}()
		if err != nil {
			fail(err)
		}
	}
}

// restWorker posts the SayHello JSON body over keep-alive HTTP/1.1.
func (d *driver) restWorker(ctx context.Context, stop *atomic.Bool, ok func(time.Time), fail func(error)) {
	url := "http://" + d.addr + restPath
	buf := make([]byte, 4096)
	for !stop.Load() {
		t0 := time.Now()
		err := func() error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(d.req))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := d.http.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			n, err := io.ReadFull(resp.Body, buf)
			if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
				return err
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("HTTP %d: %s", resp.StatusCode, buf[:n])
			}
			if !bytes.Contains(buf[:n], []byte("Hello, "+restName)) {
				return fmt.Errorf("unexpected body %q", buf[:n])
			}
			return nil
		}()
		if err != nil {
			fail(err)
			continue
		}
		ok(t0)
	}
}

// percentile returns the q-quantile (0..1) of sorted nanoseconds, in
// microseconds.
func percentile(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return float64(sorted[i]) / 1e3
}
