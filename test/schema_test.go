package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/library"
	shelfv1 "github.com/gatehouse-dev/gatehouse/gen/examples/shelf/v1"
	"github.com/santhosh-tekuri/jsonschema/v6"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
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
	checkOpenAPI31(t, body)
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

// mdRecorder is a shelf backend that records the metadata of every call.
type mdRecorder struct {
	mu   sync.Mutex
	last metadata.MD
}

func (r *mdRecorder) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.last = md.Copy()
	r.mu.Unlock()
	return h(ctx, req)
}

func (r *mdRecorder) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !strings.Contains(info.FullMethod, "ShelfService") {
		return h(srv, ss) // the gateway's own reflection fetches
	}
	md, _ := metadata.FromIncomingContext(ss.Context())
	r.mu.Lock()
	r.last = md.Copy()
	r.mu.Unlock()
	return h(srv, ss)
}

func (r *mdRecorder) take() metadata.MD {
	r.mu.Lock()
	defer r.mu.Unlock()
	md := r.last
	r.last = nil
	return md
}

// startRecordingShelfBackend serves ShelfService (with reflection) and
// records each call's incoming metadata.
func startRecordingShelfBackend(t *testing.T) (string, *mdRecorder) {
	t.Helper()
	rec := &mdRecorder{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(rec.unary), grpc.StreamInterceptor(rec.stream))
	shelfv1.RegisterShelfServiceServer(s, shelfServer{})
	reflection.Register(s)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String(), rec
}

// TestRESTForwardedMetadata: with the default allowlist, exactly the
// allowlisted headers reach the backend, each value once (grpc-gateway
// adds authorization itself), the client's User-Agent as
// x-forwarded-user-agent (gRPC reserves user-agent), and a header not on
// the list (or one naming a key the gateway sets) does not; for the
// generated handlers and runtime schemas alike.
func TestRESTForwardedMetadata(t *testing.T) {
	backend, rec := startRecordingShelfBackend(t)
	for _, v := range []gatewayVariant{
		{name: "generated", opts: []edge.Option{edge.WithREST(shelfREST)}},
		{name: "reflection", schema: "schema: { reflection: {} }"},
	} {
		t.Run(v.name, func(t *testing.T) {
			g := startGateway(t, shelfGatewayYAML(backend, "examples.shelf.v1.ShelfService", v.schema, ""), v.opts...)
			base := "http://" + g.Addr("edge").String()
			for _, path := range []string{"/v1/shelves/1/titles", "/v1/shelves/1/books:watch"} { // unary, server stream
				checkForwardedMetadata(t, g, base+path, rec)
			}
		})
	}
}

func checkForwardedMetadata(t *testing.T, g *edge.Gateway, url string, rec *mdRecorder) {
	t.Helper()
	code, _, body := restDo(t, "GET", url, "",
		"Authorization", "Bearer abc",
		"X-Request-Id", "req-1",
		"Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"Tracestate", "congo=t61rcWkgMzE",
		"Baggage", "userId=alice",
		"Accept-Language", "fr-CH",
		"User-Agent", "curl/8.5.0",
		"X-Forwarded-For", "203.0.113.7",
		"X-Secret", "no",
		"Cookie", "session=no",
		"X-Forwarded-User-Agent", "spoofed",
	)
	if code != 200 {
		t.Fatalf("%s: %d %s", url, code, body)
	}
	md := rec.take()
	want := map[string]string{
		"authorization":         "Bearer abc",
		"x-request-id":          "req-1",
		"traceparent":           "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"tracestate":            "congo=t61rcWkgMzE",
		"baggage":               "userId=alice",
		"accept-language":       "fr-CH",
		edge.ForwardedUserAgent: "curl/8.5.0",
		"x-forwarded-for":       "127.0.0.1", // an untrusted client's own hops never cross
		"x-forwarded-host":      g.Addr("edge").String(),
	}
	// What gRPC itself sets on the gateway's hop to the backend.
	transport := map[string]bool{":authority": true, "content-type": true, "user-agent": true, "grpc-accept-encoding": true}
	for k, vs := range md {
		if transport[k] {
			continue
		}
		w, ok := want[k]
		if !ok {
			t.Errorf("%s: backend got %s=%q, not forwarded by the default allowlist", url, k, vs)
			continue
		}
		if len(vs) != 1 || vs[0] != w {
			t.Errorf("%s: backend got %s=%q, want exactly [%q]", url, k, vs, w)
		}
	}
	for k := range want {
		if _, ok := md[k]; !ok {
			t.Errorf("%s: backend did not get %s (metadata: %v)", url, k, md)
		}
	}
	if ua := md.Get("user-agent"); len(ua) == 1 && strings.Contains(ua[0], "curl") {
		t.Errorf("%s: user-agent %q: gRPC's own was expected on the backend hop", url, ua)
	}
}

