package routing

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" CodecV2 that Codec falls back to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Frame holds the payload of one gRPC message as raw bytes, never decoded.
// The director reads a request into a Frame on the gateway's server stream
// and writes the same Frame to the backend's client stream (and the other way
// round for responses), so the bytes cross the gateway without a copy.
//
// Ownership: a Frame holds one reference to each buffer of its payload. The
// reference is taken by [Codec.Unmarshal] and given away by [Codec.Marshal]
// (gRPC frees it once the message is written); in between, the Frame's owner
// must either send it or call [Frame.Free]. Receiving into a Frame that still
// holds a payload frees the old payload first, so one Frame can be reused
// for every message of a stream.
//
// A Frame is not safe for concurrent use; the zero value is an empty message.
type Frame struct {
	data mem.BufferSlice
}

// Len returns the size of the payload in bytes (for access-log byte counts).
func (f *Frame) Len() int { return f.data.Len() }

// DecodeInto unmarshals the payload into m. m never aliases the Frame's
// buffers: it stays valid after the Frame is sent or freed, and the Frame
// still holds its payload afterwards, unchanged.
func (f *Frame) DecodeInto(m proto.Message) error {
	switch len(f.data) {
	case 0:
		return proto.Unmarshal(nil, m)
	case 1:
		// proto.Unmarshal copies what it keeps (bytes and string fields), so
		// m does not alias the buffer.
		return proto.Unmarshal(f.data[0].ReadOnlyData(), m)
	}
	buf := f.data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// Free releases the payload the Frame holds, if any, and leaves it empty.
// It is safe to call on an empty Frame and more than once.
func (f *Frame) Free() {
	f.data.Free()
	f.data = nil
}

// Codec is a gRPC [encoding.CodecV2] that passes a *[Frame] through as raw
// bytes and delegates every other message type to gRPC's standard proto
// codec, so the gateway's own services (health, reflection, admin) keep
// working on a server that proxies unknown services as Frames. Its Name is
// "proto", the content-subtype of everything it reads and writes.
//
// Install it with grpc.ForceServerCodecV2 on the gateway's server and with
// grpc.ForceCodecV2 on calls to backends. The zero value is not usable; call
// [NewCodec]. A Codec is stateless and safe for concurrent use.
type Codec struct {
	fallback encoding.CodecV2
}

var _ encoding.CodecV2 = (*Codec)(nil)

// NewCodec returns a Codec that falls back to the registered "proto" codec.
func NewCodec() *Codec {
	return &Codec{fallback: encoding.GetCodecV2("proto")}
}

// Marshal returns the wire format of v. For a *Frame it returns the Frame's
// payload and leaves the Frame empty: the reference the Frame held moves to
// gRPC, which frees it once the message is written (see prepareMsg and the
// SendMsg methods in grpc-go). A Frame is therefore sent at most once per
// receive. Other types are marshalled by the proto codec.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*Frame); ok {
		if f == nil {
			return nil, nil
		}
		data := f.data
		f.data = nil
		return data, nil
	}
	return c.fallback.Marshal(v)
}

// Unmarshal parses data into v. For a *Frame it frees the payload the Frame
// held, if any, and keeps data by taking its own reference (gRPC frees data
// as soon as Unmarshal returns, see recv in grpc-go's rpc_util.go). Other
// types are unmarshalled by the proto codec.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*Frame); ok {
		if f == nil {
			return fmt.Errorf("routing: cannot unmarshal into a nil *Frame")
		}
		f.data.Free()
		data.Ref()
		f.data = data
		return nil
	}
	return c.fallback.Unmarshal(data, v)
}

// Name returns "proto": a Frame carries protobuf bytes, and clients and
// backends see the usual application/grpc(+proto) content type.
func (c *Codec) Name() string { return "proto" }
