// Package files is the example file store that the end-to-end tests route
// to for bodies that are not JSON: an in-memory map of files by name, with
// a raw upload (google.api.HttpBody in the request), a multipart/form-data
// upload (a message of bytes and string fields), a streamed upload (a
// client stream of google.api.HttpBody chunks, stored under the SHA-256 of
// its content), a download
// (google.api.HttpBody as the response) and a streamed download (a server
// stream of google.api.HttpBody chunks).
//
// Server implements filesv1.FileServiceServer and is safe for concurrent
// use. It stores copies of what it is sent; an upload to a name that exists
// replaces the file. A method naming a file that does not exist fails with
// codes.NotFound.
//
// NewGRPCServer assembles a ready *grpc.Server: the service, the standard
// health service (SERVING) and server reflection.
package files
