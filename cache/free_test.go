package cache

import (
	"bytes"
	"runtime"
	"testing"
)

// The buffers of blocks that leave the cache are kept for the next loads,
// across garbage collections, and with the blocks they never hold more
// than the budget.
func TestFreeBuffersKept(t *testing.T) {
	const bs = 1024
	c := NewWithOptions(Options{Budget: 4 * bs, BlockSize: bs, ReadAhead: -1, RetryDelay: -1})
	src := newSource(10*bs+100, 3)
	r := c.NewReader("blob", int64(len(src.data)), src.open)
	defer r.Close()
	held := func(when string) {
		t.Helper()
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.bytes+c.freeBytes > c.budget || c.freeBytes != int64(len(c.free))*bs {
			t.Fatalf("%s: %d bytes in blocks and %d kept (%d buffers), budget %d", when, c.bytes, c.freeBytes, len(c.free), c.budget)
		}
	}
	read := func(off int64, n int) {
		t.Helper()
		buf := make([]byte, n)
		if m, err := r.ReadAt(buf, off); m != len(buf) || !bytes.Equal(buf, src.data[off:off+int64(n)]) {
			t.Fatalf("read %d at %d: %d, %v", n, off, m, err)
		}
		held("after a read")
	}
	read(0, 2*bs)
	old := map[*byte]bool{}
	for i := range int64(2) {
		b, _ := c.lru.Peek(blockKey{"blob", i})
		old[&b.data[0]] = true
	}
	if n := c.Forget("blob"); n != 2 {
		t.Fatalf("forgot %d blocks, want 2", n)
	}
	held("after Forget")
	runtime.GC()
	runtime.GC()
	read(5*bs, bs)
	if b, _ := c.lru.Peek(blockKey{"blob", 5}); !old[&b.data[0]] {
		t.Error("a new load did not reuse the buffer of a forgotten block")
	}
	// Turning the budget over many times, and the short last block.
	for off := int64(0); off < int64(len(src.data)); off += bs / 2 {
		read(off, int(min(bs/2, int64(len(src.data))-off)))
	}
	if !c.Charge(2 * bs) {
		t.Fatal("charge refused")
	}
	held("after a charge")
	c.Uncharge(2 * bs)
}
