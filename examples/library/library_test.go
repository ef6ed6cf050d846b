package library_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	validatepb "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse-dev/gatehouse/examples/library"
	libraryv1 "github.com/gatehouse-dev/gatehouse/gen/examples/library/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start serves lib on 127.0.0.1:0 and returns a client for it. Cleanup stops
// both.
func start(t *testing.T, lib *library.Server) (libraryv1.LibraryServiceClient, *grpc.ClientConn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := library.NewGRPCServer(lib)
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.Stop()
		<-done
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return libraryv1.NewLibraryServiceClient(conn), conn
}

func ctxTimeout(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func book(title string) *libraryv1.Book {
	return &libraryv1.Book{Title: title, Author: "Anon", Year: 2000}
}

// seeded returns a client of a fresh library holding the Seed books b1, b2.
func seeded(t *testing.T) libraryv1.LibraryServiceClient {
	t.Helper()
	lib := library.New()
	lib.Seed()
	c, _ := start(t, lib)
	return c
}

// want is the expected outcome of a call.
type want struct {
	code    codes.Code
	field   string // protovalidate violation expected on this field path
	missing string // ResourceInfo.resource_name expected
}

// check fails t unless err has w's code and, where set, the protovalidate
// violation on w.field and the ResourceInfo naming w.missing.
func (w want) check(t *testing.T, err error) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != w.code {
		t.Fatalf("code = %v (%v), want %v", st.Code(), err, w.code)
	}
	if w.field != "" && !hasViolation(st, w.field) {
		t.Errorf("no violation on %q in %v", w.field, st.Details())
	}
	if w.missing != "" {
		var ri *errdetails.ResourceInfo
		for _, d := range st.Details() {
			if d, ok := d.(*errdetails.ResourceInfo); ok {
				ri = d
			}
		}
		if ri.GetResourceName() != w.missing || ri.GetResourceType() != library.ResourceType {
			t.Errorf("ResourceInfo = %v, want %s %q", ri, library.ResourceType, w.missing)
		}
	}
}

func hasViolation(st *status.Status, field string) bool {
	for _, d := range st.Details() {
		if v, ok := d.(*validatepb.Violations); ok {
			for _, viol := range v.GetViolations() {
				if protovalidate.FieldPathString(viol.GetField()) == field {
					return true
				}
			}
		}
	}
	return false
}

func TestResourceType(t *testing.T) {
	if got := string((&libraryv1.Book{}).ProtoReflect().Descriptor().FullName()); got != library.ResourceType {
		t.Errorf("ResourceType = %q, Book is %q", library.ResourceType, got)
	}
}

func TestCreateBook(t *testing.T) {
	tests := []struct {
		name   string
		book   *libraryv1.Book
		wantID string
		want   want
	}{
		{name: "ok", book: book("Dune"), wantID: "b3"},
		{name: "id set", book: &libraryv1.Book{Id: "b9", Title: "Dune", Author: "Herbert", Year: 1965}, want: want{code: codes.InvalidArgument}},
		{name: "no book", want: want{code: codes.InvalidArgument, field: "book"}},
		{name: "no title", book: &libraryv1.Book{Author: "Herbert", Year: 1965}, want: want{code: codes.InvalidArgument, field: "book.title"}},
		{name: "year too early", book: &libraryv1.Book{Title: "Dune", Author: "Herbert", Year: 1000}, want: want{code: codes.InvalidArgument, field: "book.year"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seeded(t)
			resp, err := c.CreateBook(ctxTimeout(t), &libraryv1.CreateBookRequest{Book: tt.book})
			tt.want.check(t, err)
			if err != nil {
				return
			}
			wantBook := proto.CloneOf(tt.book)
			wantBook.Id = tt.wantID
			if !proto.Equal(resp.GetBook(), wantBook) {
				t.Errorf("created %v, want %v", resp.GetBook(), wantBook)
			}
			got, err := c.GetBook(ctxTimeout(t), &libraryv1.GetBookRequest{Id: tt.wantID})
			if err != nil || !proto.Equal(got.GetBook(), wantBook) {
				t.Errorf("GetBook after create = %v, %v; want %v", got.GetBook(), err, wantBook)
			}
		})
	}
}

