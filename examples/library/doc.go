// Package library is the example library backend that `gatehouse demo` runs
// behind the gateway and that the end-to-end tests route to: an in-memory
// catalogue of books with CRUD methods and REST annotations.
//
// Server implements libraryv1.LibraryServiceServer and is safe for concurrent
// use. It assigns ids itself, sequentially ("b1", "b2", ...), so examples and
// docs can name books predictably; ids are never reused, even after a delete.
// A method naming a book that does not exist fails with codes.NotFound and a
// google.rpc.ResourceInfo detail naming the book.
//
// NewGRPCServer assembles a ready *grpc.Server: the service, the standard
// health service (SERVING) and server reflection, behind protovalidate
// interceptors so the backend rejects invalid requests even when it is
// reached without the gateway.
package library
