package validate_test

import (
	"sync/atomic"
	"testing"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pkg "github.com/gatehouse-dev/gatehouse/interceptors/validate"
	"github.com/gatehouse-dev/gatehouse/internal/benchcall"
)

// BenchmarkStreamRecv measures one RecvMsg of a raw frame: decoded and
// validated when the method is known, passed through when it is not.
func BenchmarkStreamRecv(b *testing.B) {
	typ := echoRequestType(b)
	m := typ.New()
	m.Set(typ.Descriptor().Fields().ByName("name"), protoreflect.ValueOfString("alice"))
	m.Set(typ.Descriptor().Fields().ByName("count"), protoreflect.ValueOfInt32(3))
	raw, _ := proto.Marshal(m.Interface())
	v, err := protovalidate.New()
	if err != nil {
		b.Fatal(err)
	}
	ic := pkg.StreamServerInterceptor(v, pkg.WithRequestTypes(func(method string) (protoreflect.MessageType, bool) {
		return typ, method == bidiM
	}))
	for _, method := range []string{bidiM, uncheckSM} {
		b.Run(method, func(b *testing.B) {
			var n atomic.Int32
			ss := &recvStream{frame: &decodeCounter{b: raw, n: &n}}
			_ = ic(nil, ss, &grpc.StreamServerInfo{FullMethod: method}, func(_ any, s grpc.ServerStream) error {
				benchcall.RunRecv(b, s, &decodeCounter{})
				return nil
			})
		})
	}
}
