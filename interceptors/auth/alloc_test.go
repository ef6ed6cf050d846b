package auth

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

// TestMalformedTokensBoundedAllocations checks that oversized and
// malformed tokens are refused with a few small allocations whatever their
// size: nothing copies or decodes them. It counts allocations and bytes,
// never time.
func TestMalformedTokensBoundedAllocations(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name     string
		tok      string
		maxAlloc float64 // allocations per check (the logged error's)
		maxBytes uint64  // bytes allocated per check
	}{
		{"1 MB token", strings.Repeat("A", 1<<20), 8, 1024},
		{"1 MB of dots", strings.Repeat(".", 1<<20), 8, 1024},
		{"only dots", "..", 8, 1024},
		{"dots under the size limit", strings.Repeat(".", 8000), 8, 1024},
		{"A under the size limit", strings.Repeat("A", 8000), 8, 1024},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			md := metadata.MD{"authorization": {"Bearer " + tc.tok}}
			c := &call{a: f.a, ctx: context.Background(), md: md}
			check := func() {
				if r := c.verify("corp"); r.err == nil || !r.presented {
					t.Fatalf("accepted or not seen: %+v", r)
				}
			}
			allocs := testing.AllocsPerRun(100, check)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			const n = 100
			for range n {
				check()
			}
			runtime.ReadMemStats(&after)
			bytes := (after.TotalAlloc - before.TotalAlloc) / n
			t.Logf("%.0f allocations, %d bytes per check", allocs, bytes)
			if allocs > tc.maxAlloc || bytes > tc.maxBytes {
				t.Errorf("%.0f allocations and %d bytes per check, want at most %.0f and %d", allocs, bytes, tc.maxAlloc, tc.maxBytes)
			}
		})
	}
}
