package test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/edge"
	"github.com/gatehouse-dev/gatehouse/examples/demo"
	"github.com/gatehouse-dev/gatehouse/examples/files"
	filesv1 "github.com/gatehouse-dev/gatehouse/gen/examples/files/v1"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// startFilesBackend serves the example file store, with srv wrapping it
// when given.
func startFilesBackend(t *testing.T, srv filesv1.FileServiceServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := files.NewGRPCServer(files.New())
	if srv != nil {
		s = grpc.NewServer()
		filesv1.RegisterFileServiceServer(s, srv)
	}
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// filesGateway routes the file store with the listener's default
// max_message_bytes (4 MiB); schema is backends[0].schema, YAML, or "".
func filesGateway(t *testing.T, backend, schema string, opts ...edge.Option) string {
	t.Helper()
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends:
  - name: files
    endpoints: [%q]
    %s
routes:
  - { name: files, match: { service: "examples.files.v1.FileService" }, backend: files }
`, backend, schema), opts...)
	return "http://" + g.Addr("edge").String()
}

// bodyResult is an HTTP answer read to its end.
type bodyResult struct {
	status  int
	header  http.Header
	body    []byte
	readErr error // reading the body failed (a truncated transfer)
	chunked bool  // sent without a Content-Length
}

func sendBody(t *testing.T, c *http.Client, method, url, contentType string, body io.Reader, header ...string) bodyResult {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, rerr := io.ReadAll(resp.Body)
	return bodyResult{status: resp.StatusCode, header: resp.Header, body: data, readErr: rerr, chunked: resp.ContentLength < 0}
}

// formPart is one part of a multipart/form-data body; file names a file
// part.
type formPart struct {
	name, file string
	data       []byte
}

func multipartBody(t *testing.T, parts ...formPart) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.file != "" {
			w, err = mw.CreateFormFile(p.name, p.file)
		} else {
			w, err = mw.CreateFormField(p.name)
		}
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(p.data)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// unsized hides a reader's length, so that the request is sent chunked.
type unsized struct{ io.Reader }

// TestBodies drives bodies that are not JSON through the gateway, with the
// compiled-in (generated) handlers and with runtime transcoding of the same
// proto from a descriptor set: raw HttpBody uploads and downloads, a
// streamed download, multipart/form-data uploads of 3 MiB, the 4 MiB
// listener limit and the errors of the multipart mapping.
func TestBodies(t *testing.T) {
	dset := writeDescriptorSet(t, "examples/files/v1/files.proto")
	variants := []struct {
		name, schema string
		opts         []edge.Option
	}{
		{name: "generated", opts: []edge.Option{edge.WithREST(demo.REST()...)}},
		{name: "descriptor_set", schema: fmt.Sprintf("schema: { descriptor_set: %q }", dset)},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			base := filesGateway(t, startFilesBackend(t, nil), v.schema, v.opts...)
			c := httpClient(t, false)
			file := randomBytes(t, 3<<20)

			// A raw upload: the body is the file, its type the Content-Type.
			r := sendBody(t, c, "PUT", base+"/v1/blobs/raw.bin", "application/x-test", bytes.NewReader(file))
			if r.status != 200 || !strings.Contains(string(r.body), sha(file)) || !strings.Contains(string(r.body), `"size":"3145728"`) {
				t.Fatalf("raw upload: %d %.300s", r.status, r.body)
			}
			// A chunked raw upload (no Content-Length).
			r = sendBody(t, c, "PUT", base+"/v1/blobs/chunked.bin", "application/x-test", unsized{bytes.NewReader(file[:1<<20])})
			if r.status != 200 || !strings.Contains(string(r.body), sha(file[:1<<20])) {
				t.Fatalf("chunked raw upload: %d %.300s", r.status, r.body)
			}

			// Download: the bytes as stored, with their content type.
			r = sendBody(t, c, "GET", base+"/v1/blobs/raw.bin", "", nil)
			if r.status != 200 || r.header.Get("Content-Type") != "application/x-test" || !bytes.Equal(r.body, file) {
				t.Fatalf("download: %d %q, %d bytes, equal %v", r.status, r.header.Get("Content-Type"), len(r.body), bytes.Equal(r.body, file))
			}
			// Streamed download: chunks of 100 KB written as one body.
			r = sendBody(t, c, "GET", base+"/v1/blobs/raw.bin:chunks?chunk_size=100000", "", nil)
			if r.status != 200 || r.readErr != nil || r.header.Get("Content-Type") != "application/x-test" || !r.chunked || !bytes.Equal(r.body, file) {
				t.Fatalf("streamed download: %d %q chunked %v, %d bytes, equal %v, %v",
					r.status, r.header.Get("Content-Type"), r.chunked, len(r.body), bytes.Equal(r.body, file), r.readErr)
			}

			// A multipart upload of a 3 MiB file: form fields fill strings,
			// the file part the bytes field.
			ct, body := multipartBody(t,
				formPart{name: "name", data: []byte("form.png")},
				formPart{name: "contentType", data: []byte("image/png")}, // a JSON name works too
				formPart{name: "description", data: []byte("a 3 MiB file")},
				formPart{name: "content", file: "photo.png", data: file},
			)
			r = sendBody(t, c, "POST", base+"/v1/blobs", ct, bytes.NewReader(body))
			if r.status != 200 || !strings.Contains(string(r.body), sha(file)) || !strings.Contains(string(r.body), `"description":"a 3 MiB file"`) {
				t.Fatalf("multipart upload: %d %.300s", r.status, r.body)
			}
			r = sendBody(t, c, "GET", base+"/v1/blobs/form.png", "", nil)
			if r.status != 200 || r.header.Get("Content-Type") != "image/png" || !bytes.Equal(r.body, file) {
				t.Fatalf("download of the multipart upload: %d %q equal %v", r.status, r.header.Get("Content-Type"), bytes.Equal(r.body, file))
			}

			// Over the listener's 4 MiB: 413, sized or chunked, raw or
			// multipart. Over HTTP/1.1 a client that sends the body
			// unasked may see the connection reset before it reads the
			// 413, so it asks first (Expect: 100-continue, as curl does
			// for large bodies); HTTP/2 has no such race.
			big := randomBytes(t, 5<<20)
			h2 := httpClient(t, true)
			ask := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, ExpectContinueTimeout: 5 * time.Second}}
			if r = sendBody(t, ask, "PUT", base+"/v1/blobs/big.bin", "application/octet-stream", bytes.NewReader(big), "Expect", "100-continue"); r.status != 413 {
				t.Errorf("5 MiB raw upload: %d %.200s", r.status, r.body)
			}
			if r = sendBody(t, h2, "PUT", base+"/v1/blobs/big.bin", "application/octet-stream", unsized{bytes.NewReader(big)}); r.status != 413 {
				t.Errorf("5 MiB chunked raw upload: %d %.200s", r.status, r.body)
			}
			ct, body = multipartBody(t, formPart{name: "name", data: []byte("big")}, formPart{name: "content", file: "big", data: big})
			if r = sendBody(t, h2, "POST", base+"/v1/blobs", ct, bytes.NewReader(body)); r.status != 413 {
				t.Errorf("5 MiB multipart upload: %d %.200s", r.status, r.body)
			}
			if r = sendBody(t, h2, "POST", base+"/v1/blobs", ct, unsized{bytes.NewReader(body)}); r.status != 413 {
				t.Errorf("5 MiB chunked multipart upload: %d %.200s", r.status, r.body)
			}
			if _, err := filesv1.NewFileServiceClient(dial(t, strings.TrimPrefix(base, "http://"))).Download(t.Context(), &filesv1.DownloadRequest{Name: "big.bin"}); status.Code(err) != codes.NotFound {
				t.Errorf("a refused upload was stored: %v", err)
			}

			// What the multipart mapping refuses, and bodies of the wrong
			// type: 400 with a google.rpc.Status, as grpc-gateway answers
			// a body it cannot decode (never 415).
			bad := []struct {
				name, contentType string
				body              []byte
			}{
				{"binary body for a message", "application/octet-stream", file[:1000]},
				{"text body for a message", "text/plain", []byte("name=x")},
			}
			for _, p := range [][]formPart{
				{{name: "nosuchfield", data: []byte("x")}},
				{{name: "name", file: "n.txt", data: []byte("x")}},                     // a file for a string field
				{{name: "content", data: []byte("x")}},                                 // a form field for bytes
				{{name: "name", data: []byte("a")}, {name: "name", data: []byte("b")}}, // twice
				{{name: "description", data: []byte{0xff, 0xfe}}},                      // not UTF-8
			} {
				ct, body := multipartBody(t, p...)
				bad = append(bad, struct {
					name, contentType string
					body              []byte
				}{fmt.Sprintf("multipart %s", p[len(p)-1].name), ct, body})
			}
			bad = append(bad, struct {
				name, contentType string
				body              []byte
			}{"multipart without boundary", "multipart/form-data", []byte("--x\r\n")})
			for _, b := range bad {
				r := sendBody(t, c, "POST", base+"/v1/blobs", b.contentType, bytes.NewReader(b.body))
				if r.status != 400 || !strings.Contains(string(r.body), `"code":3`) {
					t.Errorf("%s: %d %.300s", b.name, r.status, r.body)
				}
			}

			// Errors of downloads are JSON with a real status, streamed or not.
			for _, path := range []string{"/v1/blobs/missing", "/v1/blobs/missing:chunks"} {
				r := sendBody(t, c, "GET", base+path, "", nil)
				if r.status != 404 || r.header.Get("Content-Type") != "application/json" || !strings.Contains(string(r.body), `"code":5`) {
					t.Errorf("GET %s: %d %q %.200s", path, r.status, r.header.Get("Content-Type"), r.body)
				}
			}
		})
	}
}

// failingFiles fails a streamed download after two chunks.
type failingFiles struct{ *files.Server }

func (f failingFiles) DownloadChunks(req *filesv1.DownloadChunksRequest, s grpc.ServerStreamingServer[httpbody.HttpBody]) error {
	for range 2 {
		if err := s.Send(&httpbody.HttpBody{ContentType: "text/plain", Data: []byte("partial ")}); err != nil {
			return err
		}
	}
	return status.Error(codes.Unavailable, "disk gone")
}

// TestBodiesStreamAbort: a streamed download that fails after its first
// chunk is cut off, so that the client cannot take it for the whole file.
func TestBodiesStreamAbort(t *testing.T) {
	base := filesGateway(t, startFilesBackend(t, failingFiles{files.New()}), "", edge.WithREST(demo.REST()...))
	for _, h2 := range []bool{false, true} {
		r := sendBody(t, httpClient(t, h2), "GET", base+"/v1/blobs/x:chunks", "", nil)
		if r.status != 200 || r.readErr == nil || r.header.Get("Content-Type") != "text/plain" {
			t.Errorf("h2 %v: %d %q, body %q, read error %v; want a failed read", h2, r.status, r.header.Get("Content-Type"), r.body, r.readErr)
		}
	}
}

// TestStreamRuntimeEnum: a server stream of a method known only from a
// runtime schema takes its enum path and query parameters by name, as the
// unary REST handlers do (grpc-gateway's own parsers know compiled-in enums
// only).
func TestStreamRuntimeEnum(t *testing.T) {
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("examples/colorrt/v1/color.proto"),
		Package:    proto.String("examples.colorrt.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/api/annotations.proto"},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Color"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("COLOR_UNSPECIFIED"), Number: proto.Int32(0)},
				{Name: proto.String("COLOR_RED"), Number: proto.Int32(1)},
				{Name: proto.String("COLOR_BLUE"), Number: proto.Int32(2)},
			},
		}},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Paint"),
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("color"), JsonName: proto.String("color"), Number: proto.Int32(1), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
					Type: descriptorpb.FieldDescriptorProto_TYPE_ENUM.Enum(), TypeName: proto.String(".examples.colorrt.v1.Color")},
				{Name: proto.String("also"), JsonName: proto.String("also"), Number: proto.Int32(2), Label: descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum(),
					Type: descriptorpb.FieldDescriptorProto_TYPE_ENUM.Enum(), TypeName: proto.String(".examples.colorrt.v1.Color")},
			},
		}},
	}
	opts := &descriptorpb.MethodOptions{}
	proto.SetExtension(opts, annotations.E_Http, &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: "/v1/paint/{color}:watch"}})
	fdp.Service = []*descriptorpb.ServiceDescriptorProto{{
		Name: proto.String("PaintService"),
		Method: []*descriptorpb.MethodDescriptorProto{{
			Name: proto.String("Watch"), InputType: proto.String(".examples.colorrt.v1.Paint"), OutputType: proto.String(".examples.colorrt.v1.Paint"),
			ServerStreaming: proto.Bool(true), Options: opts,
		}},
	}}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	paint := fd.Messages().ByName("Paint")

	// The backend echoes the request twice.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "examples.colorrt.v1.PaintService",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{StreamName: "Watch", ServerStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
			req := dynamicpb.NewMessage(paint)
			if err := ss.RecvMsg(req); err != nil {
				return err
			}
			for range 2 {
				if err := ss.SendMsg(req); err != nil {
					return err
				}
			}
			return nil
		}}},
	}, struct{}{})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)

	set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{fdp}}
	data, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	dset := filepath.Join(t.TempDir(), "color.binpb")
	if err := os.WriteFile(dset, data, 0o644); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends: [{ name: paint, endpoints: [%q], schema: { descriptor_set: %q } }]
routes: [{ name: paint, match: { service: "examples.colorrt.v1.PaintService" }, backend: paint }]
`, lis.Addr().String(), dset))
	c := httpClient(t, false)
	r := sendBody(t, c, "GET", "http://"+g.Addr("edge").String()+"/v1/paint/COLOR_RED:watch?also=COLOR_BLUE&also=1", "", nil)
	want := `{"color":"COLOR_RED","also":["COLOR_BLUE","COLOR_RED"]}`
	lines := strings.Split(strings.TrimSuffix(string(r.body), "\n"), "\n")
	if r.status != 200 || len(lines) != 2 || compactJSON([]byte(lines[0])) != want || compactJSON([]byte(lines[1])) != want {
		t.Fatalf("NDJSON stream: %d %q, want twice %s", r.status, r.body, want)
	}
	r = sendBody(t, c, "GET", "http://"+g.Addr("edge").String()+"/v1/paint/COLOR_GREEN:watch", "", nil)
	if r.status != 400 {
		t.Fatalf("unknown enum name: %d %q", r.status, r.body)
	}
}

