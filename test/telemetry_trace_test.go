package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	"github.com/gatehouse-dev/gatehouse/telemetry"
)

// TestRetriesAsAttemptSpans: a backend fails the first attempt of a call
// UNAVAILABLE and the gateway retries it. The trace has one server span
// and two attempt spans, both children of the server span, numbered 1 and
// 2; the metrics count one retry and one upstream error more.
func TestRetriesAsAttemptSpans(t *testing.T) {
	col := startCollector(t, false)
	const warmUp = 5 // calls that earn the retry budget
	fs := &faultServer{unary: func(_ context.Context, n int64) error {
		if n == warmUp+1 {
			return status.Error(codes.Unavailable, "first attempt fails")
		}
		return nil
	}}
	addr, _ := startFault(t, fs)
	g := startGateway(t, resilienceConfig([]string{addr}, "",
		`    retry: { attempts: 3, on: ["UNAVAILABLE"], backoff: { base: "1ms", max: "2ms" } }`+
			fmt.Sprintf("\ntelemetry: {tracing: {otlp: {endpoint: %q}}}", col.addr)))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	ctx := ctxT(t, 10*time.Second)
	for range warmUp {
		if err := unaryOK(ctx, tc); err != nil {
			t.Fatal(err)
		}
	}
	before := scrape(t, g)
	const traceID = "6bf92f3577b34da6a3ce929d0e0e4738"
	tctx := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if err := unaryOK(tctx, tc); err != nil {
		t.Fatalf("call retried after UNAVAILABLE: %v", err)
	}
	if n := fs.unaryN.Load(); n != warmUp+2 {
		t.Fatalf("backend got %d calls, want %d (the warm-up, a failed attempt and its retry)", n, warmUp+2)
	}
	after := scrape(t, g)
	for _, c := range []struct {
		name   string
		labels map[string]string
		delta  float64
	}{
		{"gatehouse_upstream_attempts_total", map[string]string{"backend": "testsvc"}, 2},
		{"gatehouse_upstream_retries_total", map[string]string{"backend": "testsvc"}, 1},
		{"gatehouse_upstream_errors_total", map[string]string{"backend": "testsvc", "code": "Unavailable"}, 1},
	} {
		if got := value(t, after, c.name, c.labels) - value(t, before, c.name, c.labels); got != c.delta {
			t.Errorf("%s%v moved by %v, want %v", c.name, c.labels, got, c.delta)
		}
	}

	spans := col.trace(t, traceID, 3)
	servers := spanByKind(t, spans, tracepb.Span_SPAN_KIND_SERVER)
	clients := spanByKind(t, spans, tracepb.Span_SPAN_KIND_CLIENT)
	if len(servers) != 1 || len(clients) != 2 {
		t.Fatalf("want 1 server and 2 attempt spans, got %d and %d: %v", len(servers), len(clients), spans)
	}
	srv := servers[0]
	if got := attr(srv, telemetry.AttrAttempts); got != "2" {
		t.Errorf("server span %s = %q, want 2", telemetry.AttrAttempts, got)
	}
	numbers := map[string]string{}
	for _, c := range clients {
		if got, want := hex.EncodeToString(c.GetParentSpanId()), hex.EncodeToString(srv.GetSpanId()); got != want {
			t.Errorf("attempt span's parent = %s, want the server span %s", got, want)
		}
		numbers[attr(c, telemetry.AttrAttempt)] = attr(c, "rpc.response.status_code")
	}
	if want := map[string]string{"1": "UNAVAILABLE", "2": "OK"}; fmt.Sprint(numbers) != fmt.Sprint(want) {
		t.Errorf("attempts (number: code) = %v, want %v", numbers, want)
	}
}

// httpCollector is an OTLP/HTTP trace collector on loopback: it decodes
// the protobuf ExportTraceServiceRequest of each POST /v1/traces.
type httpCollector struct {
	spanStore
	addr        string
	contentType string // of the last export; guarded by mu
}

