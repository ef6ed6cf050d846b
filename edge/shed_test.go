package edge

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gatehouse-dev/gatehouse/routing"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
)

// TestShedREST: a call shed by a concurrency cap is 503 for REST, not the
// 429 grpc-gateway gives RESOURCE_EXHAUSTED.
func TestShedREST(t *testing.T) {
	mux := newRESTMux()
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/v1/x", nil)
	restError(context.Background(), mux, &runtime.JSONPb{}, w, r, routing.OverloadedError("full"))
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("shed call: HTTP %d, want 503", w.Code)
	}
}
