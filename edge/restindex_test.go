package edge

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	greeterv1 "github.com/gatehouse-dev/gatehouse/gen/examples/greeter/v1"
	shelfv1 "github.com/gatehouse-dev/gatehouse/gen/examples/shelf/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func TestRESTIndexLookup(t *testing.T) {
	var methods []protoreflect.MethodDescriptor
	for _, fd := range []protoreflect.FileDescriptor{greeterv1.File_examples_greeter_v1_greeter_proto, shelfv1.File_examples_shelf_v1_shelf_proto} {
		ms := fd.Services().Get(0).Methods()
		for i := range ms.Len() {
			methods = append(methods, ms.Get(i))
		}
	}
	x := newRESTIndex(nil, methods, func(full, path string, err error) { t.Errorf("%s %s: %v", full, path, err) })
	for _, tc := range []struct {
		verb, path string
		want       string            // "" for no match
		params     map[string]string // nil: not checked
	}{
		{"POST", "/v1/greeter:sayHello", "/examples.greeter.v1.GreeterService/SayHello", nil},
		{"GET", "/v1/greeter:sayHello", "", nil},
		{"get", "/v1/shelves/s1/books/b1", "/examples.shelf.v1.ShelfService/GetBook", map[string]string{"name": "shelves/s1/books/b1"}},
		{"DELETE", "/v1/shelves/s1/books/b1", "/examples.shelf.v1.ShelfService/DeleteBook", nil},
		{"GET", "/v1/books/b1", "/examples.shelf.v1.ShelfService/GetBook", nil}, // an additional binding
		{"POST", "/v1/shelves/s1/books/b1:archive", "/examples.shelf.v1.ShelfService/ArchiveBook", nil},
		{"GET", "/v1/shelves/s1/books:watch", "/examples.shelf.v1.ShelfService/WatchBooks", map[string]string{"parent": "shelves/s1"}},
		{"GET", "/v1/files/a/b/c", "/examples.shelf.v1.ShelfService/GetFile", map[string]string{"path": "a/b/c"}},
		// Streaming methods are served on /pkg.Service/Method (browser
		// streams, WebSocket); unary ones only by gRPC-Web, which knows its
		// method from the path.
		{"POST", "/examples.greeter.v1.GreeterService/StreamHellos", "/examples.greeter.v1.GreeterService/StreamHellos", nil},
		{"GET", "/examples.greeter.v1.GreeterService/StreamHellos", "/examples.greeter.v1.GreeterService/StreamHellos", nil},
		{"POST", "/examples.greeter.v1.GreeterService/SayHello", "", nil},
		{"GET", "/nowhere", "", nil},
	} {
		got, params, ok := x.lookup(context.Background(), tc.verb, &url.URL{Path: tc.path})
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s %s: %q %v, want %q", tc.verb, tc.path, got, ok, tc.want)
			continue
		}
		for k, v := range tc.params {
			if params[k] != v {
				t.Errorf("%s %s: param %s = %q, want %q (%v)", tc.verb, tc.path, k, params[k], v, params)
			}
		}
	}
	if !x.knownMethod("/examples.shelf.v1.ShelfService/WatchBooks") || x.knownMethod("/examples.shelf.v1.ShelfService/Nope") || x.knownMethod("/x") {
		t.Error("knownMethod")
	}
}

func TestGRPCWebMediaType(t *testing.T) {
	for _, tc := range []struct {
		ct       string
		text, ok bool
		sub      string
	}{
		{"application/grpc-web", false, true, ""},
		{"Application/gRPC-Web+Proto", false, true, "+proto"},
		{"APPLICATION/GRPC-WEB-TEXT; charset=utf-8", true, true, ""},
		{" application/grpc-web-text+proto ", true, true, "+proto"},
		{"application/grpc-web+json", false, true, "+json"},
		{"application/grpc", false, false, ""},
		{"application/json", false, false, ""},
		{"", false, false, ""},
	} {
		text, sub, ok := grpcWebMediaType(tc.ct)
		if text != tc.text || sub != tc.sub || ok != tc.ok {
			t.Errorf("%q: %v %q %v, want %v %q %v", tc.ct, text, sub, ok, tc.text, tc.sub, tc.ok)
		}
	}
	r, _ := http.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("Content-Type", "Application/gRPC-Web+proto")
	if !isGRPCWeb(r) {
		t.Error("isGRPCWeb is case-sensitive")
	}
}