// checkOpenAPI31 checks an OpenAPI 3.1 document: against the structural
// schema in testdata (the objects of the 3.1.0 specification, unknown
// fields refused), every Schema Object against JSON Schema 2020-12, and
// what no schema can say: operationIds unique, every $ref resolves, path
// parameters match their template, and no numeric bound on a string.
func checkOpenAPI31(t *testing.T, body []byte) {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	f, err := os.Open(filepath.Join("testdata", "rest", "openapi31-structure.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	structure, err := jsonschema.UnmarshalJSON(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	const structURL, docURL = "https://gatehouse.test/openapi31-structure.schema.json", "https://gatehouse.test/openapi.json"
	if err := c.AddResource(structURL, structure); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(structURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(doc); err != nil {
		t.Errorf("not a valid OpenAPI 3.1 document: %v", err)
	}

	root := doc.(map[string]any)
	var schemaPtrs []string // JSON pointers of Schema Objects
	if comps, ok := root["components"].(map[string]any); ok {
		for name := range comps["schemas"].(map[string]any) {
			schemaPtrs = append(schemaPtrs, "/components/schemas/"+name)
		}
	}
	ids := map[string]string{}
	paths, _ := root["paths"].(map[string]any)
	for path, item := range paths {
		vars := map[string]bool{}
		for _, m := range regexp.MustCompile(`\{([^}]+)\}`).FindAllStringSubmatch(path, -1) {
			vars[m[1]] = true
		}
		for verb, o := range item.(map[string]any) {
			op := o.(map[string]any)
			id, _ := op["operationId"].(string)
			if prev, dup := ids[id]; dup {
				t.Errorf("operationId %q of %s %s is also that of %s", id, verb, path, prev)
			}
			ids[id] = verb + " " + path
			inPath := map[string]bool{}
			params, _ := op["parameters"].([]any)
			for i, p := range params {
				pm := p.(map[string]any)
				if pm["in"] == "path" {
					inPath[pm["name"].(string)] = true
				}
				schemaPtrs = append(schemaPtrs, fmt.Sprintf("/paths/%s/%s/parameters/%d/schema", escapePointer(path), verb, i))
			}
			if !maps.Equal(vars, inPath) {
				t.Errorf("%s %s: path parameters %v, template variables %v", verb, path, inPath, vars)
			}
		}
	}
	// Every $ref resolves; no numeric bound on a string.
	var walk func(ptr string, v any)
	walk = func(ptr string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["$ref"].(string); ok {
				if !strings.HasPrefix(r, "#/") || resolvePointer(root, r[1:]) == nil {
					t.Errorf("%s: $ref %q does not resolve", ptr, r)
				}
			}
			if v["type"] == "string" {
				for _, k := range []string{"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"} {
					if _, ok := v[k]; ok {
						t.Errorf("%s: %s on a string", ptr, k)
					}
				}
			}
			for k, e := range v {
				walk(ptr+"/"+escapePointer(k), e)
			}
		case []any:
			for i, e := range v {
				walk(fmt.Sprintf("%s/%d", ptr, i), e)
			}
		}
	}
	walk("", root)
	// Schema Objects are JSON Schema 2020-12 (the compiler checks each
	// against the meta-schema, with its $refs resolved in the document).
	if err := c.AddResource(docURL, doc); err != nil {
		t.Fatal(err)
	}
	for _, ptr := range schemaPtrs {
		if _, err := c.Compile(docURL + "#" + ptr); err != nil {
			t.Errorf("schema %s: %v", ptr, err)
		}
	}
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func resolvePointer(root any, ptr string) any {
	cur := root
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = m[tok]; !ok {
			return nil
		}
	}
	return cur
}

// TestRESTStreamUnauthenticated: a REST server stream refused for want of
// credentials is a 401 with the same WWW-Authenticate challenge as a unary
// REST call, for every stream format; with the key it streams.
func TestRESTStreamUnauthenticated(t *testing.T) {
	backend, _ := startShelfBackend(t, "127.0.0.1:0", false)
	const apiKey = "k-stream-1"
	sum := sha256.Sum256([]byte(apiKey))
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends:
  - name: shelf
    endpoints: [%q]
    schema: { reflection: {} }
authentication:
  api_keys:
    - { name: partners, header: x-api-key, keys: [{ id: acme, sha256: %q }] }
routes:
  - name: shelf
    match: { service: "examples.shelf.v1.ShelfService" }
    backend: shelf
    auth: { require: [partners] }
`, backend, hex.EncodeToString(sum[:])))
	base := "http://" + g.Addr("edge").String()
	code, hdr, body := restDo(t, "GET", base+"/v1/shelves/1/titles", "")
	challenge := hdr.Get("WWW-Authenticate")
	if code != 401 || challenge == "" {
		t.Fatalf("unary REST without a key: %d %q %s, want 401 with a challenge", code, challenge, body)
	}
	for _, accept := range []string{"", "application/x-ndjson", "text/event-stream", "application/json"} {
		code, hdr, body := restDo(t, "GET", base+"/v1/shelves/1/books:watch", "", "Accept", accept)
		var st spb.Status
		if err := protojson.Unmarshal(body, &st); err != nil || code != 401 || codes.Code(st.GetCode()) != codes.Unauthenticated {
			t.Errorf("stream (Accept %q) without a key: %d %s (%v), want 401 with a google.rpc.Status", accept, code, body, err)
		}
		if got := hdr.Values("WWW-Authenticate"); len(got) != 1 || got[0] != challenge {
			t.Errorf("stream (Accept %q) without a key: WWW-Authenticate %q, want [%q] as for unary calls", accept, got, challenge)
		}
	}
	if code, _, body := restDo(t, "GET", base+"/v1/shelves/1/books:watch", "", "X-Api-Key", apiKey); code != 200 || strings.Count(string(body), "\n") != 3 {
		t.Errorf("stream with the key: %d %s, want 3 lines", code, body)
	}
}

// TestRESTAutoMappingOff: with backends[].schema.auto_mapping false, POST
// /pkg.Service/Method is 404 (unary and server-streaming methods alike);
// annotated methods are served as before. On by default.
func TestRESTAutoMappingOff(t *testing.T) {
	backend, _ := startShelfBackend(t, "127.0.0.1:0", true)
	svc := "/" + renamedPkg + ".ShelfService/"
	for _, tt := range []struct {
		schema string
		want   int
	}{
		{"schema: { reflection: {} }", 200},
		{"schema: { reflection: {}, auto_mapping: true }", 200},
		{"schema: { reflection: {}, auto_mapping: false }", 404},
	} {
		g := startGateway(t, shelfGatewayYAML(backend, renamedPkg+".ShelfService", tt.schema, ""))
		base := "http://" + g.Addr("edge").String()
		for _, m := range []string{"CountBooks", "WatchBooks"} {
			if code, body := restStatus(t, "POST", base+svc+m, `{"parent":"shelves/1"}`); code != tt.want {
				t.Errorf("%s: POST %s: %d %s, want %d", tt.schema, svc+m, code, body, tt.want)
			}
		}
		if code, body := restStatus(t, "GET", base+"/v1/shelves/1/titles", ""); code != 200 {
			t.Errorf("%s: annotated method: %d %s", tt.schema, code, body)
		}
	}
}

// TestRESTReflectionV1Alpha: a backend that serves only the v1alpha
// reflection service (older servers) still gets its REST routes: the
// schema fetch falls back from grpc.reflection.v1.
func TestRESTReflectionV1Alpha(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	shelfv1.RegisterShelfServiceServer(s, shelfServer{})
	reflectionv1alpha.RegisterServerReflectionServer(s, reflection.NewServer(reflection.ServerOptions{Services: s}))
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	if _, ok := s.GetServiceInfo()["grpc.reflection.v1.ServerReflection"]; ok {
		t.Fatal("the backend serves grpc.reflection.v1; the test needs v1alpha only")
	}
	g := startGateway(t, shelfGatewayYAML(lis.Addr().String(), "examples.shelf.v1.ShelfService", "schema: { reflection: {} }", ""))
	if errs := g.SchemaErrors(); len(errs) > 0 {
		t.Fatalf("schema errors: %v", errs)
	}
	base := "http://" + g.Addr("edge").String()
	if code, body := restStatus(t, "GET", base+"/v1/shelves/1/titles", ""); code != 200 || !strings.Contains(body, "One") {
		t.Errorf("REST route of a v1alpha-only backend: %d %s", code, body)
	}
}

// TestGrpcurlRuntimeSchema: the real grpcurl lists and describes, through
// the gateway's own reflection, a routed service that the gateway knows
// only from its backend's reflection.
func TestGrpcurlRuntimeSchema(t *testing.T) {
	if _, err := exec.LookPath("grpcurl"); err != nil {
		t.Fatal("grpcurl is not on PATH: install it (go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3)")
	}
	backend, _ := startShelfBackend(t, "127.0.0.1:0", true)
	g := startGateway(t, shelfGatewayYAML(backend, renamedPkg+".ShelfService", "schema: { reflection: {} }", ""))
	addr := g.Addr("edge").String()
	run := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "grpcurl", append([]string{"-plaintext"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	list := run(addr, "list")
	for _, want := range []string{renamedPkg + ".ShelfService", "grpc.health.v1.Health"} {
		if !slices.Contains(strings.Fields(list), want) {
			t.Errorf("grpcurl list: %q lacks %s", list, want)
		}
	}
	desc := run(addr, "describe", renamedPkg+".ShelfService")
	for _, want := range []string{
		renamedPkg + ".ShelfService is a service:",
		"rpc CountBooks ( ." + renamedPkg + ".CountBooksRequest ) returns ( ." + renamedPkg + ".CountBooksResponse );",
		"rpc ImportBooks ( stream ." + renamedPkg + ".ImportBooksRequest )",
	} {
		if !strings.Contains(desc, want) {
			t.Errorf("grpcurl describe: %q lacks %q", desc, want)
		}
	}
	msg := run(addr, "describe", renamedPkg+".Book")
	if !strings.Contains(msg, "int64 page_count = 9") {
		t.Errorf("grpcurl describe %s.Book: %q", renamedPkg, msg)
	}
}
