package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// drainingHealth serves grpc.health.v1 from a health.Server, and ends open
// Watch streams when the gateway starts draining. grpc-go's
// health.Server.Shutdown sends NOT_SERVING to watchers but leaves their
// streams open, and a graceful stop waits for every open stream: one
// client doing client-side health checking would hold the drain for the
// whole grace period.
type drainingHealth struct {
	*health.Server
	once     sync.Once
	draining chan struct{}
}

func newDrainingHealth() *drainingHealth {
	return &drainingHealth{Server: health.NewServer(), draining: make(chan struct{})}
}

// drain sets every status NOT_SERVING and ends Watch streams once they
// have been told.
func (h *drainingHealth) drain() {
	h.once.Do(func() {
		h.Server.Shutdown()
		close(h.draining)
	})
}

// Watch relays the health.Server's updates until the gateway drains; then
// it ends the stream with UNAVAILABLE, after the final NOT_SERVING.
func (h *drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.draining:
		case <-ctx.Done():
		}
		cancel()
	}()
	err := h.Server.Watch(req, &watchStream{Health_WatchServer: stream, ctx: ctx})
	select {
	case <-h.draining:
		if stream.Context().Err() == nil {
			_ = stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING})
			return status.Error(codes.Unavailable, "gatehouse: draining")
		}
	default:
	}
	return err
}

// watchStream is a Watch stream with a context that ends when the gateway
// drains.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w *watchStream) Context() context.Context { return w.ctx }

// liveProbe answers GET /healthz: 200 "ok" while the health service
// answers, whatever the backends' state.
func liveProbe(hc healthpb.HealthClient) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if _, err := hc.Check(r.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "%v\n", status.Convert(err).Message())
			return
		}
		fmt.Fprintf(w, "ok\n")
	}
}

// readiness is the JSON body of GET /readyz.
type readiness struct {
	// Status is the overall grpc.health.v1 status: the gateway's readiness.
	Status string `json:"status"`
	// UnhealthyBackends are the backends without a healthy endpoint
	// (upstream.Pool.NotReady), sorted; [] when there are none.
	UnhealthyBackends []string `json:"unhealthy_backends"`
	// Error says why the health service could not answer.
	Error string `json:"error,omitempty"`
}

// readyProbe answers GET /readyz: 200 while the overall status is SERVING,
// else 503 (draining, or no backend that a route uses has a healthy
// endpoint; see Gateway.updateHealth), with a readiness body naming the
// backends that unhealthy returns, e.g.
// {"status":"SERVING","unhealthy_backends":["orders"]}.
func readyProbe(hc healthpb.HealthClient, unhealthy func() []string) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		body := readiness{UnhealthyBackends: []string{}}
		code := http.StatusOK
		resp, err := hc.Check(r.Context(), &healthpb.HealthCheckRequest{})
		if err != nil {
			code = http.StatusServiceUnavailable
			body.Status = healthpb.HealthCheckResponse_UNKNOWN.String()
			body.Error = status.Convert(err).Message()
		} else {
			body.Status = resp.GetStatus().String()
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				code = http.StatusServiceUnavailable
			}
			body.UnhealthyBackends = append(body.UnhealthyBackends, unhealthy()...)
		}
		out, _ := json.Marshal(body) // strings only: cannot fail
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write(append(out, '\n'))
	}
}
