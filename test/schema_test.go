package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/examples/library"
	shelfv1 "github.com/gatehouse-dev/gatehouse/gen/examples/shelf/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// eventuallyWithin polls cond every 50ms until it holds or d passes.
func eventuallyWithin(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v; last: %s", what, d, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func restStatus(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	code, _, b := restDo(t, method, url, body)
	return code, string(b)
}

// TestRESTSchemaChange: a backend restarted with another service set shows
// up in REST without a gateway restart; while it is down its last good
// schema keeps serving (503 from the call, not 404), and the failure is an
// error naming the backend.
func TestRESTSchemaChange(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lib := library.New()
	lib.Seed()
	a := library.NewGRPCServer(lib) // serves reflection
	go func() { _ = a.Serve(lis) }()
	t.Cleanup(a.Stop)

	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends:
  - name: api
    endpoints: [%q]
    schema: { reflection: { refresh_interval: 1s } }
routes:
  - name: api
    match: { service: "examples.*" }
    backend: api
`, addr))
	base := "http://" + g.Addr("edge").String()
	if code, body := restStatus(t, "GET", base+"/v1/books", ""); code != 200 || !strings.Contains(body, "The Go Programming Language") {
		t.Fatalf("library by reflection: %d %s", code, body)
	}
	if code, _ := restStatus(t, "GET", base+"/v1/shelves/1/titles", ""); code != 404 {
		t.Fatalf("shelf before it exists: %d, want 404", code)
	}

	a.Stop()
	eventuallyWithin(t, 10*time.Second, "a schema error naming the backend", func() (bool, string) {
		err := g.SchemaErrors()["api"]
		return err != nil && strings.Contains(err.Error(), `backend "api"`), fmt.Sprint(err)
	})
	if code, body := restStatus(t, "GET", base+"/v1/books", ""); code != 503 {
		t.Errorf("library while its backend is down: %d %s, want 503 (the last good schema keeps its routes)", code, body)
	}

	startShelfBackend(t, addr, false)
	eventuallyWithin(t, 15*time.Second, "shelf REST routes after the restart", func() (bool, string) {
		code, body := restStatus(t, "GET", base+"/v1/shelves/1/titles", "")
		return code == 200, fmt.Sprint(code, " ", body)
	})
	if code, _ := restStatus(t, "GET", base+"/v1/books", ""); code != 404 {
		t.Errorf("library after the backend dropped it: %d, want 404", code)
	}
	if errs := g.SchemaErrors(); len(errs) != 0 {
		t.Errorf("schema errors after recovery: %v", errs)
	}
}

// TestRESTDescriptorSetReload: a descriptor set is reread on reload.
func TestRESTDescriptorSetReload(t *testing.T) {
	backend, _ := startShelfBackend(t, "127.0.0.1:0", false)
	dset := filepath.Join(t.TempDir(), "api.binpb")
	write := func(paths ...string) {
		data, err := os.ReadFile(writeDescriptorSet(t, paths...))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dset, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("examples/library/v1/library.proto")
	yaml := shelfGatewayYAML(backend, "examples.shelf.v1.ShelfService", fmt.Sprintf("schema: { descriptor_set: %q }", dset), "")
	g := startGateway(t, yaml)
	base := "http://" + g.Addr("edge").String()
	if code, _ := restStatus(t, "GET", base+"/v1/shelves/1/titles", ""); code != 404 {
		t.Fatalf("before: %d, want 404", code)
	}
	write("examples/shelf/v1/shelf.proto")
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if code, body := restStatus(t, "GET", base+"/v1/shelves/1/titles", ""); code != 200 {
		t.Fatalf("after reload: %d %s", code, body)
	}
	// A broken file: an error naming the backend, the last good schema
	// keeps serving.
	if err := os.WriteFile(dset, []byte("not a descriptor set"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if err := g.SchemaErrors()["shelf"]; err == nil || !strings.Contains(err.Error(), `backend "shelf"`) {
		t.Errorf("schema error = %v, want one naming the backend", err)
	}
	if code, body := restStatus(t, "GET", base+"/v1/shelves/1/titles", ""); code != 200 {
		t.Errorf("after a bad reload: %d %s, want the last good schema", code, body)
	}
}

// TestRESTStrictQuery: with rest.strict_query, query parameters that name
// no field are 400; without it they are ignored (as grpc-gateway does).
func TestRESTStrictQuery(t *testing.T) {
	backend, _ := startShelfBackend(t, "127.0.0.1:0", true)
	g := startGateway(t, shelfGatewayYAML(backend, renamedPkg+".ShelfService", "schema: { reflection: {} }", "rest: { strict_query: true }"))
	base := "http://" + g.Addr("edge").String()
	for _, tt := range []struct {
		method, path, body string
		want               int
		contains           string
	}{
		{"GET", "/v1/shelves/1/books?page_size=2&genres=GENRE_HISTORY&order.by=x&labels%5Bk%5D=v", "", 200, ""},
		{"GET", "/v1/shelves/1/books?bogus=1", "", 400, `unknown query parameter \"bogus\"`},
		{"GET", "/v1/shelves/1/books?order.nope=1", "", 400, "order.nope"},
		{"GET", "/v1/shelves/1/titles?x=1", "", 400, `unknown query parameter \"x\"`},
		{"GET", "/v1/shelves/1/titles?parent=shelves/2", "", 200, ""}, // repeats a path parameter: ignored, as without strict mode
		{"POST", "/v1/shelves/1/books/2:archive?reason=x", `{}`, 400, "not accepted"},
	} {
		code, body := restStatus(t, tt.method, base+tt.path, tt.body)
		if code != tt.want || !strings.Contains(body, tt.contains) {
			t.Errorf("%s %s: %d %s, want %d with %q", tt.method, tt.path, code, body, tt.want, tt.contains)
		}
	}
}

