package test

import (
	"context"
	"encoding/hex"
	"fmt"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"google.golang.org/protobuf/proto"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	dto "github.com/prometheus/client_model/go"

	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	"github.com/gatehouse-dev/gatehouse/examples/greeter"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
)

// spanStore holds the spans a test collector received, whatever the wire.
type spanStore struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	bad   []string // exports that did not decode
}

// add keeps the spans of one export.
func (c *spanStore) add(req *collectortracepb.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			c.spans = append(c.spans, ss.GetSpans()...)
		}
	}
}

// trace waits until the collector holds n spans of trace id, and returns
// them; an export that did not decode fails the test.
func (c *spanStore) trace(t *testing.T, id string, n int) []*tracepb.Span {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out []*tracepb.Span
		c.mu.Lock()
		for _, s := range c.spans {
			if hex.EncodeToString(s.GetTraceId()) == id {
				out = append(out, s)
			}
		}
		bad := c.bad
		c.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("exports that do not decode: %v", bad)
		}
		if len(out) >= n || time.Now().After(deadline) {
			if len(out) != n {
				t.Fatalf("trace %s has %d spans, want %d: %v", id, len(out), n, out)
			}
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// collector is an in-process OTLP trace collector on loopback gRPC.
type collector struct {
	collectortracepb.UnimplementedTraceServiceServer
	spanStore
	addr string

	// block, when not nil, holds every Export until it is closed: a
	// collector that is up but never answers.
	block chan struct{}
}

func startCollector(t *testing.T, block bool) *collector {
	t.Helper()
	c := &collector{}
	if block {
		c.block = make(chan struct{})
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = lis.Addr().String()
	s := grpc.NewServer()
	collectortracepb.RegisterTraceServiceServer(s, c)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(func() {
		if c.block != nil {
			close(c.block)
		}
		s.Stop()
	})
	return c
}

func (c *collector) Export(ctx context.Context, req *collectortracepb.ExportTraceServiceRequest) (*collectortracepb.ExportTraceServiceResponse, error) {
	if c.block != nil {
		select {
		case <-c.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c.add(req)
	return &collectortracepb.ExportTraceServiceResponse{}, nil
}

// seenGreeter is the greeter backend, recording the trace headers it got.
type seenGreeter struct {
	*greeter.Server
	mu  sync.Mutex
	got []metadata.MD
}

func (s *seenGreeter) SayHello(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	s.got = append(s.got, md)
	s.mu.Unlock()
	return s.Server.SayHello(ctx, req)
}

func (s *seenGreeter) last() metadata.MD {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[len(s.got)-1]
}

func startGreeter(t *testing.T) (*seenGreeter, string) {
	t.Helper()
	g := &seenGreeter{Server: greeter.New("greeter-1")}
	addr := startBackend(t, func(s *grpc.Server) { greeterv1.RegisterGreeterServiceServer(s, g) })
	return g, addr
}

const greeterConfig = `
listeners: [{name: edge, address: "127.0.0.1:0"}]
admin: {address: "127.0.0.1:0"}
backends: [{name: greeter, endpoints: [%q]}]
routes: [{name: hello, match: {service: "examples.greeter.v1.GreeterService"}, backend: greeter}]
telemetry:
  tracing: {otlp: {endpoint: %q}, queue_size: %d}
`

func spanByKind(t *testing.T, spans []*tracepb.Span, kind tracepb.Span_SpanKind) []*tracepb.Span {
	t.Helper()
	var out []*tracepb.Span
	for _, s := range spans {
		if s.GetKind() == kind {
			out = append(out, s)
		}
	}
	return out
}

func attr(s *tracepb.Span, key string) string {
	for _, a := range s.GetAttributes() {
		if a.GetKey() == key {
			if v := a.GetValue().GetStringValue(); v != "" {
				return v
			}
			return fmt.Sprint(a.GetValue().GetIntValue())
		}
	}
	return ""
}

// TestTraceAcrossGateway checks that one trace runs client → gateway →
// backend, with the right parents, for a gRPC and a REST client: the
// gateway's server span is the child of the client's span, its upstream
// attempt span is the child of the server span, and the backend receives
// the attempt span as its parent, with the client's tracestate and
// baggage.
func TestTraceAcrossGateway(t *testing.T) {
	col := startCollector(t, false)
	backend, addr := startGreeter(t)
	var access syncBuffer
	g := startGateway(t, fmt.Sprintf(greeterConfig, addr, col.addr, 2048),
		edge.WithREST(demo.REST()...), edge.WithAccessLogger(jsonLogger(&access)))
	edgeAddr := g.Addr("edge").String()

	const clientSpan = "00f067aa0ba902b7"
	const clientState = "acme=t61rcWkgMzE,congo=lZWRzIHRoNhcm5hbCBwbGVhc3VyZS4"
	check := func(t *testing.T, traceID string, wantHTTP float64) {
		spans := col.trace(t, traceID, 2)
		servers := spanByKind(t, spans, tracepb.Span_SPAN_KIND_SERVER)
		clients := spanByKind(t, spans, tracepb.Span_SPAN_KIND_CLIENT)
		if len(servers) != 1 || len(clients) != 1 {
			t.Fatalf("want one server and one client span, got %v", spans)
		}
		srv, cli := servers[0], clients[0]
		if got := hex.EncodeToString(srv.GetParentSpanId()); got != clientSpan {
			t.Errorf("server span's parent = %s, want the client's span %s", got, clientSpan)
		}
		if got, want := hex.EncodeToString(cli.GetParentSpanId()), hex.EncodeToString(srv.GetSpanId()); got != want {
			t.Errorf("attempt span's parent = %s, want the server span %s", got, want)
		}
		if srv.GetName() != "examples.greeter.v1.GreeterService/SayHello" {
			t.Errorf("server span name = %q", srv.GetName())
		}
		if attr(srv, "gatehouse.route") != "hello" || attr(srv, "gatehouse.backend") != "greeter" {
			t.Errorf("server span attributes = %v", srv.GetAttributes())
		}
		if attr(cli, "gatehouse.upstream.attempt") != "1" || attr(cli, "gatehouse.backend") != "greeter" {
			t.Errorf("attempt span attributes = %v", cli.GetAttributes())
		}
		md := backend.last()
		want := "00-" + traceID + "-" + hex.EncodeToString(cli.GetSpanId()) + "-01"
		if got := md.Get("traceparent"); len(got) != 1 || got[0] != want {
			t.Errorf("backend got traceparent %v, want [%s]", got, want)
		}
		if got := md.Get("baggage"); len(got) != 1 || got[0] != "tenant=acme" {
			t.Errorf("backend got baggage %v, want [tenant=acme]", got)
		}
		if got := md.Get("tracestate"); len(got) != 1 || got[0] != clientState {
			t.Errorf("backend got tracestate %v, want [%s]", got, clientState)
		}
		var line map[string]any
		for _, l := range access.lines(t) {
			if l["trace_id"] == traceID {
				line = l
			}
		}
		if line == nil {
			t.Fatalf("no access log line with trace_id %s: %s", traceID, access.String())
		}
		if got := line["http_status"]; (wantHTTP == 0 && got != nil) || (wantHTTP != 0 && got != wantHTTP) {
			t.Errorf("http_status = %v, want %v", got, wantHTTP)
		}
	}

	t.Run("grpc", func(t *testing.T) {
		const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-"+clientSpan+"-01", "tracestate", clientState, "baggage", "tenant=acme")
		if _, err := greeterv1.NewGreeterServiceClient(dial(t, edgeAddr)).SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"}); err != nil {
			t.Fatal(err)
		}
		check(t, traceID, 0)
	})
	t.Run("rest", func(t *testing.T) {
		const traceID = "5bf92f3577b34da6a3ce929d0e0e4737"
		code, body, _ := httpDo(t, http.MethodPost, "http://"+edgeAddr+"/v1/greeter:sayHello", `{"name":"Ada"}`,
			"traceparent", "00-"+traceID+"-"+clientSpan+"-01", "tracestate", clientState, "baggage", "tenant=acme")
		if code != http.StatusOK {
			t.Fatalf("REST call: %d %s", code, body)
		}
		check(t, traceID, 200)
	})
	t.Run("new root when the client sends none", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := greeterv1.NewGreeterServiceClient(dial(t, edgeAddr)).SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"}); err != nil {
			t.Fatal(err)
		}
		tp := backend.last().Get("traceparent")
		if len(tp) != 1 || len(tp[0]) != 55 {
			t.Fatalf("backend got traceparent %v", tp)
		}
		spans := col.trace(t, tp[0][3:35], 2)
		if srv := spanByKind(t, spans, tracepb.Span_SPAN_KIND_SERVER); len(srv) != 1 || len(srv[0].GetParentSpanId()) != 0 {
			t.Errorf("want one root server span, got %v", spans)
		}
	})
}

// TestCollectorDownAddsNoLatency sends calls through a gateway whose
// collector accepts connections but never answers, with a queue of 4 spans:
// every call completes, and the spans that did not fit are counted as
// dropped. Calls never wait on the collector, so none of them can block.
func TestCollectorDownAddsNoLatency(t *testing.T) {
	col := startCollector(t, true)
	_, addr := startGreeter(t)
	g := startGateway(t, fmt.Sprintf(greeterConfig, addr, col.addr, 4))
	client := greeterv1.NewGreeterServiceClient(dial(t, g.Addr("edge").String()))
	const calls = 50
	for range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Two spans per call; at most the queue (4) and one batch in export
	// (at most the queue) are held: the rest are dropped. The last call's
	// server span ends just after its client has the answer, so the count
	// may lag by a moment.
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(2 * time.Second)
	for {
		fams = scrape(t, g)
		got := value(t, fams, "gatehouse_tracing_spans_dropped_total", nil)
		if got >= 2*calls-8 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("dropped %v spans, want at least %d", got, 2*calls-8)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := value(t, fams, "gatehouse_requests_total", map[string]string{"route": "hello", "code": "OK"}); got != calls {
		t.Errorf("gatehouse_requests_total = %v, want %d", got, calls)
	}
}

// TestMetrics scrapes /metrics on the admin listener, makes calls, and
// checks that the series moved.
func TestMetrics(t *testing.T) {
	_, addr := startGreeter(t)
	g := startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
admin: {address: "127.0.0.1:0"}
backends: [{name: greeter, endpoints: [%q]}]
routes: [{name: hello, match: {service: "examples.greeter.v1.GreeterService"}, backend: greeter}]
`, addr), edge.WithVersion("v9.9.9"))
	client := greeterv1.NewGreeterServiceClient(dial(t, g.Addr("edge").String()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ok := map[string]string{"route": "hello", "method": "/examples.greeter.v1.GreeterService/SayHello", "code": "OK"}
	bad := map[string]string{"route": "hello", "method": "/examples.greeter.v1.GreeterService/SayHello", "code": "InvalidArgument"}
	before := scrape(t, g)
	if v := value(t, before, "gatehouse_build_info", map[string]string{"version": "v9.9.9"}); v != 1 {
		t.Errorf("gatehouse_build_info = %v", v)
	}
	for range 3 {
		if _, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"}); err != nil {
			t.Fatal(err)
		}
	}
	mid := scrape(t, g)
	for _, name := range []string{"gatehouse_upstream_attempts_total", "gatehouse_upstream_attempt_duration_seconds"} {
		labels := map[string]string{"backend": "greeter"}
		if got := value(t, mid, name, labels) - value(t, before, name, labels); got != 3 {
			t.Errorf("%s moved by %v, want 3", name, got)
		}
	}
	_, _ = client.SayHello(ctx, &greeterv1.SayHelloRequest{}) // invalid: refused at the edge
	_, _ = grpcInvoke(ctx, dial(t, g.Addr("edge").String()), "/no.such.Service/Nope")
	// One refused reload (a route to a backend that does not exist), then
	// one that applies the config in force again.
	broken := proto.Clone(g.Config()).(*configv1.Config)
	broken.Routes[0].Backend = "nowhere"
	if err := g.Reload(ctx, broken); err == nil {
		t.Fatal("a reload naming an unknown backend was applied")
	}
	if err := g.Reload(ctx, proto.Clone(g.Config()).(*configv1.Config)); err != nil {
		t.Fatalf("reload of the config in force: %v", err)
	}

	after := scrape(t, g)
	for _, c := range []struct {
		name   string
		labels map[string]string
		delta  float64
	}{
		{"gatehouse_requests_total", ok, 3},
		{"gatehouse_requests_total", bad, 1},
		{"gatehouse_requests_total", map[string]string{"route": "", "method": "unmatched", "code": "Unimplemented"}, 1},
		{"gatehouse_request_duration_seconds", ok, 3},
		{"gatehouse_config_reloads_total", map[string]string{"result": "success"}, 1},
		{"gatehouse_config_reloads_total", map[string]string{"result": "failure"}, 1},
	} {
		if got := value(t, after, c.name, c.labels) - value(t, before, c.name, c.labels); got != c.delta {
			t.Errorf("%s%v moved by %v, want %v", c.name, c.labels, got, c.delta)
		}
	}
	if v := value(t, after, "gatehouse_requests_in_flight", nil); v != 0 {
		t.Errorf("in flight = %v, want 0", v)
	}
	if v := value(t, after, "gatehouse_upstream_endpoint_up", map[string]string{"backend": "greeter", "endpoint": addr}); v != 1 {
		t.Errorf("endpoint up = %v, want 1", v)
	}
	if v := value(t, after, "gatehouse_config_last_reload_successful", nil); v != 1 {
		t.Errorf("last reload successful = %v", v)
	}
	if v := value(t, after, "gatehouse_config_last_reload_success_timestamp_seconds", nil); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last reload timestamp = %v", v)
	}
	// pprof is off by default.
	if code, _, _ := httpDo(t, http.MethodGet, "http://"+g.Addr("admin").String()+"/debug/pprof/", ""); code == http.StatusOK {
		t.Errorf("pprof answered %d, want it off", code)
	}
}

func TestPprofOnAdmin(t *testing.T) {
	g := startGateway(t, `
listeners: [{name: edge, address: "127.0.0.1:0"}]
admin: {address: "127.0.0.1:0", pprof: true}
telemetry: {metrics: {disabled: true}}
`)
	if code, body, _ := httpDo(t, http.MethodGet, "http://"+g.Addr("admin").String()+"/debug/pprof/", ""); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof: %d %.100s", code, body)
	}
	if code, _, _ := httpDo(t, http.MethodGet, "http://"+g.Addr("admin").String()+"/metrics", ""); code == http.StatusOK {
		t.Errorf("/metrics answered %d with metrics disabled", code)
	}
}

// grpcInvoke calls a method with an empty request.
func grpcInvoke(ctx context.Context, cc *grpc.ClientConn, method string) (any, error) {
	var out greeterv1.SayHelloResponse
	return &out, cc.Invoke(ctx, method, &greeterv1.SayHelloRequest{}, &out)
}

// scrape reads /metrics from the admin listener and parses it.
func scrape(t *testing.T, g *edge.Gateway) map[string]*dto.MetricFamily {
	t.Helper()
	return scrapeAt(t, g.Addr("admin").String())
}

// scrapeAt is scrape of the admin listener at addr.
func scrapeAt(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body, hdr := httpDo(t, http.MethodGet, "http://"+addr+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics content type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// value returns the value of the series of name whose labels include
// labels: a counter's or gauge's value, a histogram's sample count; 0 when
// there is none.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}
