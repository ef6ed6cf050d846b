package quota_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/interceptors/internal/itest"
	iquota "github.com/gatehouse-dev/gatehouse/interceptors/quota"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
	"github.com/gatehouse-dev/gatehouse/quota"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// routeByHeader names the route from the x-route metadata, as a route
// table matching on metadata would.
func routeByHeader(_ context.Context, _ string, md metadata.MD) string {
	if v := md.Get("x-route"); len(v) > 0 {
		return v[0]
	}
	return ""
}

func newLimiter(t *testing.T, policies ...quota.Policy) *quota.Limiter {
	t.Helper()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC) // time stands still: nothing refills
	l, err := quota.New(policies, nil, 1, quota.WithNow(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// client is one way of calling: a unary call to a server with the unary
// interceptor, or a call through a transparent proxy that has only the
// stream interceptor, as the gateway proxies.
type client struct {
	name string
	call func(ctx context.Context, hdr, trl *metadata.MD) error
}

func clients(t *testing.T, l iquota.Limiter, opts ...iquota.Option) []client {
	t.Helper()
	opts = append([]iquota.Option{iquota.WithRoute(routeByHeader)}, opts...)
	_, direct := itest.ServeTestService(t,
		grpc.ChainUnaryInterceptor(iquota.UnaryServerInterceptor(l, opts...)),
		grpc.ChainStreamInterceptor(iquota.StreamServerInterceptor(l, opts...)))
	backend := itest.Serve(t, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, &itest.Service{}) })
	proxied := testgrpc.NewTestServiceClient(itest.ServeProxy(t, backend, grpc.ChainStreamInterceptor(iquota.StreamServerInterceptor(l, opts...))))
	unary := func(c testgrpc.TestServiceClient) func(ctx context.Context, hdr, trl *metadata.MD) error {
		return func(ctx context.Context, hdr, trl *metadata.MD) error {
			_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(hdr), grpc.Trailer(trl))
			return err
		}
	}
	bidi := func(ctx context.Context, hdr, trl *metadata.MD) error {
		s, err := direct.FullDuplexCall(ctx)
		if err != nil {
			return err
		}
		_ = s.CloseSend()
		_, err = s.Recv()
		*hdr, _ = s.Header()
		*trl = s.Trailer()
		if err != nil && err.Error() == "EOF" {
			return nil
		}
		return err
	}
	return []client{{"unary", unary(direct)}, {"proxied", unary(proxied)}, {"stream", bidi}}
}

func TestRefusalAndHeaders(t *testing.T) {
	for _, c := range clients(t, nil) {
		t.Run(c.name, func(t *testing.T) {
			l := newLimiter(t,
				quota.Policy{Name: "per-tenant", Key: `metadata["x-tenant"]`, Rate: &quota.Rate{Requests: 2, Per: time.Second, Burst: 2}},
				quota.Policy{Name: "daily", Calendar: &quota.Calendar{Requests: 100, Per: quota.Day}},
				quota.Policy{Name: "trial", Shadow: true, Rate: &quota.Rate{Requests: 1, Per: time.Hour}},
			)
			cl := findClient(clients(t, l), c.name)
			ctx := metadata.AppendToOutgoingContext(context.Background(), "x-route", "r", "x-tenant", "acme")
			for i := range 2 {
				var hdr, trl metadata.MD
				if err := cl.call(ctx, &hdr, &trl); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				wantPolicy := `"per-tenant";q=2;w=1, "daily";q=100;w=86400`
				if got := strings.Join(hdr.Get("ratelimit-policy"), ","); got != wantPolicy {
					t.Errorf("call %d: ratelimit-policy %q, want %q", i, got, wantPolicy)
				}
				wantRL := []string{`"per-tenant";r=1;t=1, "daily";r=99;t=43200`, `"per-tenant";r=0;t=1, "daily";r=98;t=43200`}[i]
				if got := strings.Join(hdr.Get("ratelimit"), ","); got != wantRL {
					t.Errorf("call %d: ratelimit %q, want %q", i, got, wantRL)
				}
			}
			var hdr, trl metadata.MD
			err := cl.call(ctx, &hdr, &trl)
			st := status.Convert(err)
			if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), `"per-tenant"`) {
				t.Fatalf("third call: %v, want RESOURCE_EXHAUSTED naming per-tenant", err)
			}
			var qf *errdetails.QuotaFailure
			var ri *errdetails.RetryInfo
			for _, d := range st.Details() {
				switch d := d.(type) {
				case *errdetails.QuotaFailure:
					qf = d
				case *errdetails.RetryInfo:
					ri = d
				}
			}
			if qf == nil || len(qf.GetViolations()) != 1 || qf.GetViolations()[0].GetQuotaId() != "per-tenant" || qf.GetViolations()[0].GetQuotaValue() != 2 {
				t.Errorf("QuotaFailure %v", qf)
			}
			if ri.GetRetryDelay().AsDuration() != 500*time.Millisecond {
				t.Errorf("RetryInfo %v, want 500ms", ri)
			}
			if got := trl.Get("grpc-retry-pushback-ms"); len(got) != 1 || got[0] != "500" {
				t.Errorf("pushback trailer %v, want 500", got)
			}
			if got := hdr.Get("retry-after"); len(got) != 1 || got[0] != "1" {
				t.Errorf("retry-after %v, want 1", got)
			}
			// The refusal stops there: the daily quota does not count it.
			if got := strings.Join(hdr.Get("ratelimit"), ","); got != `"per-tenant";r=0;t=1` {
				t.Errorf("ratelimit on refusal %q, want only the refusing policy", got)
			}
			// Another tenant has its own bucket; a call no route takes is
			// never limited.
			other := metadata.AppendToOutgoingContext(context.Background(), "x-route", "r", "x-tenant", "globex")
			if err := cl.call(other, &hdr, &trl); err != nil {
				t.Errorf("another tenant: %v", err)
			}
			for range 5 {
				if err := cl.call(context.Background(), &hdr, &trl); err != nil {
					t.Fatalf("unrouted call: %v", err)
				}
				if len(hdr.Get("ratelimit")) != 0 {
					t.Fatalf("unrouted call has headers %v", hdr)
				}
			}
		})
	}
}