func startHTTPCollector(t *testing.T) *httpCollector {
	t.Helper()
	c := &httpCollector{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = lis.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		req := &collectortracepb.ExportTraceServiceRequest{}
		if err == nil {
			err = proto.Unmarshal(body, req)
		}
		c.mu.Lock()
		c.contentType = r.Header.Get("Content-Type")
		if err != nil {
			c.bad = append(c.bad, err.Error())
		}
		c.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.add(req)
		out, _ := proto.Marshal(&collectortracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return c
}

// TestTraceOverOTLPHTTP exports to a collector over OTLP/HTTP (protocol:
// HTTP): the spans of a call arrive as a protobuf ExportTraceServiceRequest,
// in the client's trace, linked server → attempt.
func TestTraceOverOTLPHTTP(t *testing.T) {
	col := startHTTPCollector(t)
	_, addr := startGreeter(t)
	g := startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
backends: [{name: greeter, endpoints: [%q]}]
routes: [{name: hello, match: {service: "examples.greeter.v1.GreeterService"}, backend: greeter}]
telemetry:
  tracing: {otlp: {endpoint: %q, protocol: HTTP}}
`, addr, col.addr))
	const traceID = "7bf92f3577b34da6a3ce929d0e0e4739"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if _, err := greeterv1.NewGreeterServiceClient(dial(t, g.Addr("edge").String())).SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"}); err != nil {
		t.Fatal(err)
	}
	spans := col.trace(t, traceID, 2)
	srv := spanByKind(t, spans, tracepb.Span_SPAN_KIND_SERVER)
	cli := spanByKind(t, spans, tracepb.Span_SPAN_KIND_CLIENT)
	if len(srv) != 1 || len(cli) != 1 {
		t.Fatalf("want one server and one client span, got %v", spans)
	}
	if got, want := hex.EncodeToString(cli[0].GetParentSpanId()), hex.EncodeToString(srv[0].GetSpanId()); got != want {
		t.Errorf("attempt span's parent = %s, want %s", got, want)
	}
	col.mu.Lock()
	ct := col.contentType
	col.mu.Unlock()
	if ct != "application/x-protobuf" {
		t.Errorf("export content type %q, want application/x-protobuf", ct)
	}
}

// TestSamplingParentBased runs with sampling_ratio 0: a new root trace is
// not sampled, a sampled parent's trace is, an unsampled parent's is not.
// The backend sees the decision in the sampled flag of its traceparent, and
// only the sampled trace reaches the collector.
func TestSamplingParentBased(t *testing.T) {
	col := startCollector(t, false)
	backend, addr := startGreeter(t)
	g := startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
backends: [{name: greeter, endpoints: [%q]}]
routes: [{name: hello, match: {service: "examples.greeter.v1.GreeterService"}, backend: greeter}]
telemetry:
  tracing: {otlp: {endpoint: %q}, sampling_ratio: 0}
`, addr, col.addr))
	client := greeterv1.NewGreeterServiceClient(dial(t, g.Addr("edge").String()))
	const parentSpan = "00f067aa0ba902b7"
	// In this order: the sampled trace last, so that once its spans are in
	// the collector, spans of the others would be too.
	tests := []struct {
		name        string
		traceparent string // "" for none
		sampled     bool
	}{
		{"root", "", false},
		{"unsampled parent", "00-8bf92f3577b34da6a3ce929d0e0e4730-" + parentSpan + "-00", false},
		{"sampled parent", "00-9bf92f3577b34da6a3ce929d0e0e4731-" + parentSpan + "-01", true},
	}
	var traces []string
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if tt.traceparent != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", tt.traceparent)
		}
		_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"})
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		tp := backend.last().Get("traceparent")
		if len(tp) != 1 || len(tp[0]) != 55 {
			t.Fatalf("%s: backend got traceparent %v", tt.name, tp)
		}
		traceID, flags := tp[0][3:35], tp[0][53:]
		if tt.traceparent != "" && traceID != tt.traceparent[3:35] {
			t.Errorf("%s: backend got trace %s, want the client's %s", tt.name, traceID, tt.traceparent[3:35])
		}
		if want := map[bool]string{true: "01", false: "00"}[tt.sampled]; flags != want {
			t.Errorf("%s: backend got sampled flags %s, want %s", tt.name, flags, want)
		}
		traces = append(traces, traceID)
	}
	col.trace(t, traces[2], 2)
	for i, tt := range tests[:2] {
		col.mu.Lock()
		for _, s := range col.spans {
			if hex.EncodeToString(s.GetTraceId()) == traces[i] {
				t.Errorf("%s: span %q of an unsampled trace exported", tt.name, s.GetName())
			}
		}
		col.mu.Unlock()
	}
}

