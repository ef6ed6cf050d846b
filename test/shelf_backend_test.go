package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	shelfv1 "github.com/gatehouse-dev/gatehouse/gen/examples/shelf/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// shelfServer is a deterministic ShelfService: its answers depend on the
// request only, so that the same REST call through two gateways gives the
// same answer.
type shelfServer struct {
	shelfv1.UnimplementedShelfServiceServer
}

func book(name string) *shelfv1.Book {
	return &shelfv1.Book{
		Name:      name,
		Title:     "Title of " + name,
		Author:    "Ada",
		Genre:     shelfv1.Genre_GENRE_SCIENCE_FICTION,
		Published: timestamppb.New(mustTime("2001-02-03T04:05:06Z")),
		Rating:    wrapperspb.Double(4.5),
		Tags:      []string{"a", "b"},
		Labels:    map[string]string{"k": "v"},
		PageCount: 321,
	}
}

func (shelfServer) GetBook(ctx context.Context, r *shelfv1.GetBookRequest) (*shelfv1.GetBookResponse, error) {
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-shelf", "get"))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-shelf-trailer", "done"))
	if strings.HasSuffix(r.GetName(), "/404") {
		st, _ := status.New(codes.NotFound, "no book "+r.GetName()).WithDetails(&errdetails.ResourceInfo{ResourceType: "book", ResourceName: r.GetName()})
		return nil, st.Err()
	}
	return &shelfv1.GetBookResponse{Book: book(r.GetName())}, nil
}

func (shelfServer) ListBooks(_ context.Context, r *shelfv1.ListBooksRequest) (*shelfv1.ListBooksResponse, error) {
	keys := make([]string, 0, len(r.GetLabels()))
	for k, v := range r.GetLabels() {
		keys = append(keys, k+"="+v)
	}
	slices.Sort(keys)
	echo := fmt.Sprintf("parent=%s page_size=%d genres=%v published_after=%v min_rating=%v order=%s/%v tags=%v labels=%v staleness=%v genre=%v",
		r.GetParent(), r.GetPageSize(), r.GetGenres(), r.GetPublishedAfter().AsTime().UTC().Format("2006-01-02T15:04:05Z"),
		r.GetMinRating().GetValue(), r.GetOrder().GetBy(), r.GetOrder().GetDesc(), r.GetTags(), keys, r.GetMaxStaleness().AsDuration(), r.GetGenre())
	return &shelfv1.ListBooksResponse{Books: []*shelfv1.Book{book(r.GetParent() + "/books/1")}, Echo: echo}, nil
}

func (shelfServer) ListTitles(_ context.Context, r *shelfv1.ListTitlesRequest) (*shelfv1.ListTitlesResponse, error) {
	return &shelfv1.ListTitlesResponse{Titles: []string{"One <1>", "Two & 2"}}, nil
}

func (shelfServer) CreateBook(_ context.Context, r *shelfv1.CreateBookRequest) (*shelfv1.CreateBookResponse, error) {
	b := proto.Clone(r.GetBook()).(*shelfv1.Book)
	b.Name = r.GetParent() + "/books/new"
	return &shelfv1.CreateBookResponse{Book: b}, nil
}

func (shelfServer) UpdateBook(_ context.Context, r *shelfv1.UpdateBookRequest) (*shelfv1.UpdateBookResponse, error) {
	return &shelfv1.UpdateBookResponse{Book: r.GetBook(), UpdateMask: r.GetUpdateMask()}, nil
}

func (shelfServer) DeleteBook(context.Context, *shelfv1.DeleteBookRequest) (*shelfv1.DeleteBookResponse, error) {
	return &shelfv1.DeleteBookResponse{}, nil
}

func (shelfServer) ArchiveBook(_ context.Context, r *shelfv1.ArchiveBookRequest) (*shelfv1.ArchiveBookResponse, error) {
	return &shelfv1.ArchiveBookResponse{ArchivedName: "archive/" + r.GetName(), Reason: r.GetReason()}, nil
}

func (shelfServer) GetFile(_ context.Context, r *shelfv1.GetFileRequest) (*shelfv1.GetFileResponse, error) {
	return &shelfv1.GetFileResponse{Path: r.GetPath(), Content: []byte("content of " + r.GetPath())}, nil
}

func (shelfServer) PurgeCache(context.Context, *shelfv1.PurgeCacheRequest) (*shelfv1.PurgeCacheResponse, error) {
	return &shelfv1.PurgeCacheResponse{Purged: 3}, nil
}

func (shelfServer) SetTier(_ context.Context, r *shelfv1.SetTierRequest) (*shelfv1.SetTierResponse, error) {
	return &shelfv1.SetTierResponse{Shelf: r.GetShelf(), Tier: r.GetTier()}, nil
}

func (shelfServer) WatchBooks(r *shelfv1.WatchBooksRequest, s grpc.ServerStreamingServer[shelfv1.WatchBooksResponse]) error {
	for i := range 3 {
		if err := s.Send(&shelfv1.WatchBooksResponse{Book: book(fmt.Sprintf("%s/books/%d", r.GetParent(), i))}); err != nil {
			return err
		}
	}
	return nil
}

