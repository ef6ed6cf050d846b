package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	adminv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/admin/v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// deadLoopbackAddr returns a loopback address that nothing listens on: connecting
// is refused.
func deadLoopbackAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

// readyzBody is the JSON body of GET /readyz.
type readyzBody struct {
	Status            string   `json:"status"`
	UnhealthyBackends []string `json:"unhealthy_backends"`
}

// TestReadinessOneDeadBackend: with one live and one dead backend, the
// per-backend health entries say which is which, and the admin API shows
// the dead one unreachable. The gateway stays ready (SERVING, /readyz 200)
// while some backend that a route uses has a healthy endpoint, naming the
// dead one in /readyz's body: one dead backend must not take every
// gateway replica out of its load balancer. When every routed backend is
// dead, nothing could be served, and readiness is NOT_SERVING / 503.
func TestReadinessOneDeadBackend(t *testing.T) {
	for _, tt := range []struct {
		name        string
		routed      string // the backends routes use, as YAML routes
		wantOverall healthpb.HealthCheckResponse_ServingStatus
		wantCode    int
	}{
		{
			name: "live and dead routed",
			routed: `
  - name: live
    match: { method: "/grpc.testing.TestService/UnaryCall" }
    backend: live
  - name: dead
    match: { service: "grpc.testing.TestService" }
    backend: dead`,
			wantOverall: healthpb.HealthCheckResponse_SERVING,
			wantCode:    200,
		},
		{
			name: "only the dead one routed",
			routed: `
  - name: dead
    match: { service: "grpc.testing.TestService" }
    split: [{ backend: dead, weight: 1 }, { backend: live, weight: 0 }]`,
			wantOverall: healthpb.HealthCheckResponse_NOT_SERVING,
			wantCode:    503,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			live := startBackend(t)
			g := startGateway(t, fmt.Sprintf(`
listeners:
  - name: edge
    address: "127.0.0.1:0"
    protocol: grpc
admin:
  address: "127.0.0.1:0"
backends:
  - name: live
    endpoints: [%q]
  - name: dead
    endpoints: [%q]
routes:%s
`, live, deadLoopbackAddr(t), tt.routed))
			admin := g.Addr("admin").String()
			hc := healthpb.NewHealthClient(dial(t, admin))

			want := map[string]healthpb.HealthCheckResponse_ServingStatus{
				"gatehouse.backend.live": healthpb.HealthCheckResponse_SERVING,
				"gatehouse.backend.dead": healthpb.HealthCheckResponse_NOT_SERVING,
				"":                       tt.wantOverall,
			}
			var got map[string]healthpb.HealthCheckResponse_ServingStatus
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				got = map[string]healthpb.HealthCheckResponse_ServingStatus{}
				for svc := range want {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
					cancel()
					if err == nil {
						got[svc] = resp.GetStatus()
					}
				}
				if fmt.Sprint(got) == fmt.Sprint(want) || time.Now().After(deadline) {
					break
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("health statuses %v, want %v", got, want)
			}

			code, body, hdr := httpDo(t, "GET", "http://"+admin+"/readyz", "")
			var rb readyzBody
			if err := json.Unmarshal([]byte(body), &rb); err != nil {
				t.Fatalf("/readyz body %q: %v", body, err)
			}
			if code != tt.wantCode || rb.Status != tt.wantOverall.String() || !slices.Equal(rb.UnhealthyBackends, []string{"dead"}) {
				t.Errorf("/readyz: %d %s, want %d with status %v and unhealthy_backends [dead]", code, body, tt.wantCode, tt.wantOverall)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("/readyz Content-Type %q, want application/json", ct)
			}
			if code, body, _ := httpDo(t, "GET", "http://"+admin+"/healthz", ""); code != 200 {
				t.Errorf("/healthz: %d %s, want 200: the process is up", code, body)
			}

			ac := adminv1.NewAdminServiceClient(dial(t, admin))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := ac.ListBackends(ctx, &adminv1.ListBackendsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			reach := map[string]bool{}
			for _, b := range resp.GetBackends() {
				reach[b.GetName()] = b.GetReachable()
			}
			if !reach["live"] || reach["dead"] || len(reach) != 2 {
				t.Errorf("ListBackends reachable = %v, want live true and dead false", reach)
			}
		})
	}
}

// TestReadyzAllLive: with every backend live, /readyz is 200 with an empty
// list of unhealthy backends.
func TestReadyzAllLive(t *testing.T) {
	g := startGateway(t, resilienceConfig([]string{startBackend(t)}, "", ""))
	admin := g.Addr("admin").String()
	waitHealth(t, healthpb.NewHealthClient(dial(t, admin)), healthpb.HealthCheckResponse_SERVING)
	code, body, _ := httpDo(t, "GET", "http://"+admin+"/readyz", "")
	if code != 200 || body != `{"status":"SERVING","unhealthy_backends":[]}`+"\n" {
		t.Errorf("/readyz: %d %q, want 200 with no unhealthy backends", code, body)
	}
}
