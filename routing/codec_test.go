package routing

import (
	"bytes"
	"sync"
	"testing"

	"google.golang.org/grpc/encoding"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// countingPool is a mem.BufferPool that counts the buffers returned to it.
type countingPool struct {
	mu  sync.Mutex
	put int
}

// Get returns capacity above grpc's pooling threshold (1 KiB), below which
// mem.NewBuffer does not pool.
func (p *countingPool) Get(n int) *[]byte { b := make([]byte, n, max(n, 4096)); return &b }
func (p *countingPool) Put(*[]byte) {
	p.mu.Lock()
	p.put++
	p.mu.Unlock()
}
func (p *countingPool) puts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.put
}

// pooled returns a one-buffer slice holding b, with one reference, from pool.
func pooled(b []byte, pool *countingPool) mem.BufferSlice {
	buf := pool.Get(len(b))
	copy(*buf, b)
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}
}

func TestCodecFrameOwnership(t *testing.T) {
	c := NewCodec()
	pool := &countingPool{}
	var f Frame

	// gRPC frees data right after Unmarshal; the Frame's reference keeps it.
	data := pooled([]byte("hello"), pool)
	if err := c.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	data.Free()
	if pool.puts() != 0 || f.Len() != 5 {
		t.Fatalf("after Unmarshal+Free: puts=%d len=%d, want 0 and 5", pool.puts(), f.Len())
	}

	// A second Unmarshal frees the first payload.
	data = pooled([]byte("world!"), pool)
	if err := c.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	data.Free()
	if pool.puts() != 1 || f.Len() != 6 {
		t.Fatalf("after second Unmarshal: puts=%d len=%d, want 1 and 6", pool.puts(), f.Len())
	}

	// Marshal hands the reference to gRPC, which frees it after writing.
	out, err := c.Marshal(&f)
	if err != nil {
		t.Fatal(err)
	}
	if f.Len() != 0 || !bytes.Equal(out.Materialize(), []byte("world!")) {
		t.Fatalf("Marshal = %q with Frame len %d, want world! and 0", out.Materialize(), f.Len())
	}
	out.Free()
	if pool.puts() != 2 {
		t.Fatalf("after freeing the Marshal result: puts=%d, want 2", pool.puts())
	}

	// An empty Frame marshals to an empty message; Free is idempotent.
	if out, err := c.Marshal(&f); err != nil || out.Len() != 0 {
		t.Fatalf("Marshal(empty) = %v, %v", out, err)
	}
	data = pooled([]byte("x"), pool)
	_ = c.Unmarshal(data, &f)
	data.Free()
	f.Free()
	f.Free()
	if pool.puts() != 3 || f.Len() != 0 {
		t.Fatalf("after Free: puts=%d len=%d, want 3 and 0", pool.puts(), f.Len())
	}
}

func TestFrameDecodeInto(t *testing.T) {
	want := &testpb.SimpleRequest{ResponseSize: 7, Payload: &testpb.Payload{Body: []byte("body bytes")}}
	wire, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	for _, split := range []int{0, 3, len(wire)} {
		var data mem.BufferSlice
		if split > 0 && split < len(wire) {
			data = mem.BufferSlice{mem.SliceBuffer(bytes.Clone(wire[:split])), mem.SliceBuffer(bytes.Clone(wire[split:]))}
		} else {
			data = mem.BufferSlice{mem.SliceBuffer(bytes.Clone(wire))}
		}
		var f Frame
		if err := NewCodec().Unmarshal(data, &f); err != nil {
			t.Fatal(err)
		}
		got := &testpb.SimpleRequest{}
		if err := f.DecodeInto(got); err != nil {
			t.Fatal(err)
		}
		// m must not alias the frame: scribble over the frame's bytes.
		for _, b := range data {
			clear(b.ReadOnlyData())
		}
		if !proto.Equal(got, want) {
			t.Fatalf("split %d: DecodeInto = %v, want %v", split, got, want)
		}
		if f.Len() != len(wire) {
			t.Fatalf("DecodeInto consumed the frame: len %d, want %d", f.Len(), len(wire))
		}
		f.Free()
	}
}

func TestCodecFallsBackToProto(t *testing.T) {
	c := NewCodec()
	if c.Name() != "proto" {
		t.Fatalf("Name() = %q, want proto", c.Name())
	}
	msg := &testpb.SimpleRequest{ResponseSize: 3}
	out, err := c.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Free()
	got := &testpb.SimpleRequest{}
	if err := c.Unmarshal(out, got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, msg) {
		t.Fatalf("round trip = %v, want %v", got, msg)
	}
	if _, err := c.Marshal("not a message"); err == nil {
		t.Fatal("Marshal(string) succeeded, want an error from the proto codec")
	}
	var _ encoding.CodecV2 = c
}