func findClient(cs []client, name string) client {
	for _, c := range cs {
		if c.name == name {
			return c
		}
	}
	panic(name)
}

// TestShadow: a shadow policy counts and decides but never refuses, and
// shows in no header.
func TestShadow(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := quota.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := quota.New([]quota.Policy{{Name: "trial", Shadow: true, Rate: &quota.Rate{Requests: 1, Per: time.Hour}}}, nil, 1, quota.WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clients(t, l) {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-route", "r")
		for i := range 3 {
			var hdr, trl metadata.MD
			if err := c.call(ctx, &hdr, &trl); err != nil {
				t.Fatalf("%s call %d: %v", c.name, i, err)
			}
			if len(hdr.Get("ratelimit")) != 0 || len(hdr.Get("ratelimit-policy")) != 0 {
				t.Errorf("%s: shadow policy in headers %v", c.name, hdr)
			}
		}
	}
	// Nine calls from one client IP: one allowed, eight that it would have
	// refused.
	want := map[string]float64{"allowed": 1, "shadow_refused": 8}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "gatehouse_quota_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "decision" {
					got[lp.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	if len(got) != len(want) || got["allowed"] != want["allowed"] || got["shadow_refused"] != want["shadow_refused"] {
		t.Errorf("decisions %v, want %v", got, want)
	}
}

// TestRoutesAndWhen: policies apply by route and by their condition; the
// principal's labels and API key reach CEL; the refusal is the call's
// decision.
func TestRoutesAndWhen(t *testing.T) {
	l := newLimiter(t,
		quota.Policy{Name: "orders-only", Routes: []string{"orders"}, Key: "principal.subject", Rate: &quota.Rate{Requests: 1, Per: time.Hour}},
		quota.Policy{Name: "free-plan", Key: "principal.api_key", When: `principal.labels["plan"] == "free"`, Calendar: &quota.Calendar{Requests: 1, Per: quota.Month}},
	)
	var decisions []callinfo.Decision
	auth := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		ctx, in := callinfo.With(ctx)
		if v := md.Get("x-key"); len(v) > 0 {
			p := callinfo.Principal{Subject: v[0], Credential: "apikey:default", Claims: map[string]any{"plan": md.Get("x-plan")[0]}}
			ctx = callinfo.WithPrincipal(ctx, p)
		}
		resp, err := h(ctx, req)
		decisions = append(decisions, in.Decision())
		return resp, err
	}
	_, c := itest.ServeTestService(t, grpc.ChainUnaryInterceptor(auth, iquota.UnaryServerInterceptor(l, iquota.WithRoute(routeByHeader))))
	call := func(route, key, plan string) codes.Code {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-route", route, "x-key", key, "x-plan", plan)
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
		return status.Code(err)
	}
	steps := []struct {
		route, key, plan string
		want             codes.Code
	}{
		{"orders", "k1", "pro", codes.OK},
		{"orders", "k1", "pro", codes.ResourceExhausted}, // orders-only: 1 per hour per subject
		{"books", "k1", "pro", codes.OK},                 // orders-only does not apply
		{"books", "k1", "pro", codes.OK},
		{"books", "k2", "free", codes.OK},
		{"books", "k2", "free", codes.ResourceExhausted}, // free-plan: 1 a month per key
		{"books", "k3", "free", codes.OK},
	}
	for i, s := range steps {
		if got := call(s.route, s.key, s.plan); got != s.want {
			t.Errorf("step %d %+v: %v", i, s, got)
		}
	}
	if d := decisions[1]; !d.Denied || d.By != "quota:orders-only" {
		t.Errorf("decision of the refused call: %+v", d)
	}
	if d := decisions[5]; !d.Denied || d.By != "quota:free-plan" {
		t.Errorf("decision of the refused call: %+v", d)
	}
	if d := decisions[0]; d.Denied {
		t.Errorf("decision of an allowed call: %+v", d)
	}
}

// TestCanceled: a call whose context ends while the limiter decides gets
// the context's status, not a refusal.
func TestCanceled(t *testing.T) {
	l := iquotaLimiterFunc(func(ctx context.Context, _ *quota.Call) (quota.Verdict, error) {
		return quota.Verdict{}, context.DeadlineExceeded
	})
	_, c := itest.ServeTestService(t, grpc.ChainUnaryInterceptor(iquota.UnaryServerInterceptor(l, iquota.WithRoute(routeByHeader))))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-route", "r")
	if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("got %v, want DEADLINE_EXCEEDED", err)
	}
}

type iquotaLimiterFunc func(context.Context, *quota.Call) (quota.Verdict, error)

func (f iquotaLimiterFunc) Limit(ctx context.Context, c *quota.Call) (quota.Verdict, error) {
	return f(ctx, c)
}
