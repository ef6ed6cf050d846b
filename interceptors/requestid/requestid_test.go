package requestid_test

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/gatehouse-dev/gatehouse/interceptors/internal/itest"
	"github.com/gatehouse-dev/gatehouse/interceptors/requestid"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRequestID(t *testing.T) {
	long := strings.Repeat("a", requestid.MaxLen)
	tests := []struct {
		name    string
		inbound []string // values of x-request-id the client sends
		want    string   // "" means: minted by the generator
	}{
		{name: "none", inbound: nil},
		{name: "sane kept", inbound: []string{"req-1.a_b:C"}, want: "req-1.a_b:C"},
		{name: "max length kept", inbound: []string{long}, want: long},
		{name: "too long", inbound: []string{long + "a"}},
		{name: "empty", inbound: []string{""}},
		{name: "space", inbound: []string{"a b"}},
		{name: "injection", inbound: []string{"x\",\"admin\":true"}},
		{name: "separator", inbound: []string{"a;b"}},
		{name: "several values keep the first", inbound: []string{"first", "second"}, want: "first"},
	}
	paths := []struct {
		name string
		call func(ctx context.Context, t *testing.T, c testgrpc.TestServiceClient) metadata.MD
		// proxied: the handler is the backend behind a proxy running the
		// interceptor, so it sees only the forwarded metadata.
		proxied bool
	}{
		{name: "unary", call: unary},
		{name: "stream", call: stream},
		{name: "proxied stream", call: stream, proxied: true},
		{name: "proxied unary", call: unary, proxied: true},
	}
	for _, p := range paths {
		for _, tt := range tests {
			t.Run(p.name+"/"+tt.name, func(t *testing.T) {
				var n atomic.Int64
				gen := requestid.WithGenerator(func() string { return fmt.Sprintf("gen-%d", n.Add(1)) })
				want := tt.want
				if want == "" {
					want = "gen-1"
				}
				opts := []grpc.ServerOption{
					grpc.UnaryInterceptor(requestid.UnaryServerInterceptor(gen)),
					grpc.StreamInterceptor(requestid.StreamServerInterceptor(gen)),
				}
				var (
					svc    *itest.Service
					client testgrpc.TestServiceClient
				)
				if p.proxied {
					svc = &itest.Service{}
					bcc := itest.Serve(t, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, svc) })
					client = testgrpc.NewTestServiceClient(itest.ServeProxy(t, bcc, opts...))
				} else {
					svc, client = itest.ServeTestService(t, opts...)
				}

				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				ctx = metadata.AppendToOutgoingContext(ctx, itest.HeaderKey, "later")
				for _, v := range tt.inbound {
					ctx = metadata.AppendToOutgoingContext(ctx, requestid.Key, v)
				}
				hdr := p.call(ctx, t, client)

				if got := hdr.Get(requestid.Key); !slices.Equal(got, []string{want}) {
					t.Errorf("response header %s = %q, want [%q]", requestid.Key, got, want)
				}
				if got := hdr.Get("x-handler"); !slices.Equal(got, []string{"later"}) {
					t.Errorf("handler's own header = %q, want [later]: not merged", got)
				}
				hctx := svc.Last()
				if got := metadata.ValueFromIncomingContext(hctx, requestid.Key); !slices.Equal(got, []string{want}) {
					t.Errorf("handler's incoming %s = %q, want [%q]", requestid.Key, got, want)
				}
				if !p.proxied {
					if got := requestid.FromContext(hctx); got != want {
						t.Errorf("FromContext = %q, want %q", got, want)
					}
				}
			})
		}
	}
}

func unary(ctx context.Context, t *testing.T, c testgrpc.TestServiceClient) metadata.MD {
	t.Helper()
	var hdr metadata.MD
	if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	return hdr
}

func stream(ctx context.Context, t *testing.T, c testgrpc.TestServiceClient) metadata.MD {
	t.Helper()
	s, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := s.Recv(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	hdr, err := s.Header()
	if err != nil {
		t.Fatal(err)
	}
	return hdr
}

func TestDefaultGenerator(t *testing.T) {
	var svc *itest.Service
	svc, client := itest.ServeTestService(t, grpc.UnaryInterceptor(requestid.UnaryServerInterceptor()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seen := map[string]bool{}
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	for range 3 {
		hdr := unary(ctx, t, client)
		id := hdr.Get(requestid.Key)[0]
		if !hex32.MatchString(id) || !requestid.Valid(id) {
			t.Errorf("minted id %q is not 32 hex digits", id)
		}
		if seen[id] {
			t.Errorf("minted id %q twice", id)
		}
		seen[id] = true
		if got := requestid.FromContext(svc.Last()); got != id {
			t.Errorf("FromContext = %q, want %q", got, id)
		}
	}
}

func TestValid(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"", false},
		{"a", true},
		{"AZaz09._:-", true},
		{strings.Repeat("x", 128), true},
		{strings.Repeat("x", 129), false},
		{"a/b", false},
		{"a\nb", false},
		{"a\x00", false},
		{"é", false},
	}
	for _, tt := range tests {
		if got := requestid.Valid(tt.id); got != tt.want {
			t.Errorf("Valid(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestFromContextWithout(t *testing.T) {
	if got := requestid.FromContext(context.Background()); got != "" {
		t.Errorf("FromContext(Background) = %q, want empty", got)
	}
}
