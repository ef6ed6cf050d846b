package audit_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	trail "github.com/gatehouse-dev/gatehouse/audit"
	"github.com/gatehouse-dev/gatehouse/interceptors/audit"
	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeSink records what it is given.
type fakeSink struct {
	mu        sync.Mutex
	unhealthy bool
	writeErr  error
	recs      []*trail.Record
}

func (s *fakeSink) Write(r *trail.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writeErr != nil {
		return s.writeErr
	}
	s.recs = append(s.recs, r)
	return nil
}

func (s *fakeSink) Submit(r *trail.Record) bool { return s.Write(r) == nil }
func (s *fakeSink) Healthy() bool               { return !s.unhealthy }

var info = &grpc.UnaryServerInfo{FullMethod: "/pkg.Svc/Do"}

// routed stands for the router and the backend: it records the route and
// a principal, and answers err.
func routed(err error) grpc.UnaryHandler {
	return func(ctx context.Context, req any) (any, error) {
		ci := callinfo.From(ctx)
		ci.SetRoute("r", "b")
		ci.SetPrincipal(callinfo.Principal{Subject: "k1", Credential: "apikey:partners", Claims: map[string]any{"tier": "gold"}})
		return "resp", err
	}
}

func TestFailureModes(t *testing.T) {
	tests := []struct {
		name       string
		failClosed bool
		sink       *fakeSink
		wantCode   codes.Code
		called     bool
		records    int
	}{
		{"healthy", true, &fakeSink{}, codes.OK, true, 1},
		{"fail closed refuses while unhealthy", true, &fakeSink{unhealthy: true}, codes.Unavailable, false, 1},
		{"fail closed fails an unwritten record", true, &fakeSink{writeErr: errors.New("disk")}, codes.Unavailable, true, 0},
		{"keep serving while unhealthy", false, &fakeSink{unhealthy: true}, codes.OK, true, 1},
		{"keep serving when the record is lost", false, &fakeSink{writeErr: errors.New("disk")}, codes.OK, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ic := audit.UnaryServerInterceptor(tt.sink, audit.WithFailClosed(tt.failClosed))
			called := false
			_, err := ic(context.Background(), &structpb.Struct{}, info, func(ctx context.Context, req any) (any, error) {
				called = true
				return routed(nil)(ctx, req)
			})
			if status.Code(err) != tt.wantCode || called != tt.called {
				t.Fatalf("got %v (handler called %v), want %v (%v)", err, called, tt.wantCode, tt.called)
			}
			if len(tt.sink.recs) != tt.records {
				t.Fatalf("%d records, want %d", len(tt.sink.recs), tt.records)
			}
			if tt.records == 0 {
				return
			}
			r := tt.sink.recs[0]
			if !tt.called {
				if r.Decision.Allowed || r.Decision.By != "audit" || r.Outcome.Code != "Unavailable" {
					t.Errorf("refusal recorded as %+v", r)
				}
				return
			}
			if r.Method != "/pkg.Svc/Do" || r.Route != "r" || r.Backend != "b" || !r.Decision.Allowed || r.Outcome.Code != "OK" {
				t.Errorf("record = %+v", r)
			}
			if r.Principal != (trail.Principal{Subject: "k1", Credential: "apikey:partners", KeyID: "k1"}) {
				t.Errorf("principal = %+v", r.Principal)
			}
		})
	}
}

func TestCaptureAndRedact(t *testing.T) {
	sink := &fakeSink{}
	ic := audit.UnaryServerInterceptor(sink,
		audit.WithCapture(map[string][]string{"r": {"fields.user", "fields.token", "fields", "fields.missing", "nope"}}),
		audit.WithRedact([]string{"token"}))
	req, _ := structpb.NewStruct(map[string]any{"user": "ada", "token": "s3cret"})
	if _, err := ic(context.Background(), req, info, routed(nil)); err != nil {
		t.Fatal(err)
	}
	got := sink.recs[0].Request
	if _, ok := got["nope"]; ok {
		t.Errorf("a path that names no field was captured: %v", got)
	}
	// Struct.fields is a map: paths do not go into map entries, but the map
	// itself is captured with its values.
	fields, _ := got["fields"].(map[string]any)
	if len(fields) != 2 {
		t.Fatalf("request = %v", got)
	}
	if s := sink.recs[0]; s.Decision.Allowed != true {
		t.Errorf("decision = %+v", s.Decision)
	}
}

func TestSkip(t *testing.T) {
	sink := &fakeSink{}
	ic := audit.UnaryServerInterceptor(sink, audit.WithSkip(func(string) bool { return true }))
	if _, err := ic(context.Background(), nil, info, routed(nil)); err != nil {
		t.Fatal(err)
	}
	if len(sink.recs) != 0 {
		t.Fatal("a skipped method was audited")
	}
}

func TestDenied(t *testing.T) {
	sink := &fakeSink{}
	ic := audit.UnaryServerInterceptor(sink)
	_, _ = ic(context.Background(), nil, info, func(ctx context.Context, _ any) (any, error) {
		callinfo.From(ctx).SetDecision(callinfo.Decision{Denied: true, By: "quota:default"})
		return nil, status.Error(codes.ResourceExhausted, "slow down")
	})
	r := sink.recs[0]
	if r.Decision.Allowed || r.Decision.By != "quota:default" || r.Outcome.Code != "ResourceExhausted" {
		t.Errorf("record = %+v", r)
	}
}

// TestKeyID: the record names the API key a call used (its id, the
// principal's subject under an "apikey:<set>" credential), and no key for
// other credentials, whatever their claims say.
func TestKeyID(t *testing.T) {
	tests := []struct {
		name string
		p    callinfo.Principal
		want string
	}{
		{"api key", callinfo.Principal{Subject: "partner-7", Credential: "apikey:partners", Claims: map[string]any{"tier": "gold"}}, "partner-7"},
		{"jwt with a key_id claim", callinfo.Principal{Subject: "alice", Credential: "jwt:corp", Claims: map[string]any{"key_id": "forged"}}, ""},
		{"mtls", callinfo.Principal{Subject: "spiffe://corp/svc", Credential: "mtls"}, ""},
		{"anonymous", callinfo.Principal{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &fakeSink{}
			ic := audit.UnaryServerInterceptor(sink)
			_, err := ic(context.Background(), nil, info, func(ctx context.Context, _ any) (any, error) {
				callinfo.From(ctx).SetPrincipal(tt.p)
				return nil, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := sink.recs[0].Principal; got.KeyID != tt.want || got.Subject != tt.p.Subject || got.Credential != tt.p.Credential {
				t.Errorf("principal = %+v, want key_id %q", got, tt.want)
			}
		})
	}
}