// TestRESTForwardedHeaders: REST headers become metadata by allowlist; the
// headers routes match on are forwarded too, so that REST and gRPC calls
// route alike.
func TestRESTForwardedHeaders(t *testing.T) {
	backend, _ := startShelfBackend(t, "127.0.0.1:0", true)
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends:
  - name: shelf
    endpoints: [%q]
    schema: { reflection: {} }
routes:
  - name: tenant-down
    match:
      service: %q
      headers: [{ name: "x-tenant", exact: "down" }]
    direct_response: { code: UNAVAILABLE, message: "tenant down" }
  - name: shelf
    match: { service: %q }
    backend: shelf
`, backend, renamedPkg+".ShelfService", renamedPkg+".ShelfService"))
	base := "http://" + g.Addr("edge").String()
	code, _, body := restDo(t, "GET", base+"/v1/shelves/1/titles", "", "X-Tenant", "down")
	if code != 503 || !strings.Contains(string(body), "tenant down") {
		t.Errorf("with the routed header: %d %s, want the direct response", code, body)
	}
	if code, _, body := restDo(t, "GET", base+"/v1/shelves/1/titles", "", "X-Tenant", "up"); code != 200 {
		t.Errorf("other tenant: %d %s", code, body)
	}
}

// TestEdgeReflectionRuntimeSchema: reflection at the edge lists and
// describes services known only from a backend's runtime schema.
func TestEdgeReflectionRuntimeSchema(t *testing.T) {
	backend, _ := startShelfBackend(t, "127.0.0.1:0", true)
	g := startGateway(t, shelfGatewayYAML(backend, renamedPkg+".ShelfService", "schema: { reflection: {} }", ""))
	rc := reflectionv1.NewServerReflectionClient(dial(t, g.Addr("edge").String()))
	s, err := rc.ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = s.CloseSend()
		for {
			if _, err := s.Recv(); err != nil {
				return
			}
		}
	}()
	ask := func(req *reflectionv1.ServerReflectionRequest) *reflectionv1.ServerReflectionResponse {
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := ask(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}})
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	if !strings.Contains(strings.Join(names, " "), renamedPkg+".ShelfService") {
		t.Fatalf("edge reflection lists %v, missing the runtime-schema service", names)
	}
	resp = ask(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: renamedPkg + ".ShelfService"}})
	found := false
	for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		fd := new(descriptorpb.FileDescriptorProto)
		if err := proto.Unmarshal(b, fd); err != nil {
			t.Fatal(err)
		}
		if fd.GetName() == renamedFile && len(fd.GetService()) == 1 {
			found = true
		}
	}
	if !found {
		t.Errorf("describe %s: file %s not returned", renamedPkg+".ShelfService", renamedFile)
	}
}

// TestValidateRequestsGRPC: native gRPC calls are validated against the
// runtime schema when the route asks (validate_requests), and pass
// undecoded when it does not.
func TestValidateRequestsGRPC(t *testing.T) {
	backend, _ := startShelfBackend(t, "127.0.0.1:0", true) // does not validate
	for _, validate := range []bool{false, true} {
		g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0", protocol: grpc }]
backends:
  - name: shelf
    endpoints: [%q]
    schema: { reflection: {} }
routes:
  - name: shelf
    match: { service: %q }
    backend: shelf
    validate_requests: %v
`, backend, renamedPkg+".ShelfService", validate))
		cc := dial(t, g.Addr("edge").String())
		var out shelfv1.CreateBookResponse
		err := cc.Invoke(context.Background(), "/"+renamedPkg+".ShelfService/CreateBook",
			&shelfv1.CreateBookRequest{Parent: "shelves/1", Book: &shelfv1.Book{Title: ""}}, &out, grpc.WaitForReady(true))
		if validate && (status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "book.title")) {
			t.Errorf("validate_requests: %v, want INVALID_ARGUMENT naming book.title", err)
		}
		if !validate && err != nil {
			t.Errorf("without validate_requests: %v, want the backend's answer", err)
		}
	}
}

// TestOpenAPI: /openapi.json describes the runtime schemas' REST mapping.
func TestOpenAPI(t *testing.T) {
	backend, _ := startShelfBackend(t, "127.0.0.1:0", true)
	g := startGateway(t, shelfGatewayYAML(backend, renamedPkg+".ShelfService", "schema: { reflection: {} }", ""))
	base := "http://" + g.Addr("edge").String()
	code, hdr, body := restDo(t, "GET", base+"/openapi.json", "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("openapi.json: %d %s", code, body)
	}
	checkGolden(t, filepath.Join("testdata", "rest", "openapi.golden"), string(body))
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" || doc.Paths["/v1/{name}"]["get"] == nil || doc.Paths["/v1/{parent}/books"]["post"] == nil ||
		doc.Paths["/v1/{name}:archive"]["post"] == nil || doc.Paths["/"+renamedPkg+".ShelfService/CountBooks"]["post"] == nil {
		t.Errorf("paths: %v", doc.Paths)
	}
	if code, _, _ := restDo(t, "GET", base+"/openapi/shelf.json", ""); code != 200 {
		t.Errorf("per backend: %d", code)
	}
	if code, _, _ := restDo(t, "GET", base+"/openapi/nope.json", ""); code != 404 {
		t.Errorf("unknown backend: %d", code)
	}
}
