package cache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"

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

// TestRangedReadAheadInFlight checks that a sequential reader keeps
// ReadAhead ranges in flight at once, and no more than half the budget
// holds.
func TestRangedReadAheadInFlight(t *testing.T) {
	const bs = 1 << 12
	const blocks = 16
	for _, tc := range []struct {
		budget int64
		want   int64
	}{
		{64 * bs, 4}, // bounded by ReadAhead
		{6 * bs, 3},  // bounded by half the budget
	} {
		t.Run(fmt.Sprintf("budget=%d", tc.budget/bs), func(t *testing.T) {
			src := &rangedSource{source: newSource(blocks*bs, 22)}
			src.gate = make(chan struct{})
			src.gateFrom = bs // block 0 loads, the ones after it wait
			c := NewWithOptions(Options{Budget: tc.budget, BlockSize: bs, ReadAhead: 4, Ranged: true})
			r := c.NewReader("blob", blocks*bs, src.open)
			defer r.Close()
			got := make([]byte, blocks*bs)
			if _, err := r.ReadAt(got[:bs/4], 0); err != nil {
				t.Fatal(err)
			}
			waitFor(t, fmt.Sprintf("%d ranges in flight", tc.want), func() bool { return streamsOpen(src.source) == tc.want })
			// Nothing more starts until the reader moves on.
			if _, err := r.ReadAt(got[bs/4:bs/2], bs/4); err != nil {
				t.Fatal(err)
			}
			if n, s := streamsOpen(src.source), c.Stats(); n != tc.want || s.ReadAheads != tc.want {
				t.Errorf("%d ranges in flight, %d read-aheads; want %d", n, s.ReadAheads, tc.want)
			}
			close(src.gate)
			for off := bs / 2; off < len(got); off += bs / 4 {
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
	waitFor(t, "read-ahead after the first read", func() bool { return c.Stats().ReadAheads == 4 })
}