func TestGetBook(t *testing.T) {
	c := seeded(t)
	tests := []struct {
		id        string
		wantTitle string
		want      want
	}{
		{id: "b1", wantTitle: "The Go Programming Language"},
		{id: "b2", wantTitle: "The C Programming Language"},
		{id: "b3", want: want{code: codes.NotFound, missing: "b3"}},
		{id: "", want: want{code: codes.InvalidArgument, field: "id"}},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			resp, err := c.GetBook(ctxTimeout(t), &libraryv1.GetBookRequest{Id: tt.id})
			tt.want.check(t, err)
			if err == nil && (resp.GetBook().GetId() != tt.id || resp.GetBook().GetTitle() != tt.wantTitle) {
				t.Errorf("got %v, want %s %q", resp.GetBook(), tt.id, tt.wantTitle)
			}
		})
	}
}

func TestUpdateBook(t *testing.T) {
	tests := []struct {
		name string
		book *libraryv1.Book
		want want
	}{
		{name: "ok", book: &libraryv1.Book{Id: "b2", Title: "K&R", Author: "Kernighan, Ritchie", Year: 1988}},
		{name: "missing", book: &libraryv1.Book{Id: "b7", Title: "K&R", Author: "K", Year: 1988}, want: want{code: codes.NotFound, missing: "b7"}},
		{name: "no id", book: book("K&R"), want: want{code: codes.InvalidArgument}},
		{name: "no book", want: want{code: codes.InvalidArgument, field: "book"}},
		{name: "invalid year", book: &libraryv1.Book{Id: "b2", Title: "K&R", Author: "K", Year: 2200}, want: want{code: codes.InvalidArgument, field: "book.year"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seeded(t)
			resp, err := c.UpdateBook(ctxTimeout(t), &libraryv1.UpdateBookRequest{Book: tt.book})
			tt.want.check(t, err)
			if err != nil {
				return
			}
			if !proto.Equal(resp.GetBook(), tt.book) {
				t.Errorf("updated %v, want %v", resp.GetBook(), tt.book)
			}
			got, err := c.GetBook(ctxTimeout(t), &libraryv1.GetBookRequest{Id: tt.book.GetId()})
			if err != nil || !proto.Equal(got.GetBook(), tt.book) {
				t.Errorf("GetBook after update = %v, %v; want %v", got.GetBook(), err, tt.book)
			}
		})
	}
}

func TestDeleteBook(t *testing.T) {
	tests := []struct {
		id   string
		want want
	}{
		{id: "b1"},
		{id: "b3", want: want{code: codes.NotFound, missing: "b3"}},
		{id: "", want: want{code: codes.InvalidArgument, field: "id"}},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			c := seeded(t)
			ctx := ctxTimeout(t)
			_, err := c.DeleteBook(ctx, &libraryv1.DeleteBookRequest{Id: tt.id})
			tt.want.check(t, err)
			if err != nil {
				return
			}
			_, err = c.GetBook(ctx, &libraryv1.GetBookRequest{Id: tt.id})
			want{code: codes.NotFound, missing: tt.id}.check(t, err)
			_, err = c.DeleteBook(ctx, &libraryv1.DeleteBookRequest{Id: tt.id})
			want{code: codes.NotFound, missing: tt.id}.check(t, err)
			// Ids are not reused.
			created, err := c.CreateBook(ctx, &libraryv1.CreateBookRequest{Book: book("New")})
			if err != nil || created.GetBook().GetId() != "b3" {
				t.Errorf("create after delete = %v, %v; want id b3", created.GetBook(), err)
			}
		})
	}
}

