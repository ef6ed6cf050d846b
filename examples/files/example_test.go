package files_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gatehouse-dev/gatehouse/examples/files"
	filesv1 "github.com/gatehouse-dev/gatehouse/gen/examples/files/v1"
)

func ExampleNewGRPCServer() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	s := files.NewGRPCServer(files.New())
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
	client := filesv1.NewFileServiceClient(conn)
	ctx := context.Background()

	up, err := client.Upload(ctx, &filesv1.UploadRequest{
		Name: "hello.txt",
		File: &httpbody.HttpBody{ContentType: "text/plain", Data: []byte("hello, world\n")},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(up.GetFile().GetName(), up.GetFile().GetContentType(), up.GetFile().GetSize())

	stream, err := client.DownloadChunks(ctx, &filesv1.DownloadChunksRequest{Name: "hello.txt", ChunkSize: 5})
	if err != nil {
		log.Fatal(err)
	}
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%q\n", chunk.GetData())
	}
	// Output:
	// hello.txt text/plain 13
	// "hello"
	// ", wor"
	// "ld\n"
}
