package test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	shelfv1 "github.com/gatehouse-dev/gatehouse/gen/examples/shelf/v1"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
)

var updateREST = flag.Bool("update-rest", false, "rewrite test/testdata/rest/*.golden")

// restCase is one REST request of the differential suite.
type restCase struct {
	name, method, path, body string
	header                   []string // name, value pairs
	// differs names why runtime transcoding answers differently from the
	// generated handlers on purpose; the case is then compared with its own
	// golden file only.
	differs string
}

// shelfCases exercise every HttpRule feature of the shelf API and the
// error table of issue 3.
var shelfCases = []restCase{
	{name: "nested template, response_body", method: "GET", path: "/v1/shelves/1/books/2"},
	{name: "additional binding", method: "GET", path: "/v1/books/7"},
	{name: "query of every kind", method: "GET", path: "/v1/shelves/1/books?page_size=5&genres=GENRE_FICTION&genres=3" +
		"&published_after=2020-01-02T03:04:05Z&min_rating=4.5&order.by=title&order.desc=true&tags=a&tags=b" +
		"&labels%5Bk%5D=v&max_staleness=5s&genre=GENRE_HISTORY&ignored=1"},
	{name: "query by JSON names", method: "GET", path: "/v1/shelves/1/books?pageSize=7&publishedAfter=2020-01-02T03:04:05Z&minRating=1"},
	{name: "query enum by number", method: "GET", path: "/v1/shelves/1/books?genre=2"},
	{name: "response_body repeated", method: "GET", path: "/v1/shelves/1/titles"},
	{name: "body field", method: "POST", path: "/v1/shelves/1/books",
		body: `{"title":"Dune","author":"Frank Herbert","genre":"GENRE_SCIENCE_FICTION","published":"1965-08-01T00:00:00Z","rating":4.8,"tags":["sf"],"labels":{"a":"b"},"pageCount":"412","extra":{"x":[1,"y",null]}}`},
	{name: "body field empty", method: "POST", path: "/v1/shelves/1/books", body: ``},
	{name: "patch, field mask from body", method: "PATCH", path: "/v1/shelves/1/books/2", body: `{"title":"New","rating":null}`},
	{name: "patch, same name in body", method: "PATCH", path: "/v1/shelves/1/books/2", body: `{"name":"shelves/1/books/2","title":"New"}`,
		differs: "a field set by both path and body is 400 (issue 3), even with the same value; generated handlers let the path win"},
	{name: "patch, other name in body", method: "PATCH", path: "/v1/shelves/1/books/2", body: `{"name":"shelves/9/books/9","title":"New"}`,
		differs: "a field set by both path and body is 400 (issue 3); generated handlers let the path win"},
	{name: "patch, empty name in body", method: "PATCH", path: "/v1/shelves/1/books/2", body: `{"name":"","title":"New"}`,
		differs: "a field set by both path and body is 400 (issue 3), its default value too; generated handlers let the path win"},
	{name: "custom verb, body * with the path field null", method: "POST", path: "/v1/shelves/1/books/2:archive", body: `{"name":null,"reason":"old"}`},
	{name: "custom verb, body * with the path field", method: "POST", path: "/v1/shelves/1/books/2:archive", body: `{"name":"shelves/1/books/2","reason":"old"}`,
		differs: "a field set by both path and body is 400 (issue 3); generated handlers let the path win"},
	{name: "delete", method: "DELETE", path: "/v1/shelves/1/books/2"},
	{name: "custom verb, body *", method: "POST", path: "/v1/shelves/1/books/2:archive", body: `{"reason":"old"}`},
	{name: "multi-segment wildcard", method: "GET", path: "/v1/files/a/b/c.txt"},
	{name: "custom method", method: "PURGE", path: "/v1/shelves/1/cache"},
	{name: "enum path parameter", method: "PUT", path: "/v1/shelves/9/tier/TIER_COLD"},
	{name: "enum path parameter by number", method: "PUT", path: "/v1/shelves/9/tier/1"},
	{name: "server stream", method: "GET", path: "/v1/shelves/1/books:watch"},
	{name: "client stream, newline-delimited JSON", method: "POST", path: "/v1/books:import",
		body: `{"parent":"shelves/1","book":{"title":"One"}}` + "\n" + `{"parent":"shelves/1","book":{"title":"Two","pageCount":"3"}}` + "\n\n" + `{"book":{"title":"Three"}}` + "\n"},
	{name: "client stream, empty", method: "POST", path: "/v1/books:import"},
	{name: "client stream, backend error", method: "POST", path: "/v1/books:import",
		body: `{"parent":"shelves/1","book":{"title":"One"}}` + "\n" + `{"parent":"shelves/1","book":{"title":"fail"}}` + "\n" + `{"book":{"title":"Three"}}`},
	{name: "client stream, malformed line", method: "POST", path: "/v1/books:import",
		body: `{"book":{"title":"One"}}` + "\n" + `{"book":`},
	{name: "client stream, unknown field", method: "POST", path: "/v1/books:import", body: `{"bogus":1}`},
	{name: "bidi stream", method: "POST", path: "/v1/books:echo", body: `{"title":"a"}` + "\n" + `{"title":"b"}` + "\n" + `{"title":"c"}`},
	{name: "bidi stream, backend error", method: "POST", path: "/v1/books:echo", body: `{"title":"a"}` + "\n" + `{"title":"fail"}` + "\n" + `{"title":"c"}`},
	{name: "bidi stream, error first", method: "POST", path: "/v1/books:echo", body: `{"title":"fail"}`},
	{name: "response headers and trailers", method: "GET", path: "/v1/shelves/1/books/3", header: []string{"TE", "trailers"}},
	{name: "auto-mapping", method: "POST", path: "/examples.shelf.v1.ShelfService/CountBooks", body: `{"parent":"shelves/1"}`,
		differs: "auto-mapping serves methods without annotation; generated handlers do not"},

	// The error table.
	{name: "backend error with details", method: "GET", path: "/v1/shelves/1/books/404"},
	{name: "unknown path", method: "GET", path: "/v1/nothing/here"},
	{name: "wrong verb", method: "DELETE", path: "/v1/shelves/1/titles"},
	{name: "malformed JSON", method: "POST", path: "/v1/shelves/1/books", body: `{"title":`},
	{name: "unknown field", method: "POST", path: "/v1/shelves/1/books", body: `{"titel":"x"}`},
	{name: "wrong type", method: "POST", path: "/v1/shelves/1/books", body: `{"title":5}`},
	{name: "wrong type in query", method: "GET", path: "/v1/shelves/1/books?page_size=abc"},
	{name: "bad enum in path", method: "PUT", path: "/v1/shelves/9/tier/TIER_LUKEWARM"},
	{name: "bad enum in query", method: "GET", path: "/v1/shelves/1/books?genre=GENRE_POETRY"},
	{name: "validation", method: "POST", path: "/v1/shelves/1/books", body: `{"title":"","pageCount":"-1"}`},
	{name: "method override ignored", method: "POST", path: "/v1/shelves/1/books/2", body: `{}`, header: []string{"X-HTTP-Method-Override", "GET"}},
	{name: "body over the limit", method: "POST", path: "/v1/shelves/1/books", body: `{"title":"` + strings.Repeat("a", 5<<20) + `"}`},
}

