package cache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regfs/regfs/driver"
)

// rangedSource serves src's streams bounded to the length the cache asks
// for (as the S3 driver does), and records the ranges asked for.
type rangedSource struct {
	*source
	mu     sync.Mutex
	ranges [][2]int64 // offset, length (0: none asked)
}

func (rs *rangedSource) open(ctx context.Context, off int64) (io.ReadCloser, error) {
	rc, err := rs.source.open(ctx, off)
	if err != nil {
		return nil, err
	}
	n, ok := driver.ReadLength(ctx)
	rs.mu.Lock()
	rs.ranges = append(rs.ranges, [2]int64{off, n})
	rs.mu.Unlock()
	if ok {
		st := rc.(*sourceStream)
		st.r = bytes.NewReader(rs.data[off:min(off+n, int64(len(rs.data)))])
	}
	return rc, nil
}

// TestRangedLoads reads a blob sequentially with Options.Ranged: every load
// opens one stream for exactly its block, and closes it at its end.
func TestRangedLoads(t *testing.T) {
	const bs = 1 << 12
	const size = 10*bs - 100 // a short last block
	src := &rangedSource{source: newSource(size, 21)}
	c := NewWithOptions(Options{Budget: 64 * bs, BlockSize: bs, ReadAhead: 4, Ranged: true})
	r := c.NewReader("blob", size, src.open)
	defer r.Close()
	got := make([]byte, size)
	for off := 0; off < size; off += bs / 4 {
		end := min(off+bs/4, size)
		if _, err := r.ReadAt(got[off:end], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, src.data) {
		t.Fatal("wrong data")
	}
	s := c.Stats()
	if s.Loads != 10 || s.Opens != 10 || s.Misses > 1 {
		t.Errorf("stats = %+v, want 10 loads, 10 opens, at most 1 miss", s)
	}
	seen := map[int64]bool{}
	for _, rg := range src.ranges {
		if rg[0]%bs != 0 || rg[1] != min(bs, size-rg[0]) || seen[rg[0]] {
			t.Errorf("range (offset %d, length %d): want one range per block, of the block", rg[0], rg[1])
		}
		seen[rg[0]] = true
	}
	if n := streamsOpen(src.source); n != 0 {
		t.Errorf("%d streams open after the pass, want none kept", n)
	}
}

// TestRangedWindowGrows reads a blob sequentially with Options.Ranged: a
// run starts with one block ahead, and the window doubles each time the
// reader enters a new block, up to ReadAhead; no block past the window is
// loaded.
func TestRangedWindowGrows(t *testing.T) {
	const bs = 1 << 12
	const blocks = 16
	src := &rangedSource{source: newSource(blocks*bs, 22)}
	c := NewWithOptions(Options{Budget: 64 * bs, BlockSize: bs, ReadAhead: 4, Ranged: true})
	r := c.NewReader("blob", blocks*bs, src.open)
	defer r.Close()
	got := make([]byte, blocks*bs)
	// Reading in block i, the window is min(2^i, 4) blocks past it.
	for i, wantTo := range []int64{1, 3, 6, 7, 8} {
		for off := int64(i) * bs; off < int64(i+1)*bs; off += bs / 4 {
			if _, err := r.ReadAt(got[off:off+bs/4], off); err != nil {
				t.Fatal(err)
			}
		}
		wantAheads := wantTo // every block from 1 to wantTo, once
		waitFor(t, fmt.Sprintf("read-ahead to block %d in block %d", wantTo, i), func() bool {
			return c.Stats().ReadAheads == wantAheads && streamsOpen(src.source) == 0
		})
		src.mu.Lock()
		for _, rg := range src.ranges {
			if rg[0]/bs > wantTo {
				t.Errorf("reading block %d: block %d loaded, want none past %d", i, rg[0]/bs, wantTo)
			}
		}
		src.mu.Unlock()
	}
	for off := 5 * bs; off < len(got); off += bs / 4 {
		if _, err := r.ReadAt(got[off:off+bs/4], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, src.data) {
		t.Fatal("wrong data")
	}
	if s := c.Stats(); s.Loads != blocks || s.Misses != 1 {
		t.Errorf("stats = %+v, want %d loads, 1 miss", s, blocks)
	}
}

// TestRangedAheadPastStraggler checks that with Options.Ranged the
// read-ahead window is worked through by at most AheadLoads loads at a
// time (and at most half the budget), and that while one load is stuck
// the others go on to the end of the window without the reader moving.
func TestRangedAheadPastStraggler(t *testing.T) {
	const bs = 1 << 12
	const blocks = 16
	for _, tc := range []struct {
		budget     int64
		aheadLoads int
		wantMax    int64
	}{
		{64 * bs, 2, 2}, // bounded by AheadLoads
		{6 * bs, 8, 3},  // bounded by half the budget
	} {
		t.Run(fmt.Sprintf("budget=%d/aheadloads=%d", tc.budget/bs, tc.aheadLoads), func(t *testing.T) {
			src := &rangedSource{source: newSource(blocks*bs, 24)}
			hold := make(chan struct{})
			var open, maxOpen atomic.Int64
			opener := func(ctx context.Context, off int64) (io.ReadCloser, error) {
				rc, err := src.open(ctx, off)
				if err != nil {
					return nil, err
				}
				n := open.Add(1)
				for m := maxOpen.Load(); n > m && !maxOpen.CompareAndSwap(m, n); m = maxOpen.Load() {
				}
				if off == 4*bs {
					select {
					case <-hold:
					case <-ctx.Done():
					}
				}
				return countedCloser{rc, &open}, nil
			}
			c := NewWithOptions(Options{Budget: tc.budget, BlockSize: bs, ReadAhead: 8, AheadLoads: tc.aheadLoads, Ranged: true})
			r := c.NewReader("blob", blocks*bs, opener)
			defer r.Close()
			got := make([]byte, blocks*bs)
			// Blocks 0 to 3: the window grows to 8, so it ends at block 11.
			for off := 0; off < 4*bs; off += bs / 4 {
				if _, err := r.ReadAt(got[off:off+bs/4], int64(off)); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "block 11 loaded while block 4 is stuck", func() bool {
				src.mu.Lock()
				defer src.mu.Unlock()
				for _, rg := range src.ranges {
					if rg[0] == 11*bs {
						return true
					}
				}
				return false
			})
			if m := maxOpen.Load(); m > tc.wantMax {
				t.Errorf("%d loads in flight at once, want at most %d", m, tc.wantMax)
			}
			close(hold)
			for off := 4 * bs; off < len(got); off += bs / 4 {
				if _, err := r.ReadAt(got[off:off+bs/4], int64(off)); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, src.data) {
				t.Fatal("wrong data")
			}
			if s := c.Stats(); s.MaxBytes > s.Budget {
				t.Errorf("MaxBytes %d > Budget %d", s.MaxBytes, s.Budget)
			}
		})
	}
}

// countedCloser decrements n when closed.
type countedCloser struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countedCloser) Close() error {
	c.n.Add(-1)
	return c.ReadCloser.Close()
}

// TestRangedDemandFirst checks that with Options.Ranged a read's own block
// is loaded before read-ahead starts, so that the first byte of a fresh
// sequential read does not share the bandwidth with the blocks ahead.
func TestRangedDemandFirst(t *testing.T) {
	const bs = 1 << 12
	src := &rangedSource{source: newSource(16*bs, 23)}
	var c *Cache
	var aheadAtFirstOpen atomic.Int64
	aheadAtFirstOpen.Store(-1)
	open := func(ctx context.Context, off int64) (io.ReadCloser, error) {
		if off == 0 {
			aheadAtFirstOpen.Store(c.Stats().ReadAheads)
		}
		return src.open(ctx, off)
	}
	c = NewWithOptions(Options{Budget: 64 * bs, BlockSize: bs, ReadAhead: 4, Ranged: true})
	r := c.NewReader("blob", 16*bs, open)
	defer r.Close()
	p := make([]byte, 100)
	if _, err := r.ReadAt(p, 0); err != nil || !bytes.Equal(p, src.data[:100]) {
		t.Fatalf("ReadAt(0): %v", err)
	}
	if n := aheadAtFirstOpen.Load(); n != 0 {
		t.Errorf("%d read-aheads started before the first block's load, want 0", n)
	}
	waitFor(t, "read-ahead after the first read", func() bool { return c.Stats().ReadAheads == 1 })
}

// TestRangedFirstBytesEarly checks that with Options.Ranged a read that
// loads its block returns as soon as its own bytes have arrived, while the
// rest of the block is still on its way, and that the block is then
// cached whole; a failed first request falls back to a load with retries.
func TestRangedFirstBytesEarly(t *testing.T) {
	const bs = 1 << 12
	src := &rangedSource{source: newSource(4*bs, 25)}
	gate := make(chan struct{})
	open := func(ctx context.Context, off int64) (io.ReadCloser, error) {
		rc, err := src.open(ctx, off)
		if err != nil || off != 0 {
			return rc, err
		}
		// Block 0: its first half comes at once, the rest at the gate.
		st := rc.(*sourceStream)
		st.r = bytes.NewReader(src.data[:bs/2])
		return struct {
			io.Reader
			io.Closer
		}{io.MultiReader(st, &gatedReader{ctx: ctx, gate: gate, r: bytes.NewReader(src.data[bs/2 : bs])}), st}, nil
	}
	c := NewWithOptions(Options{Budget: 64 * bs, BlockSize: bs, ReadAhead: -1, Ranged: true, RetryDelay: -1})
	r := c.NewReader("blob", 4*bs, open)
	defer r.Close()
	p := make([]byte, 100)
	done := make(chan error, 1)
	go func() {
		_, err := r.ReadAt(p, 10)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil || !bytes.Equal(p, src.data[10:110]) {
			t.Fatalf("ReadAt(10): %v, or wrong bytes", err)
		}
	case <-time.After(5 * time.Second):
		close(gate)
		t.Fatal("the first read waited for its whole block")
	}
	close(gate)
	tail := make([]byte, 100)
	if _, err := r.ReadAt(tail, bs-100); err != nil || !bytes.Equal(tail, src.data[bs-100:bs]) {
		t.Fatalf("ReadAt(end of block 0): %v, or wrong bytes", err)
	}
	if s := c.Stats(); s.Loads != 1 || s.Opens != 1 {
		t.Errorf("stats = %+v, want the block loaded once, by one request", s)
	}

	// The first request fails: the block loads with retries, and the read
	// gets its bytes.
	src.failOpens.Store(1)
	if _, err := r.ReadAt(p, 2*bs+10); err != nil || !bytes.Equal(p, src.data[2*bs+10:2*bs+110]) {
		t.Fatalf("ReadAt after a failed request: %v, or wrong bytes", err)
	}
	if s := c.Stats(); s.Loads != 2 || s.Opens != 3 {
		t.Errorf("stats = %+v, want 2 loads, 3 requests (one failed)", s)
	}
}

// gatedReader reads r once gate is closed or ctx is done.
type gatedReader struct {
	ctx  context.Context
	gate chan struct{}
	r    io.Reader
}

func (g *gatedReader) Read(p []byte) (int, error) {
	select {
	case <-g.gate:
		return g.r.Read(p)
	case <-g.ctx.Done():
		return 0, g.ctx.Err()
	}
}
