package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/edge"
)

// BenchmarkRESTTranscoding compares REST throughput through runtime schemas
// (dynamicpb, loaded by reflection) with grpc-gateway's generated handlers,
// for the same methods of the same backend, through the same gateway
// assembly. Run with:
//
//	go test ./test/ -run '^$' -bench RESTTranscoding -benchtime 3s
func BenchmarkRESTTranscoding(b *testing.B) {
	backend, _ := startShelfBackend(b, "127.0.0.1:0", false)
	variants := []struct {
		name, schema string
		opts         []edge.Option
	}{
		{"generated", "", []edge.Option{edge.WithREST(shelfREST)}},
		{"runtime", "schema: { reflection: {} }", nil},
	}
	calls := []struct{ name, method, path, body string }{
		{"GetBook", "GET", "/v1/shelves/1/books/2", ""},
		{"CreateBook", "POST", "/v1/shelves/1/books", `{"title":"Dune","author":"Frank Herbert","genre":"GENRE_SCIENCE_FICTION","tags":["sf"],"pageCount":"412"}`},
		{"ListBooksQuery", "GET", "/v1/shelves/1/books?page_size=5&genres=GENRE_FICTION&order.by=title&tags=a&tags=b", ""},
	}
	for _, c := range calls {
		for _, v := range variants {
			b.Run(c.name+"/"+v.name, func(b *testing.B) {
				g := startGatewayB(b, shelfGatewayYAML(backend, "examples.shelf.v1.ShelfService", v.schema, ""), v.opts...)
				url := "http://" + g.Addr("edge").String() + c.path
				tr := &http.Transport{MaxIdleConnsPerHost: 64}
				defer tr.CloseIdleConnections()
				client := &http.Client{Transport: tr}
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						var body io.Reader
						if c.body != "" {
							body = strings.NewReader(c.body)
						}
						req, _ := http.NewRequest(c.method, url, body)
						resp, err := client.Do(req)
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							b.Error(fmt.Sprint(c.name, " ", resp.StatusCode))
							return
						}
					}
				})
			})
		}
	}
}

// startGatewayB is startGateway for benchmarks.
func startGatewayB(b *testing.B, yaml string, opts ...edge.Option) *edge.Gateway {
	b.Helper()
	cfg, err := config.Parse("bench.yaml", []byte(yaml))
	if err != nil {
		b.Fatal(err)
	}
	g, err := edge.New(cfg, opts...)
	if err != nil {
		b.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = g.Shutdown(context.Background()) })
	return g
}