func TestListBooks(t *testing.T) {
	ids := func(n, from int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("b%d", from+i))
		}
		return out
	}
	tests := []struct {
		name     string
		books    int      // created before listing
		deleted  []string // deleted before listing
		pageSize int32
		want     []string
		wantErr  want
	}{
		{name: "empty", pageSize: 0, want: nil},
		{name: "default page", books: 60, want: ids(50, 1)},
		{name: "fewer than default", books: 3, want: ids(3, 1)},
		{name: "page of two", books: 5, pageSize: 2, want: ids(2, 1)},
		{name: "page larger than catalogue", books: 5, pageSize: 1000, want: ids(5, 1)},
		{name: "oldest first after delete", books: 4, deleted: []string{"b1", "b3"}, pageSize: 10, want: []string{"b2", "b4"}},
		{name: "negative", pageSize: -1, wantErr: want{code: codes.InvalidArgument, field: "page_size"}},
		{name: "too big", pageSize: 1001, wantErr: want{code: codes.InvalidArgument, field: "page_size"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := start(t, library.New())
			ctx := ctxTimeout(t)
			for i := range tt.books {
				if _, err := c.CreateBook(ctx, &libraryv1.CreateBookRequest{Book: book(fmt.Sprint("Book ", i))}); err != nil {
					t.Fatal(err)
				}
			}
			for _, id := range tt.deleted {
				if _, err := c.DeleteBook(ctx, &libraryv1.DeleteBookRequest{Id: id}); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := c.ListBooks(ctx, &libraryv1.ListBooksRequest{PageSize: tt.pageSize})
			tt.wantErr.check(t, err)
			var got []string
			for _, b := range resp.GetBooks() {
				got = append(got, b.GetId())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ids = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSeed(t *testing.T) {
	lib := library.New()
	seeded := lib.Seed()
	c, _ := start(t, lib)
	resp, err := c.ListBooks(ctxTimeout(t), &libraryv1.ListBooksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(seeded) != 2 || seeded[0].GetId() != "b1" || seeded[1].GetId() != "b2" {
		t.Fatalf("Seed = %v, want b1, b2", seeded)
	}
	if len(resp.GetBooks()) != 2 || !proto.Equal(resp.GetBooks()[0], seeded[0]) || !proto.Equal(resp.GetBooks()[1], seeded[1]) {
		t.Errorf("ListBooks = %v, want %v", resp.GetBooks(), seeded)
	}
	// Seed's books pass the same validation as requests.
	for _, b := range seeded {
		if err := protovalidate.Validate(b); err != nil {
			t.Errorf("Seed book %v: %v", b, err)
		}
	}
}

// TestConcurrent drives every method from many goroutines; run with -race.
func TestConcurrent(t *testing.T) {
	c, _ := start(t, library.New())
	ctx := ctxTimeout(t)
	const workers, each = 8, 25
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = make(map[string]bool)
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				resp, err := c.CreateBook(ctx, &libraryv1.CreateBookRequest{Book: book(fmt.Sprintf("w%d-%d", w, i))})
				if err != nil {
					t.Error(err)
					return
				}
				id := resp.GetBook().GetId()
				mu.Lock()
				dup := seen[id]
				seen[id] = true
				mu.Unlock()
				if dup {
					t.Errorf("id %s assigned twice", id)
				}
				b := resp.GetBook()
				b.Year++
				if _, err := c.UpdateBook(ctx, &libraryv1.UpdateBookRequest{Book: b}); err != nil {
					t.Error(err)
				}
				if _, err := c.ListBooks(ctx, &libraryv1.ListBooksRequest{PageSize: 10}); err != nil {
					t.Error(err)
				}
				if i%2 == 0 {
					if _, err := c.DeleteBook(ctx, &libraryv1.DeleteBookRequest{Id: id}); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if len(seen) != workers*each {
		t.Errorf("%d distinct ids, want %d", len(seen), workers*each)
	}
	resp, err := c.ListBooks(ctx, &libraryv1.ListBooksRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(resp.GetBooks()), workers*(each/2); got != want {
		t.Errorf("%d books left, want %d", got, want)
	}
	for _, b := range resp.GetBooks() {
		if b.GetYear() != 2001 {
			t.Errorf("book %s year %d, want 2001", b.GetId(), b.GetYear())
		}
	}
}

func TestHealthAndReflection(t *testing.T) {
	_, conn := start(t, library.New())
	ctx := ctxTimeout(t)
	for _, svc := range []string{"", libraryv1.LibraryService_ServiceDesc.ServiceName} {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, %v; want SERVING", svc, resp.GetStatus(), err)
		}
	}

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
			FileContainingSymbol: libraryv1.LibraryService_ServiceDesc.ServiceName,
		},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("reflection found no file for %s: %v", libraryv1.LibraryService_ServiceDesc.ServiceName, resp)
	}
}
