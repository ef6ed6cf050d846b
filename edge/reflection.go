package edge

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// registerReflection serves grpc.reflection v1 and v1alpha on s. On a client
// listener (proxy true) it lists, beside the gateway's own services, every
// compiled-in service that some route takes, so that grpcurl and similar
// tools can describe them through the gateway.
func (g *Gateway) registerReflection(s *grpc.Server, proxy bool) {
	var services reflection.ServiceInfoProvider = s
	if proxy {
		services = routedServices{g: g, s: s}
	}
	opts := reflection.ServerOptions{
		Services:           services,
		DescriptorResolver: protoregistry.GlobalFiles,
		ExtensionResolver:  protoregistry.GlobalTypes,
	}
	reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(s, reflection.NewServer(opts))
}

// routedServices lists a server's own services plus the compiled-in
// services that the route table in force sends somewhere.
type routedServices struct {
	g *Gateway
	s *grpc.Server
}

func (r routedServices) GetServiceInfo() map[string]grpc.ServiceInfo {
	infos := r.s.GetServiceInfo()
	table := r.g.router.Table()
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		svcs := fd.Services()
		for i := range svcs.Len() {
			sd := svcs.Get(i)
			name := string(sd.FullName())
			if _, own := infos[name]; own || sd.Methods().Len() == 0 {
				continue
			}
			if _, ok := table.Match("/"+name+"/"+string(sd.Methods().Get(0).Name()), nil); ok {
				infos[name] = grpc.ServiceInfo{Metadata: fd.Path()}
			}
		}
		return true
	})
	return infos
}
