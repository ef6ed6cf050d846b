package test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/greeter"
	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	"google.golang.org/grpc"
)

// TestRealBrowser loads a page served by Gatehouse in headless Chromium
// (Debian's chromium package, installed by .ci/run) and checks what it
// shows: a unary call made through gRPC-Web, a server stream read with
// EventSource and the same stream over a WebSocket (to completion and to
// an error), all cross-origin, from the "web" listener's page to the
// "edge" listener's API, under the edge listener's CORS policy. It fails,
// not skips, when Chromium is missing.
func TestRealBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (apt-get install -y chromium; .ci/run installs it): %v", err)
	}
	backend := startBackend(t, func(s *grpc.Server) {
		greeterv1.RegisterGreeterServiceServer(s, greeter.New("b1"))
	})
	webAddr := freePort(t)
	html, err := os.ReadFile("testdata/browser.html")
	if err != nil {
		t.Fatal(err)
	}
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(html)
	})
	g := startGateway(t, fmt.Sprintf(`
listeners:
  - { name: edge, address: "127.0.0.1:0" }
  - { name: web, address: "%s" }
backends: [{ name: b, endpoints: ["%s"] }]
routes:
  - { name: greeter, match: { service: "examples.greeter.v1.GreeterService" }, backend: b }
`, webAddr, backend),
		edge.WithHTTPHandler("GET /app/page.html", page),
		edge.WithCORS("edge", edge.CORSPolicy{AllowedOrigins: []string{"http://" + webAddr}}),
	)
	url := fmt.Sprintf("http://%s/app/page.html?api=http://%s", webAddr, g.Addr("edge"))

	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()

	// The first Run starts the browser: without a timeout of its own (a
	// timeout there would stop the browser), each step with one.
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	sctx, cancelStep := context.WithTimeout(ctx, 30*time.Second)
	defer cancelStep()
	done, err := chromedp.Run(sctx, chromedp.Poll[string](`document.getElementById('done') && document.getElementById('done').textContent`))
	if err != nil {
		t.Fatalf("chromium: waiting for the page: %v", err)
	}
	text := func(expr string) string {
		v, err := chromedp.Run(sctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("chromium: %s: %v", expr, err)
		}
		return v
	}
	hello := text(`document.getElementById('hello').textContent`)
	grpcStatus := text(`document.getElementById('status').textContent`)
	items, err := chromedp.Run(sctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#sse li')).map(li => li.textContent)`))
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if done != "ok" {
		t.Fatalf("page says %q", done)
	}
	if hello != "Hello, Browser!" || grpcStatus != "grpc-status 0" {
		t.Errorf("gRPC-Web unary shows %q, %q", hello, grpcStatus)
	}
	want := []string{"Hello #1, SSE!", "Hello #2, SSE!", "Hello #3, SSE!", "Hello #4, SSE!", "Hello #5, SSE!"}
	if strings.Join(items, "|") != strings.Join(want, "|") {
		t.Errorf("SSE shows %q, want %q", items, want)
	}
	wsItems, err := chromedp.Run(sctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#ws li')).map(li => li.textContent)`))
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if got := strings.Join(wsItems, "|"); got != "Hello #1, WS!|Hello #2, WS!" {
		t.Errorf("WebSocket shows %q", wsItems)
	}
	// 1000 for the call that succeeded, 4003 (INVALID_ARGUMENT) for the
	// one that failed, whose last message was its status with details.
	if got := text(`document.getElementById('ws-close').textContent`); got != "1000 4003" {
		t.Errorf("WebSocket close codes %q, want \"1000 4003\"", got)
	}
	if got := text(`document.getElementById('ws-error').textContent`); !strings.HasPrefix(got, "code 3, ") || got == "code 3, 0 details" {
		t.Errorf("WebSocket status message shows %q, want code 3 with details", got)
	}
}
