package validate_test

import (
	"context"
	"fmt"
	"net"

	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gatehouse-dev/gatehouse/interceptors/validate"
)

// A request that breaks its rules is answered InvalidArgument, naming the
// fields in the message and in a google.rpc.BadRequest detail. EchoRequest
// has name (min_len 3) and count (0 to 10).
func Example() {
	typ, err := newEchoRequestType()
	if err != nil {
		panic(err)
	}
	v, err := protovalidate.New()
	if err != nil {
		panic(err)
	}
	// The gateway's own services get both; proxied methods are checked by
	// the stream variant when requestTypes knows them.
	requestTypes := func(string) (protoreflect.MessageType, bool) { return typ, true }
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(validate.UnaryServerInterceptor(v)),
		grpc.ChainStreamInterceptor(validate.StreamServerInterceptor(v, validate.WithRequestTypes(requestTypes))),
	)
	registerEcho(srv, typ)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer cc.Close()

	req := typ.New()
	req.Set(typ.Descriptor().Fields().ByName("name"), protoreflect.ValueOfString("al"))
	req.Set(typ.Descriptor().Fields().ByName("count"), protoreflect.ValueOfInt32(42))
	err = cc.Invoke(context.Background(), "/gatehouse.test.Echo/Unary", req.Interface(), typ.New().Interface())

	st := status.Convert(err)
	fmt.Println(st.Code())
	fmt.Println(st.Message())
	for _, d := range st.Details() {
		for _, fv := range d.(*errdetails.BadRequest).GetFieldViolations() {
			fmt.Printf("%s: %s\n", fv.GetField(), fv.GetDescription())
		}
	}
	// Output:
	// InvalidArgument
	// invalid request: name: must be at least 3 characters; count: must be greater than or equal to 0 and less than or equal to 10
	// name: must be at least 3 characters
	// count: must be greater than or equal to 0 and less than or equal to 10
}