// TestSpanAuthAndQuotaAttributes: every server span says how
// authentication ended and what the quotas decided, not only refused
// calls; and the audit record names the API key used.
func TestSpanAuthAndQuotaAttributes(t *testing.T) {
	col := startCollector(t, false)
	backend := startBackend(t)
	const key = "k-2f1e8d0c9b7a"
	sum := sha256.Sum256([]byte(key))
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	g := startGateway(t, fmt.Sprintf(`
listeners: [{name: edge, address: "127.0.0.1:0"}]
backends: [{name: b, endpoints: [%q]}]
authentication:
  api_keys: [{name: partners, header: x-api-key, keys: [{id: partner-7, sha256: %q}]}]
routes:
  - {name: open, match: {method: "/grpc.testing.TestService/EmptyCall"}, backend: b}
  - {name: keyed, match: {method: "/grpc.testing.TestService/UnaryCall"}, backend: b, auth: {require: [partners]}}
quota:
  policies:
    - {name: per-key, rate: {requests: 1, per: "1h", burst: 2}, routes: [keyed]}
audit: {file: %q}
telemetry:
  tracing: {otlp: {endpoint: %q}}
`, backend, hex.EncodeToString(sum[:]), path, col.addr))
	tc := testgrpc.NewTestServiceClient(dial(t, g.Addr("edge").String()))
	type want struct {
		code            codes.Code
		auth, cred      string
		quota, policies string
	}
	tests := []struct {
		name  string
		key   string
		unary bool
		want  want
	}{
		{"anonymous, no quota", "", false, want{codes.OK, "anonymous", "", "none", ""}},
		{"api key, quota allows", key, true, want{codes.OK, "authenticated", "apikey:partners", "allowed", "[per-key]"}},
		{"no key", "", true, want{codes.Unauthenticated, "denied", "", "none", ""}},
		{"api key, quota allows again", key, true, want{codes.OK, "authenticated", "apikey:partners", "allowed", "[per-key]"}},
		{"api key, over quota", key, true, want{codes.ResourceExhausted, "authenticated", "apikey:partners", "refused", "[per-key]"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			traceID := fmt.Sprintf("abf92f3577b34da6a3ce929d0e0e47%02d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
			if tt.key != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "x-api-key", tt.key)
			}
			var err error
			if tt.unary {
				_, err = tc.UnaryCall(ctx, &testpb.SimpleRequest{})
			} else {
				_, err = tc.EmptyCall(ctx, &testpb.Empty{})
			}
			if status.Code(err) != tt.want.code {
				t.Fatalf("call: %v, want %v", err, tt.want.code)
			}
			n := 2
			if tt.want.code != codes.OK {
				n = 1 // refused at the edge: no attempt
			}
			srv := spanByKind(t, col.trace(t, traceID, n), tracepb.Span_SPAN_KIND_SERVER)[0]
			got := want{
				code:     tt.want.code,
				auth:     attr(srv, telemetry.AttrAuthResult),
				cred:     attr(srv, telemetry.AttrAuth),
				quota:    attr(srv, telemetry.AttrQuotaResult),
				policies: listAttr(srv, telemetry.AttrQuotaPolicies),
			}
			if got != tt.want {
				t.Errorf("server span says %+v, want %+v (attributes %v)", got, tt.want, srv.GetAttributes())
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	recs, raw := readAudit(t, path)
	if len(recs) != len(tests) {
		t.Fatalf("%d audit records, want %d:\n%s", len(recs), len(tests), raw)
	}
	for i, r := range recs {
		p, _ := r["principal"].(map[string]any)
		want := ""
		if tests[i].key != "" {
			want = "partner-7"
		}
		if got, _ := p["key_id"].(string); got != want {
			t.Errorf("record %d (%s): key_id %q, want %q", i+1, tests[i].name, got, want)
		}
	}
	if strings.Contains(raw, key) {
		t.Errorf("the audit file holds the API key itself:\n%s", raw)
	}
}

// listAttr renders a string-list attribute as "[a b]"; "" when absent.
func listAttr(s *tracepb.Span, key string) string {
	for _, a := range s.GetAttributes() {
		if a.GetKey() == key {
			var vs []string
			for _, v := range a.GetValue().GetArrayValue().GetValues() {
				vs = append(vs, v.GetStringValue())
			}
			return fmt.Sprint(vs)
		}
	}
	return ""
}
