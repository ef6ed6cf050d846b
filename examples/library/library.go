package library

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	libraryv1 "github.com/gatehouse-dev/gatehouse/gen/examples/library/v1"
)

// DefaultPageSize is how many books ListBooks returns when the request's
// page_size is 0.
const DefaultPageSize = 50

// ResourceType is the google.rpc.ResourceInfo resource_type of a book: the
// full name of the Book message.
const ResourceType = "examples.library.v1.Book"

// Server is the example library: an in-memory catalogue of books, safe for
// concurrent use. Create it with New. It stores copies of the books it is
// given and returns copies of the books it holds.
type Server struct {
	libraryv1.UnimplementedLibraryServiceServer

	mu     sync.RWMutex
	lastID int                        // number of the last id assigned
	books  map[string]*libraryv1.Book // by id
	order  []string                   // ids, oldest first
}

var _ libraryv1.LibraryServiceServer = (*Server)(nil)

// New returns an empty library whose first book will get the id "b1".
func New() *Server {
	return &Server{books: make(map[string]*libraryv1.Book)}
}

// Seed adds two well-known books for demos and returns them as stored. On a
// new Server they get the ids "b1" and "b2".
func (s *Server) Seed() []*libraryv1.Book {
	return []*libraryv1.Book{
		s.add(&libraryv1.Book{Title: "The Go Programming Language", Author: "Alan A. A. Donovan, Brian W. Kernighan", Year: 2015}),
		s.add(&libraryv1.Book{Title: "The C Programming Language", Author: "Brian W. Kernighan, Dennis M. Ritchie", Year: 1978}),
	}
}

// CreateBook stores a copy of the request's book under a new id and returns
// it. A book with a non-empty id fails with codes.InvalidArgument.
func (s *Server) CreateBook(_ context.Context, req *libraryv1.CreateBookRequest) (*libraryv1.CreateBookResponse, error) {
	if req.GetBook() == nil {
		return nil, status.Error(codes.InvalidArgument, "book is required")
	}
	if req.GetBook().GetId() != "" {
		return nil, status.Error(codes.InvalidArgument, "book.id must be empty: the server assigns ids")
	}
	return &libraryv1.CreateBookResponse{Book: s.add(req.GetBook())}, nil
}

// GetBook returns the book with the request's id.
func (s *Server) GetBook(_ context.Context, req *libraryv1.GetBookRequest) (*libraryv1.GetBookResponse, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id is required")
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, ok := s.books[req.GetId()]
	if !ok {
		return nil, notFound(req.GetId())
	}
	return &libraryv1.GetBookResponse{Book: clone(b)}, nil
}

// ListBooks returns the oldest page_size books (DefaultPageSize when
// page_size is 0), oldest first.
func (s *Server) ListBooks(_ context.Context, req *libraryv1.ListBooksRequest) (*libraryv1.ListBooksResponse, error) {
	n := int(req.GetPageSize())
	switch {
	case n < 0:
		return nil, status.Error(codes.InvalidArgument, "page_size must not be negative")
	case n == 0:
		n = DefaultPageSize
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	n = min(n, len(s.order))
	books := make([]*libraryv1.Book, 0, n)
	for _, id := range s.order[:n] {
		books = append(books, clone(s.books[id]))
	}
	return &libraryv1.ListBooksResponse{Books: books}, nil
}

// UpdateBook replaces the title, author and year of the book named by the
// request's book.id and returns the book as stored.
func (s *Server) UpdateBook(_ context.Context, req *libraryv1.UpdateBookRequest) (*libraryv1.UpdateBookResponse, error) {
	id := req.GetBook().GetId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "book.id is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.books[id]; !ok {
		return nil, notFound(id)
	}
	b := clone(req.GetBook())
	s.books[id] = b
	return &libraryv1.UpdateBookResponse{Book: clone(b)}, nil
}

// DeleteBook removes the book with the request's id. Its id is not reused.
func (s *Server) DeleteBook(_ context.Context, req *libraryv1.DeleteBookRequest) (*libraryv1.DeleteBookResponse, error) {
	id := req.GetId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "id is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.books[id]; !ok {
		return nil, notFound(id)
	}
	delete(s.books, id)
	s.order = slices.DeleteFunc(s.order, func(o string) bool { return o == id })
	return &libraryv1.DeleteBookResponse{}, nil
}

// add stores a copy of b under the next id and returns a copy as stored.
func (s *Server) add(b *libraryv1.Book) *libraryv1.Book {
	b = clone(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastID++
	b.Id = "b" + strconv.Itoa(s.lastID)
	s.books[b.Id] = b
	s.order = append(s.order, b.Id)
	return clone(b)
}

func clone(b *libraryv1.Book) *libraryv1.Book {
	return proto.CloneOf(b)
}

// notFound is the error for a missing book: codes.NotFound with a
// ResourceInfo detail naming it.
func notFound(id string) error {
	msg := fmt.Sprintf("book %q not found", id)
	st, err := status.New(codes.NotFound, msg).WithDetails(&errdetails.ResourceInfo{
		ResourceType: ResourceType,
		ResourceName: id,
		Description:  msg,
	})
	if err != nil {
		return status.Error(codes.NotFound, msg)
	}
	return st.Err()
}