// gatewayVariant is one way of serving the shelf API's REST mapping.
type gatewayVariant struct {
	name    string
	service string // the routed service
	schema  string // backends[0].schema, YAML; "" for none
	opts    []edge.Option
}

func shelfGatewayYAML(backend, service, schema, rest string) string {
	return fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends:
  - name: shelf
    endpoints: [%q]
    %s
routes:
  - name: shelf
    match: { service: %q }
    backend: shelf
%s
`, backend, schema, service, rest)
}

// shelfREST registers the generated grpc-gateway handlers of the shelf API.
func shelfREST(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	return shelfv1.RegisterShelfServiceHandlerClient(ctx, mux, shelfv1.NewShelfServiceClient(conn))
}

// TestRESTDifferential sends the same requests to the generated handlers of
// the shelf API and to runtime transcoding of the same proto, loaded from a
// descriptor set file, by reflection of the backend, and by reflection of a
// copy of the proto in another package that nothing compiled in knows. The
// answers (status, headers, body) must be the same, except for the cases
// marked differs; each variant's answers are kept as golden files.
func TestRESTDifferential(t *testing.T) {
	for _, tt := range []struct{ name, golden, rest string }{
		{name: "default JSON options"},
		// Every protojson option the rest block has, on: the generated
		// handlers and runtime transcoding (response_body included) must
		// still agree.
		{name: "protojson options", golden: "_protojson_options", rest: "rest: { emit_unpopulated: true, use_proto_names: true, enums_as_ints: true }"},
	} {
		t.Run(tt.name, func(t *testing.T) { restDifferential(t, tt.golden, tt.rest) })
	}
}

// restDifferential runs the differential suite with a config rest block;
// the goldens are <variant><suffix>.golden.
func restDifferential(t *testing.T, suffix, rest string) {
	backend, _ := startShelfBackend(t, "127.0.0.1:0", false)
	renamedBackend, _ := startShelfBackend(t, "127.0.0.1:0", true)
	dset := writeDescriptorSet(t, "examples/shelf/v1/shelf.proto")
	variants := []gatewayVariant{
		{name: "generated", service: "examples.shelf.v1.ShelfService", opts: []edge.Option{edge.WithREST(shelfREST)}},
		{name: "descriptor_set", service: "examples.shelf.v1.ShelfService", schema: fmt.Sprintf("schema: { descriptor_set: %q }", dset)},
		{name: "reflection", service: "examples.shelf.v1.ShelfService", schema: "schema: { reflection: {} }"},
		{name: "reflection_renamed", service: renamedPkg + ".ShelfService", schema: "schema: { reflection: {} }"},
	}
	results := map[string][]string{}
	for _, v := range variants {
		addr := backend
		if v.name == "reflection_renamed" {
			addr = renamedBackend
		}
		g := startGateway(t, shelfGatewayYAML(addr, v.service, v.schema, rest), v.opts...)
		if errs := g.SchemaErrors(); len(errs) > 0 {
			t.Fatalf("%s: schema errors: %v", v.name, errs)
		}
		base := "http://" + g.Addr("edge").String()
		var out []string
		for _, c := range shelfCases {
			path := c.path
			if v.name == "reflection_renamed" {
				path = strings.Replace(path, "/examples.shelf.v1.", "/"+renamedPkg+".", 1)
			}
			got := restExchange(t, c.method, base+path, c.body, c.header...)
			if v.name == "reflection_renamed" {
				got = strings.ReplaceAll(got, renamedPkg, "examples.shelf.v1")
			}
			out = append(out, fmt.Sprintf("### %s\n%s %s\n%s", c.name, c.method, truncate(c.path), got))
		}
		results[v.name] = out
		checkGolden(t, filepath.Join("testdata", "rest", v.name+suffix+".golden"), strings.Join(out, "\n"))
	}
	for _, v := range variants[1:] {
		for i, c := range shelfCases {
			want, got := results["generated"][i], results[v.name][i]
			switch {
			case c.differs == "" && got != want:
				t.Errorf("%s: %s differs from the generated handlers:\n--- generated\n%s\n--- %s\n%s", v.name, c.name, want, v.name, got)
			case c.differs != "" && got == want:
				t.Errorf("%s: %s: expected a difference (%s), got the same answer", v.name, c.name, c.differs)
			}
		}
	}
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// restExchange makes one HTTP request and returns its answer in a stable
// text form: status, headers (Date dropped, request ID and length masked), body
// (JSON compacted: protojson varies whitespace from build to build).
func restExchange(t *testing.T, method, url, body string, header ...string) string {
	t.Helper()
	code, hdr, b := restDo(t, method, url, body, header...)
	var keys []string
	for k := range hdr {
		if k == "Date" {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d\n", code)
	for _, k := range keys {
		v := strings.Join(hdr[k], ", ")
		switch k {
		case "X-Request-Id":
			v = "<id>"
		case "Content-Length":
			v = "<n>" // protojson varies whitespace from build to build
		}
		fmt.Fprintf(&sb, "%s: %s\n", k, v)
	}
	// protobuf's error texts vary "proto: " and "proto:\u00a0" from build
	// to build, as protojson varies whitespace.
	sb.WriteString(strings.ReplaceAll(compactJSON(b), "proto:\u00a0", "proto: "))
	sb.WriteString("\n")
	return sb.String()
}

// compactJSON compacts each line of a (possibly newline-delimited) JSON
// body; other bodies are returned as they are.
func compactJSON(b []byte) string {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	var out []string
	for _, l := range lines {
		var buf bytes.Buffer
		if err := json.Compact(&buf, l); err != nil {
			out = append(out, string(l))
			continue
		}
		out = append(out, buf.String())
	}
	return strings.Join(out, "\n")
}

// restDo makes an HTTP request on a fresh connection (closed after, for
// goleak) and returns status, headers (trailers included) and body.
func restDo(t *testing.T, method, url, body string, header ...string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Expect", "100-continue")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	tr := &http.Transport{DisableKeepAlives: true, ExpectContinueTimeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	h := resp.Header.Clone()
	for k, v := range resp.Trailer {
		h["Trailer-"+k] = v
	}
	return resp.StatusCode, h, b
}

// checkGolden compares got with a golden file, or rewrites it with
// -update-rest.
func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *updateREST {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-rest to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file (run with -update-rest to rewrite it):\n%s", path, firstDiff(string(want), got))
	}
}

func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(wl), len(gl)) {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\n want %q\n  got %q", i+1, truncate(w), truncate(g))
		}
	}
	return ""
}