// ImportBooks counts the books of the stream and lists their titles; a
// book titled "fail" ends the call with INVALID_ARGUMENT.
func (shelfServer) ImportBooks(s grpc.ClientStreamingServer[shelfv1.ImportBooksRequest, shelfv1.ImportBooksResponse]) error {
	_ = s.SetHeader(metadata.Pairs("x-shelf", "import"))
	resp := &shelfv1.ImportBooksResponse{}
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return s.SendAndClose(resp)
		}
		if err != nil {
			return err
		}
		if r.GetBook().GetTitle() == "fail" {
			return status.Errorf(codes.InvalidArgument, "book %d of %s: refused", resp.Count, r.GetParent())
		}
		resp.Count++
		resp.Titles = append(resp.Titles, r.GetBook().GetTitle())
	}
}

// EchoBooks answers each request with its title and position; a title
// "fail" ends the call with FAILED_PRECONDITION.
func (shelfServer) EchoBooks(s grpc.BidiStreamingServer[shelfv1.EchoBooksRequest, shelfv1.EchoBooksResponse]) error {
	for i := int32(0); ; i++ {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if r.GetTitle() == "fail" {
			return status.Errorf(codes.FailedPrecondition, "echo %d refused", i)
		}
		if err := s.Send(&shelfv1.EchoBooksResponse{Title: r.GetTitle(), Index: i}); err != nil {
			return err
		}
	}
}

func (shelfServer) CountBooks(context.Context, *shelfv1.CountBooksRequest) (*shelfv1.CountBooksResponse, error) {
	return &shelfv1.CountBooksResponse{Count: 42}, nil
}

// The renamed copy of the shelf API: the same proto in package
// examples.shelfrt.v1, compiled into nothing, so that a gateway that serves
// it knows it only from the backend's reflection.
const (
	renamedPkg  = "examples.shelfrt.v1"
	renamedFile = "examples/shelfrt/v1/shelf.proto"
)

// renamedShelfFile returns the shelf proto moved to package renamedPkg.
func renamedShelfFile() *descriptorpb.FileDescriptorProto {
	fdp := protodesc.ToFileDescriptorProto(shelfv1.File_examples_shelf_v1_shelf_proto)
	fdp.Name = proto.String(renamedFile)
	fdp.Package = proto.String(renamedPkg)
	fdp.Options = nil
	fix := func(s *string) *string {
		if s != nil && strings.HasPrefix(*s, ".examples.shelf.v1.") {
			return proto.String("." + renamedPkg + "." + strings.TrimPrefix(*s, ".examples.shelf.v1."))
		}
		return s
	}
	var fixMsg func(m *descriptorpb.DescriptorProto)
	fixMsg = func(m *descriptorpb.DescriptorProto) {
		for _, f := range m.GetField() {
			f.TypeName = fix(f.TypeName)
		}
		for _, n := range m.GetNestedType() {
			fixMsg(n)
		}
	}
	for _, m := range fdp.GetMessageType() {
		fixMsg(m)
	}
	for _, s := range fdp.GetService() {
		for _, m := range s.GetMethod() {
			m.InputType, m.OutputType = fix(m.InputType), fix(m.OutputType)
		}
	}
	return fdp
}

// startShelfBackend serves ShelfService (or, when renamed, only its copy in
// examples.shelfrt.v1) with server reflection, on addr ("127.0.0.1:0" for
// a free port). It returns the address and a stop function, also called
// when the test ends.
func startShelfBackend(t testing.TB, addr string, renamed bool, register ...func(*grpc.Server)) (string, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	if !renamed {
		shelfv1.RegisterShelfServiceServer(s, shelfServer{})
	}
	for _, r := range register {
		r(s)
	}
	if renamed {
		desc := shelfv1.ShelfService_ServiceDesc
		desc.ServiceName = renamedPkg + ".ShelfService"
		s.RegisterService(&desc, shelfServer{})
		fd, err := protodesc.NewFile(renamedShelfFile(), protoregistry.GlobalFiles)
		if err != nil {
			t.Fatal(err)
		}
		local := new(protoregistry.Files)
		if err := local.RegisterFile(fd); err != nil {
			t.Fatal(err)
		}
		opts := reflection.ServerOptions{Services: s, DescriptorResolver: twoFiles{local, protoregistry.GlobalFiles}}
		reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	} else {
		reflection.Register(s)
	}
	go func() { _ = s.Serve(lis) }()
	stop := func() { s.Stop() }
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// twoFiles resolves from a, then b.
type twoFiles struct{ a, b *protoregistry.Files }

func (f twoFiles) FindFileByPath(p string) (protoreflect.FileDescriptor, error) {
	if fd, err := f.a.FindFileByPath(p); err == nil {
		return fd, nil
	}
	return f.b.FindFileByPath(p)
}

func (f twoFiles) FindDescriptorByName(n protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := f.a.FindDescriptorByName(n); err == nil {
		return d, nil
	}
	return f.b.FindDescriptorByName(n)
}

// writeDescriptorSet writes the descriptor set of compiled-in files and
// their imports, as `buf build -o` would, and returns its path.
func writeDescriptorSet(t *testing.T, paths ...string) string {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		for i := range fd.Imports().Len() {
			add(fd.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	for _, p := range paths {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(p)
		if err != nil {
			t.Fatal(err)
		}
		add(fd)
	}
	data, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "api.binpb")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustTime(s string) time.Time {
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return tm
}
