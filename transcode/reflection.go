package transcode

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// The two versions of server reflection. Their messages are the same on the
// wire, so one set of Go types speaks both.
const (
	reflectionV1      = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
	reflectionV1Alpha = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
)

// maxReflectionFiles bounds the files one fetch accepts, so that a
// misbehaving backend cannot make the gateway hold an unbounded schema.
const maxReflectionFiles = 10000

// FetchReflection asks a backend for its services and the files that define
// them, with grpc.reflection.v1, falling back to v1alpha when the backend
// does not serve v1.
func FetchReflection(ctx context.Context, cc grpc.ClientConnInterface) (files []*descriptorpb.FileDescriptorProto, services []string, err error) {
	files, services, err = fetchReflection(ctx, cc, reflectionV1)
	if status.Code(err) == codes.Unimplemented {
		files, services, err = fetchReflection(ctx, cc, reflectionV1Alpha)
	}
	return files, services, err
}

var reflectionDesc = &grpc.StreamDesc{StreamName: "ServerReflectionInfo", ServerStreams: true, ClientStreams: true}

func fetchReflection(ctx context.Context, cc grpc.ClientConnInterface, method string) ([]*descriptorpb.FileDescriptorProto, []string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := cc.NewStream(ctx, reflectionDesc, method)
	if err != nil {
		return nil, nil, err
	}
	ask := func(req *reflectionv1.ServerReflectionRequest) (*reflectionv1.ServerReflectionResponse, error) {
		if err := st.SendMsg(req); err != nil {
			if errors.Is(err, io.EOF) {
				// The server ended the stream; RecvMsg has its status.
				resp := new(reflectionv1.ServerReflectionResponse)
				return nil, st.RecvMsg(resp)
			}
			return nil, err
		}
		resp := new(reflectionv1.ServerReflectionResponse)
		if err := st.RecvMsg(resp); err != nil {
			return nil, err
		}
		if e := resp.GetErrorResponse(); e != nil {
			return nil, status.Error(codes.Code(e.GetErrorCode()), e.GetErrorMessage())
		}
		return resp, nil
	}

	resp, err := ask(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{ListServices: "*"}})
	if err != nil {
		return nil, nil, err
	}
	var services []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		if !ignoredService(s.GetName()) {
			services = append(services, s.GetName())
		}
	}

	byName := map[string]*descriptorpb.FileDescriptorProto{}
	var order []string
	take := func(resp *reflectionv1.ServerReflectionResponse) error {
		for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
			fd := new(descriptorpb.FileDescriptorProto)
			if err := proto.Unmarshal(b, fd); err != nil {
				return fmt.Errorf("reflection: bad file descriptor: %w", err)
			}
			if _, ok := byName[fd.GetName()]; !ok {
				byName[fd.GetName()] = fd
				order = append(order, fd.GetName())
			}
		}
		if len(byName) > maxReflectionFiles {
			return fmt.Errorf("reflection: more than %d files", maxReflectionFiles)
		}
		return nil
	}
	for _, s := range services {
		resp, err := ask(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: s}})
		if err != nil {
			return nil, nil, fmt.Errorf("reflection: service %s: %w", s, err)
		}
		if err := take(resp); err != nil {
			return nil, nil, err
		}
	}
	// A server sends each file once per stream, with the imports it has not
	// sent yet; ask for any import still missing (a server that sends only
	// the file asked for).
	for i := 0; i < len(order); i++ {
		for _, dep := range byName[order[i]].GetDependency() {
			if _, ok := byName[dep]; ok || shared(dep) {
				continue
			}
			resp, err := ask(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileByFilename{FileByFilename: dep}})
			if err != nil {
				return nil, nil, fmt.Errorf("reflection: file %s: %w", dep, err)
			}
			if err := take(resp); err != nil {
				return nil, nil, err
			}
		}
	}
	_ = st.CloseSend()
	files := make([]*descriptorpb.FileDescriptorProto, 0, len(order))
	for _, n := range order {
		files = append(files, byName[n])
	}
	return files, services, nil
}
