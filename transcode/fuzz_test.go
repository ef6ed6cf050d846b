package transcode_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	shelfv1 "github.com/gatehouse-dev/gatehouse/gen/examples/shelf/v1"
	"github.com/gatehouse-dev/gatehouse/transcode"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
)

// recordingConn is a grpc.ClientConnInterface that answers every unary call
// with an empty response and records the request it was given.
type recordingConn struct {
	mu     sync.Mutex
	method string
	req    proto.Message
}

func (c *recordingConn) Invoke(_ context.Context, method string, args, _ any, _ ...grpc.CallOption) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.method, c.req = method, proto.Clone(args.(proto.Message))
	return nil
}

func (c *recordingConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "streams are not fuzzed")
}

// FuzzTranscode sends any verb, path, query and JSON body through the
// runtime-schema REST handlers of the shelf API (every HttpRule feature:
// nested and multi-segment templates, custom verbs, body fields, field
// masks, enum and repeated query parameters): no panic, no 5xx, and a call
// made only with a request that marshals.
func FuzzTranscode(f *testing.F) {
	fdp := protodesc.ToFileDescriptorProto(shelfv1.File_examples_shelf_v1_shelf_proto)
	schema, err := transcode.NewSchema("shelf", "fuzz", []*descriptorpb.FileDescriptorProto{fdp}, nil, true)
	if err != nil {
		f.Fatal(err)
	}
	conn := &recordingConn{}
	mux := runtime.NewServeMux()
	transcode.Register(mux, conn, transcode.NewSet([]*transcode.Schema{schema}), transcode.HandlerOptions{StrictQuery: true})

	f.Add("GET", "/v1/shelves/1/books/2", "")
	f.Add("GET", "/v1/books/7", "")
	f.Add("GET", "/v1/shelves/1/books?page_size=5&genres=GENRE_FICTION&genres=3&published_after=2020-01-02T03:04:05Z&min_rating=4.5&order.by=title&order.desc=true&tags=a&labels%5Bk%5D=v&max_staleness=5s", "")
	f.Add("POST", "/v1/shelves/1/books", `{"title":"Dune","genre":"GENRE_SCIENCE_FICTION","published":"1965-08-01T00:00:00Z","rating":4.8,"tags":["sf"],"labels":{"a":"b"},"pageCount":"412","extra":{"x":[1,"y",null]}}`)
	f.Add("PATCH", "/v1/shelves/1/books/2", `{"title":"New","rating":null}`)
	f.Add("PATCH", "/v1/shelves/1/books/2", `{"name":"shelves/9/books/9"}`)
	f.Add("POST", "/v1/shelves/1/books/2:archive", `{"reason":"old"}`)
	f.Add("GET", "/v1/files/a/b/c.txt", "")
	f.Add("GET", "/v1/files/%2e%2e/%2F", "")
	f.Add("PURGE", "/v1/shelves/1/cache", "")
	f.Add("PUT", "/v1/shelves/9/tier/TIER_COLD", "")
	f.Add("PUT", "/v1/shelves/9/tier/99999999999", "")
	f.Add("POST", "/examples.shelf.v1.ShelfService/CountBooks", `{"parent":"shelves/1"}`)
	f.Add("GET", "/v1/shelves/1/books?page_size=abc&genre=GENRE_POETRY&unknown=1", "")
	f.Add("POST", "/v1/shelves/1/books", `{"title":`)
	f.Add("POST", "/v1/shelves/1/books", `{"extra":{"a":{"b":{"c":[[[[[[1]]]]]]}}}}`)
	f.Add("GET", "/v1/shelves/%zz/books", "")
	f.Fuzz(func(t *testing.T, verb, target, body string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(verb, " \r\n\t") || verb == "" {
			return
		}
		req, err := http.NewRequest(verb, "http://gatehouse"+target, bytes.NewBufferString(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json")
		conn.mu.Lock()
		conn.req = nil
		conn.mu.Unlock()
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusNotImplemented {
			t.Fatalf("%s %s %q: %d %s", verb, target, body, rec.Code, rec.Body)
		}
		conn.mu.Lock()
		defer conn.mu.Unlock()
		if conn.req != nil {
			if _, err := proto.Marshal(conn.req); err != nil {
				t.Fatalf("%s %s: called %s with a request that does not marshal: %v", verb, target, conn.method, err)
			}
		}
	})
}
