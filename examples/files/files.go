package files

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"sync"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	filesv1 "github.com/gatehouse-dev/gatehouse/gen/examples/files/v1"
)

// DefaultContentType is the content type of a file uploaded without one.
const DefaultContentType = "application/octet-stream"

// DefaultChunkSize is the chunk size of DownloadChunks when the request's
// chunk_size is 0; MaxChunkSize is the largest it accepts.
const (
	DefaultChunkSize = 64 << 10
	MaxChunkSize     = 1 << 20
)

// Server is the example file store, safe for concurrent use. Create it with
// New.
type Server struct {
	filesv1.UnimplementedFileServiceServer

	mu    sync.RWMutex
	files map[string]file
}

type file struct {
	contentType, description string
	data                     []byte
}

var _ filesv1.FileServiceServer = (*Server)(nil)

// New returns an empty file store.
func New() *Server { return &Server{files: map[string]file{}} }

// Upload stores the request's HttpBody as the file's content, with its
// content type (DefaultContentType when empty).
func (s *Server) Upload(_ context.Context, req *filesv1.UploadRequest) (*filesv1.UploadResponse, error) {
	info, err := s.put(req.GetName(), req.GetFile().GetContentType(), "", req.GetFile().GetData())
	if err != nil {
		return nil, err
	}
	return &filesv1.UploadResponse{File: info}, nil
}

// UploadStream stores a file sent as a stream of chunks, under the hex
// SHA-256 of its content, with the content type of the first chunk
// (DefaultContentType when empty). An empty stream is an empty file.
func (s *Server) UploadStream(stream grpc.ClientStreamingServer[httpbody.HttpBody, filesv1.UploadStreamResponse]) error {
	var data []byte
	contentType := ""
	chunks := 0
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if chunks == 0 {
			contentType = c.GetContentType()
		}
		chunks++
		data = append(data, c.GetData()...)
	}
	sum := sha256.Sum256(data)
	info, err := s.put(hex.EncodeToString(sum[:]), contentType, "", data)
	if err != nil {
		return err
	}
	return stream.SendAndClose(&filesv1.UploadStreamResponse{File: info, Chunks: int32(chunks)})
}

// UploadForm stores a file sent as a form: name, content_type, description
// and content.
func (s *Server) UploadForm(_ context.Context, req *filesv1.UploadFormRequest) (*filesv1.UploadFormResponse, error) {
	info, err := s.put(req.GetName(), req.GetContentType(), req.GetDescription(), req.GetContent())
	if err != nil {
		return nil, err
	}
	return &filesv1.UploadFormResponse{File: info}, nil
}

func (s *Server) put(name, contentType, description string, data []byte) (*filesv1.FileInfo, error) {
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	if contentType == "" {
		contentType = DefaultContentType
	}
	f := file{contentType: contentType, description: description, data: slices.Clone(data)}
	s.mu.Lock()
	s.files[name] = f
	s.mu.Unlock()
	return infoOf(name, f), nil
}

// Info describes the named file, or reports false.
func (s *Server) Info(name string) (*filesv1.FileInfo, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	f, ok := s.files[name]
	if !ok {
		return nil, false
	}
	return infoOf(name, f), true
}

func infoOf(name string, f file) *filesv1.FileInfo {
	sum := sha256.Sum256(f.data)
	return &filesv1.FileInfo{
		Name:        name,
		ContentType: f.contentType,
		Size:        int64(len(f.data)),
		Sha256:      hex.EncodeToString(sum[:]),
		Description: f.description,
	}
}

func (s *Server) get(name string) (file, error) {
	if name == "" {
		return file{}, status.Error(codes.InvalidArgument, "name is required")
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	f, ok := s.files[name]
	if !ok {
		return file{}, status.Errorf(codes.NotFound, "file %q not found", name)
	}
	return f, nil
}

// Download returns the file's content and content type.
func (s *Server) Download(_ context.Context, req *filesv1.DownloadRequest) (*httpbody.HttpBody, error) {
	f, err := s.get(req.GetName())
	if err != nil {
		return nil, err
	}
	return &httpbody.HttpBody{ContentType: f.contentType, Data: slices.Clone(f.data)}, nil
}

// DownloadChunks streams the file's content in chunks of chunk_size bytes
// (DefaultChunkSize when 0, at most MaxChunkSize), each carrying the
// content type. An empty file is one empty chunk.
func (s *Server) DownloadChunks(req *filesv1.DownloadChunksRequest, stream grpc.ServerStreamingServer[httpbody.HttpBody]) error {
	size := int(req.GetChunkSize())
	switch {
	case size < 0 || size > MaxChunkSize:
		return status.Errorf(codes.InvalidArgument, "chunk_size must be between 0 and %d", MaxChunkSize)
	case size == 0:
		size = DefaultChunkSize
	}
	f, err := s.get(req.GetName())
	if err != nil {
		return err
	}
	data := f.data
	for first := true; first || len(data) > 0; first = false {
		n := min(size, len(data))
		if err := stream.Send(&httpbody.HttpBody{ContentType: f.contentType, Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}
