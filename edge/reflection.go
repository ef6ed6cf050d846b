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
// service that some route takes and whose schema the gateway knows
// (compiled in, or a backend's runtime schema), so that grpcurl and similar
// tools can describe them through the gateway.
func (g *Gateway) registerReflection(s *grpc.Server, proxy bool) {
	var services reflection.ServiceInfoProvider = s
	if proxy {
		services = routedServices{g: g, s: s}
	}
	var files reflection.ServerOptions
	files.DescriptorResolver = protoregistry.GlobalFiles
	if proxy {
		files.DescriptorResolver = schemaFiles{g: g}
	}
	opts := reflection.ServerOptions{
		Services:           services,
		DescriptorResolver: files.DescriptorResolver,
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
	// Services whose schema the gateway learned at run time.
	for name, fd := range r.g.Schemas().Services() {
		if _, known := infos[name]; known {
			continue
		}
		sd := fd.Services().ByName(protoreflect.FullName(name).Name())
		if sd == nil || sd.Methods().Len() == 0 {
			continue
		}
		if _, ok := table.Match("/"+name+"/"+string(sd.Methods().Get(0).Name()), nil); ok {
			infos[name] = grpc.ServiceInfo{Metadata: fd.Path()}
		}
	}
	return infos
}

// schemaFiles resolves descriptors from the runtime schemas first, then
// from the protos compiled into the binary.
type schemaFiles struct{ g *Gateway }

func (s schemaFiles) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := s.g.Schemas().FindFileByPath(path); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (s schemaFiles) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := s.g.Schemas().FindDescriptorByName(name); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}