// uploadLimit is the max_message_bytes of TestBodiesStreamUpload's
// listener: an upload larger than it must still go through, in chunks.
const uploadLimit = 1 << 20

// failingUpload refuses a streamed upload once it has received more than
// one uploadLimit of data.
type failingUpload struct{ *files.Server }

func (f failingUpload) UploadStream(s grpc.ClientStreamingServer[httpbody.HttpBody, filesv1.UploadStreamResponse]) error {
	n := 0
	for {
		c, err := s.Recv()
		if err != nil {
			return err
		}
		if n += len(c.GetData()); n > uploadLimit {
			st, _ := status.New(codes.PermissionDenied, "quota exceeded").WithDetails(&errdetails.QuotaFailure{
				Violations: []*errdetails.QuotaFailure_Violation{{Subject: "uploads", Description: "over 1 MiB"}},
			})
			return st.Err()
		}
	}
}

// TestBodiesStreamUpload: a plain HTTP upload (chunked or not, HTTP/1.1
// and HTTP/2) to a client stream of google.api.HttpBody, larger than the
// listener's max_message_bytes, reaches the backend intact as several
// messages of at most that size, with the request's Content-Type; the
// answer is the call's response. An error the backend returns mid-upload is
// answered with its HTTP status and google.rpc.Status body. The generated
// handlers and runtime transcoding (descriptor set) behave alike.
func TestBodiesStreamUpload(t *testing.T) {
	dset := writeDescriptorSet(t, "examples/files/v1/files.proto")
	for _, v := range []struct {
		name, schema string
		opts         []edge.Option
	}{
		{name: "generated", opts: []edge.Option{edge.WithREST(demo.REST()...)}},
		{name: "descriptor_set", schema: fmt.Sprintf("schema: { descriptor_set: %q }", dset)},
	} {
		t.Run(v.name, func(t *testing.T) {
			gatewayFor := func(backend string) string {
				g := startGateway(t, fmt.Sprintf(`
listeners: [{ name: edge, address: "127.0.0.1:0", limits: { max_message_bytes: %d } }]
backends:
  - name: files
    endpoints: [%q]
    %s
routes:
  - { name: files, match: { service: "examples.files.v1.FileService" }, backend: files }
`, uploadLimit, backend, v.schema), v.opts...)
				return "http://" + g.Addr("edge").String()
			}
			base := gatewayFor(startFilesBackend(t, nil))
			failing := gatewayFor(startFilesBackend(t, failingUpload{files.New()}))
			file := randomBytes(t, 3<<20+12345)
			wantChunks := (len(file) + uploadLimit - 1) / uploadLimit // at least: each chunk is under the limit
			for _, h2 := range []bool{false, true} {
				for _, chunked := range []bool{false, true} {
					name := fmt.Sprintf("h2=%v chunked=%v", h2, chunked)
					var body io.Reader = bytes.NewReader(file)
					if chunked {
						body = unsized{body}
					}
					r := sendBody(t, httpClient(t, h2), "POST", base+"/v1/blobs:stream", "application/x-upload", body)
					var resp struct {
						File struct {
							Name, ContentType, Size, Sha256 string
						}
						Chunks int
					}
					if r.status != 200 {
						t.Fatalf("%s: %d %.300s", name, r.status, r.body)
					}
					if err := json.Unmarshal(r.body, &resp); err != nil {
						t.Fatalf("%s: %v: %s", name, err, r.body)
					}
					if resp.File.Sha256 != sha(file) || resp.File.Size != fmt.Sprint(len(file)) || resp.File.ContentType != "application/x-upload" || resp.Chunks < wantChunks {
						t.Errorf("%s: stored %+v, want %d bytes of sha256 %s, application/x-upload, in %d messages or more", name, resp, len(file), sha(file), wantChunks)
					}
					d := sendBody(t, httpClient(t, h2), "GET", base+"/v1/blobs/"+resp.File.Name+":chunks?chunk_size=100000", "", nil)
					if d.status != 200 || !bytes.Equal(d.body, file) {
						t.Errorf("%s: download of the upload: %d, %d bytes, equal %v", name, d.status, len(d.body), bytes.Equal(d.body, file))
					}

					// The backend refuses the upload after its first MiB.
					body = bytes.NewReader(file)
					if chunked {
						body = unsized{body}
					}
					r = sendBody(t, httpClient(t, h2), "POST", failing+"/v1/blobs:stream", "application/x-upload", body)
					var st spb.Status
					if err := protojson.Unmarshal(r.body, &st); err != nil {
						t.Fatalf("%s: refused upload: %d, body %.300q: %v", name, r.status, r.body, err)
					}
					if r.status != 403 || codes.Code(st.GetCode()) != codes.PermissionDenied || st.GetMessage() != "quota exceeded" || len(st.GetDetails()) != 1 {
						t.Errorf("%s: refused upload: %d %s, want 403 with the backend's google.rpc.Status", name, r.status, r.body)
					}
				}
			}
		})
	}
}
