package cache

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"slices"
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

// Lend answers a read within one block with the block's own bytes, which
// stay as they are until done, even when the block leaves the cache and
// its buffer could go to another load; anything else is copied.
func TestLend(t *testing.T) {
	const bs = 1024
	c := NewWithOptions(Options{Budget: 4 * bs, BlockSize: bs, ReadAhead: -1, RetryDelay: -1})
	src := newSource(8*bs+100, 5)
	r := c.NewReader("blob", int64(len(src.data)), src.open)
	defer r.Close()

	p := make([]byte, 300)
	data, done, err := r.Lend(p, bs+10)
	if err != nil || done == nil || !bytes.Equal(data, src.data[bs+10:bs+310]) {
		t.Fatalf("lend within block 1: %v, done %v, %d bytes", err, done != nil, len(data))
	}
	if &data[0] == &p[0] {
		t.Error("the lent bytes are a copy")
	}
	want := bytes.Clone(data)

	// Across two blocks: a copy into p.
	q := make([]byte, 300)
	got, done2, err := r.Lend(q, 2*bs-100)
	if err != nil || done2 != nil || &got[0] != &q[0] || !bytes.Equal(got, src.data[2*bs-100:2*bs+200]) {
		t.Errorf("lend across blocks: %v, done %v, copied %v", err, done2 != nil, &got[0] == &q[0])
	}

	// The lent block leaves the cache, uncounted at once; new loads take
	// every buffer there is, but not the lent one.
	c.Forget("blob")
	if s := c.Stats(); s.Bytes != 0 || s.Loans != 1 {
		t.Errorf("after Forget: %d bytes counted, %d loans; want 0 and 1", s.Bytes, s.Loans)
	}
	for off := int64(2 * bs); off < int64(len(src.data)); off += bs / 2 {
		buf := make([]byte, min(bs/2, int64(len(src.data))-off))
		if _, err := r.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(data, want) {
		t.Fatal("the lent bytes were overwritten before done")
	}
	c.Forget("blob")
	done()
	c.mu.Lock()
	kept := slices.ContainsFunc(c.free, func(b []byte) bool { return &b[10] == &data[0] })
	c.mu.Unlock()
	if s := c.Stats(); s.Loans != 0 || !kept {
		t.Errorf("after done: %d loans, buffer kept for reuse %v", s.Loans, kept)
	}

	// At the end: the bytes there are, and io.EOF.
	data, done, err = r.Lend(make([]byte, 300), int64(len(src.data))-50)
	if !errors.Is(err, io.EOF) || !bytes.Equal(data, src.data[len(src.data)-50:]) {
		t.Errorf("lend at the end: %v, %d bytes", err, len(data))
	}
	if done != nil {
		done()
	}
}
