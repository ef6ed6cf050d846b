package library_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-dev/gatehouse/examples/library"
	libraryv1 "github.com/gatehouse-dev/gatehouse/gen/examples/library/v1"
)

func ExampleNewGRPCServer() {
	lib := library.New()
	lib.Seed()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	s := library.NewGRPCServer(lib)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	defer func() { s.Stop(); <-done }()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	client := libraryv1.NewLibraryServiceClient(conn)
	ctx := context.Background()

	created, err := client.CreateBook(ctx, &libraryv1.CreateBookRequest{
		Book: &libraryv1.Book{Title: "Dune", Author: "Frank Herbert", Year: 1965},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("created", created.GetBook().GetId())

	list, err := client.ListBooks(ctx, &libraryv1.ListBooksRequest{})
	if err != nil {
		log.Fatal(err)
	}
	for _, b := range list.GetBooks() {
		fmt.Printf("%s: %s (%d)\n", b.GetId(), b.GetTitle(), b.GetYear())
	}

	_, err = client.GetBook(ctx, &libraryv1.GetBookRequest{Id: "b42"})
	st := status.Convert(err)
	fmt.Println(st.Code(), st.Message())
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.ResourceInfo); ok {
			fmt.Println(ri.GetResourceType(), ri.GetResourceName())
		}
	}
	// Output:
	// created b3
	// b1: The Go Programming Language (2015)
	// b2: The C Programming Language (1978)
	// b3: Dune (1965)
	// NotFound book "b42" not found
	// examples.library.v1.Book b42
}
