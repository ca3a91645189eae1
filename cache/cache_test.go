package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

var errInjected = errors.New("injected failure")

// source is an in-memory blob whose streams count opens and closes and can
// be made to fail or to block.
type source struct {
	data []byte

	// opens counts streams opened, closes streams closed.
	opens, closes atomic.Int64
	// failOpens is how many of the next opens fail with errInjected.
	failOpens atomic.Int64
	// short, when set, makes streams end this many bytes early.
	short atomic.Int64
	// gate, when not nil, blocks every Read of a stream opened at gateFrom
	// or later until gate is closed or the stream's context is cancelled.
	// Both are set before the first open.
	gate     chan struct{}
	gateFrom int64
}

func newSource(size int, seed uint64) *source {
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	return &source{data: data}
}

func (s *source) open(ctx context.Context, off int64) (io.ReadCloser, error) {
	if off < 0 || off > int64(len(s.data)) {
		return nil, fmt.Errorf("open at %d of %d", off, len(s.data))
	}
	if s.failOpens.Add(-1) >= 0 {
		return nil, errInjected
	}
	s.opens.Add(1)
	end := max(int64(len(s.data))-s.short.Load(), off)
	st := &sourceStream{s: s, ctx: ctx, r: bytes.NewReader(s.data[off:end])}
	if off >= s.gateFrom {
		st.gate = s.gate
	}
	return st, nil
}

type sourceStream struct {
	s      *source
	ctx    context.Context
	r      *bytes.Reader
	gate   chan struct{}
	closed atomic.Bool
}

func (st *sourceStream) Read(p []byte) (int, error) {
	if st.closed.Load() {
		return 0, errors.New("read after close")
	}
	if st.gate != nil {
		select {
		case <-st.gate:
		case <-st.ctx.Done():
			return 0, st.ctx.Err()
		}
	}
	return st.r.Read(p)
}

func (st *sourceStream) Close() error {
	if st.closed.Swap(true) {
		return errors.New("closed twice")
	}
	st.s.closes.Add(1)
	return nil
}

// streamsOpen returns the number of streams of s not closed.
func streamsOpen(s *source) int64 { return s.opens.Load() - s.closes.Load() }

// waitGoroutines waits until the number of goroutines drops to at most n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d, want <= %d\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFor polls cond until it holds or fails t after a while.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReaderContract(t *testing.T) {
	const bs = 1024
	budgets := map[string]int64{"roomy": 64 * bs, "two blocks": 2 * bs, "below a block": bs / 2, "zero": 0}
	for _, size := range []int{0, 1, bs - 1, bs, bs + 1, 3*bs + bs/2} {
		for name, budget := range budgets {
			t.Run(fmt.Sprintf("size=%d/budget=%s", size, name), func(t *testing.T) {
				src := newSource(size, uint64(size))
				c := NewWithOptions(Options{Budget: budget, BlockSize: bs, RetryDelay: -1})
				r := c.NewReader("blob", int64(size), src.open)
				if err := iotest.TestReader(io.NewSectionReader(r, 0, r.Size()), src.data); err != nil {
					t.Fatal(err)
				}
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
				if n := streamsOpen(src); n != 0 {
					t.Errorf("%d streams left open", n)
				}
				if s := c.Stats(); s.MaxBytes > s.Budget {
					t.Errorf("MaxBytes %d > Budget %d", s.MaxBytes, s.Budget)
				}
			})
		}
	}
}

func TestReadAtEdges(t *testing.T) {
	const bs = 100
	src := newSource(250, 1)
	c := New(1000, bs)
	r := c.NewReader("blob", 250, src.open)
	defer r.Close()

	if _, err := r.ReadAt(make([]byte, 1), -1); !errors.Is(err, ErrNegativeOffset) {
		t.Errorf("negative offset: err = %v, want ErrNegativeOffset", err)
	}
	for _, off := range []int64{250, 251, 1 << 40} {
		if n, err := r.ReadAt(make([]byte, 10), off); n != 0 || err != io.EOF {
			t.Errorf("ReadAt at %d = %d, %v; want 0, EOF", off, n, err)
		}
	}
	// Crossing the end: short with EOF. Across blocks: full with nil.
	p := make([]byte, 100)
	if n, err := r.ReadAt(p, 200); n != 50 || err != io.EOF || !bytes.Equal(p[:n], src.data[200:]) {
		t.Errorf("ReadAt(100, 200) = %d, %v; want 50, EOF and the data", n, err)
	}
	p = make([]byte, 150)
	if n, err := r.ReadAt(p, 75); n != 150 || err != nil || !bytes.Equal(p, src.data[75:225]) {
		t.Errorf("ReadAt(150, 75) = %d, %v; want 150, nil and the data", n, err)
	}
	if n, err := r.ReadAt(nil, 10); n != 0 || err != nil {
		t.Errorf("empty ReadAt = %d, %v; want 0, nil", n, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(p, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadAt after Close: err = %v, want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestConcurrentRandomReadAt(t *testing.T) {
	const bs = 4096
	const size = 40*bs + 123
	for _, ranged := range []bool{false, true} {
		for name, budget := range map[string]int64{"roomy": 2 * size, "tight": 6 * bs, "zero": 0} {
			testConcurrentRandomReadAt(t, fmt.Sprintf("%s/ranged=%v", name, ranged), budget, ranged)
		}
	}
}

// testConcurrentRandomReadAt is one case of TestConcurrentRandomReadAt.
func testConcurrentRandomReadAt(t *testing.T, name string, budget int64, ranged bool) {
	const bs = 4096
	const size = 40*bs + 123
	t.Run(name, func(t *testing.T) {
		src := newSource(size, 7)
		c := NewWithOptions(Options{Budget: budget, BlockSize: bs, RetryDelay: -1, Ranged: ranged})
		r := c.NewReader("blob", size, src.open)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(g), 2))
				buf := make([]byte, 3*bs)
				for range 300 {
					off := rng.Int64N(size)
					p := buf[:rng.IntN(len(buf))+1]
					n, err := r.ReadAt(p, off)
					want := src.data[off:min(off+int64(len(p)), size)]
					if n != len(want) || !bytes.Equal(p[:n], want) {
						errs <- fmt.Errorf("ReadAt(%d, %d) = %d bytes, %v: wrong data", len(p), off, n, err)
						return
					}
					if wantErr := len(want) < len(p); (err == io.EOF) != wantErr || (err != nil && err != io.EOF) {
						errs <- fmt.Errorf("ReadAt(%d, %d): err = %v", len(p), off, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		s := c.Stats()
		if s.MaxBytes > s.Budget {
			t.Errorf("MaxBytes %d > Budget %d", s.MaxBytes, s.Budget)
		}
		if n := streamsOpen(src); n != 0 {
			t.Errorf("%d streams left open", n)
		}
	})
}

func TestSingleFlight(t *testing.T) {
	const bs = 1 << 16
	src := newSource(bs, 3) // one block: no read-ahead
	src.gate = make(chan struct{})
	c := New(4*bs, bs)
	r := c.NewReader("blob", bs, src.open)
	defer r.Close()

	const readers = 16
	var wg sync.WaitGroup
	results := make([][]byte, readers)
	errs := make([]error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 1000)
			off := int64(i * 1000)
			_, errs[i] = r.ReadAt(p, off)
			results[i] = p
		}()
	}
	waitFor(t, "15 waiters", func() bool { return c.Stats().Waits == readers-1 })
	close(src.gate)
	wg.Wait()
	for i := range readers {
		if errs[i] != nil {
			t.Errorf("reader %d: %v", i, errs[i])
		}
		if want := src.data[i*1000 : i*1000+1000]; !bytes.Equal(results[i], want) {
			t.Errorf("reader %d: wrong data", i)
		}
	}
	if n := src.opens.Load(); n != 1 {
		t.Errorf("opens = %d, want 1", n)
	}
	s := c.Stats()
	if s.Loads != 1 || s.Misses != 1 || s.Waits != readers-1 {
		t.Errorf("stats = %+v, want 1 load, 1 miss, %d waits", s, readers-1)
	}
	// Now cached: a read is a hit and opens nothing.
	if _, err := r.ReadAt(make([]byte, 10), 5); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Hits != 1 || src.opens.Load() != 1 {
		t.Errorf("after load: hits = %d, opens = %d; want 1, 1", s.Hits, src.opens.Load())
	}
}

func TestSingleFlightSharesFailure(t *testing.T) {
	const bs = 1 << 12
	src := newSource(bs, 4)
	src.gate = make(chan struct{})
	src.short.Store(1) // every stream ends one byte early
	c := NewWithOptions(Options{Budget: 4 * bs, BlockSize: bs, Attempts: 2, RetryDelay: -1})
	r := c.NewReader("blob", bs, src.open)
	defer r.Close()

	const readers = 8
	var wg sync.WaitGroup
	errs := make([]error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.ReadAt(make([]byte, 10), int64(i))
		}()
	}
	waitFor(t, "waiters", func() bool { return c.Stats().Waits == readers-1 })
	close(src.gate)
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("reader %d: err = %v, want io.ErrUnexpectedEOF", i, err)
		}
	}
	if n := src.opens.Load(); n != 2 {
		t.Errorf("opens = %d, want 2 (one load, two attempts)", n)
	}
	if s := c.Stats(); s.Bytes != 0 || s.LoadErrors != 1 {
		t.Errorf("stats = %+v, want nothing held and one load error", s)
	}
	// Healed source: the failure was not cached.
	src.short.Store(0)
	p := make([]byte, bs)
	if n, err := r.ReadAt(p, 0); n != bs || err != nil || !bytes.Equal(p, src.data) {
		t.Errorf("after healing: %d, %v", n, err)
	}
}

func TestLoadErrorsRetriedThenReturned(t *testing.T) {
	const bs = 1 << 12
	src := newSource(3*bs, 5)
	// No kept streams, so that every load opens one.
	c := NewWithOptions(Options{Budget: 16 * bs, BlockSize: bs, ReadAhead: -1, MaxStreams: -1, RetryDelay: time.Millisecond})
	r := c.NewReader("blob", 3*bs, src.open)
	defer r.Close()
	p := make([]byte, 100)

	// Two transient failures: the third attempt succeeds.
	src.failOpens.Store(2)
	if n, err := r.ReadAt(p, bs); n != 100 || err != nil || !bytes.Equal(p, src.data[bs:bs+100]) {
		t.Fatalf("with 2 transient failures: %d, %v", n, err)
	}
	if s := c.Stats(); s.Retries != 2 {
		t.Errorf("retries = %d, want 2", s.Retries)
	}

	// Three failures exhaust the attempts: the error is returned and
	// nothing is cached.
	src.failOpens.Store(3)
	held := c.Stats().Bytes
	if _, err := r.ReadAt(p, 2*bs); !errors.Is(err, errInjected) {
		t.Fatalf("with 3 failures: err = %v, want errInjected", err)
	}
	if s := c.Stats(); s.Bytes != held || s.LoadErrors != 1 {
		t.Errorf("after failure: bytes %d (want %d), load errors %d (want 1)", s.Bytes, held, s.LoadErrors)
	}
	if n, err := r.ReadAt(p, 2*bs); n != 100 || err != nil || !bytes.Equal(p, src.data[2*bs:2*bs+100]) {
		t.Fatalf("after the source recovered: %d, %v", n, err)
	}
	if s := c.Stats(); s.Misses != 3 {
		t.Errorf("misses = %d, want 3 (the failed block was loaded again)", s.Misses)
	}
}

func TestBudgetNeverExceeded(t *testing.T) {
	for _, ranged := range []bool{false, true} {
		t.Run(fmt.Sprintf("ranged=%v", ranged), func(t *testing.T) { testBudgetNeverExceeded(t, ranged) })
	}
}

func testBudgetNeverExceeded(t *testing.T, ranged bool) {
	const bs = 4096
	const budget = 8 * bs
	const blobs = 6
	const size = 50*bs + 17 // every blob alone is 6 times the budget
	c := NewWithOptions(Options{Budget: budget, BlockSize: bs, ReadAhead: 8, RetryDelay: -1, Ranged: ranged})
	srcs := make([]*source, blobs)
	for i := range srcs {
		srcs[i] = newSource(size, uint64(100+i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	// 4 sequential and 4 random readers per blob, each with its own Reader.
	for i := range 8 * blobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := srcs[i%blobs]
			r := c.NewReader(fmt.Sprint("blob", i%blobs), size, src.open)
			defer r.Close()
			rng := rand.New(rand.NewPCG(uint64(i), 3))
			p := make([]byte, 3000)
			for off := int64(0); off < size; off += int64(len(p)) {
				if i%2 == 1 {
					off = rng.Int64N(size)
				}
				n, err := r.ReadAt(p, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(p[:n], src.data[off:off+int64(n)]) {
					errs <- fmt.Errorf("reader %d: wrong data at %d", i, off)
					return
				}
				if i%2 == 1 && rng.IntN(20) == 0 {
					break
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := c.Stats()
	if s.MaxBytes > s.Budget || s.Bytes > s.Budget {
		t.Errorf("MaxBytes %d, Bytes %d > Budget %d", s.MaxBytes, s.Bytes, s.Budget)
	}
	if s.Evictions == 0 || s.ReadAheads == 0 {
		t.Errorf("stats = %+v: expected evictions and read-ahead", s)
	}
	for i, src := range srcs {
		if n := streamsOpen(src); n != 0 {
			t.Errorf("blob %d: %d streams left open", i, n)
		}
	}
}

// TestReadAheadMakesSequentialPassHit reads a blob front to back in
// requests of an eighth of a block; with read-ahead only the first block is
// a miss.
func TestReadAheadMakesSequentialPassHit(t *testing.T) {
	const bs = 1 << 14
	const blocks = 32
	for _, ra := range []int{-1, 4} {
		t.Run(fmt.Sprintf("readahead=%d", ra), func(t *testing.T) {
			src := newSource(blocks*bs, 9)
			c := NewWithOptions(Options{Budget: 16 * bs, BlockSize: bs, ReadAhead: ra})
			r := c.NewReader("blob", blocks*bs, src.open)
			defer r.Close()
			got := make([]byte, blocks*bs)
			for off := 0; off < len(got); off += bs / 8 {
				if _, err := r.ReadAt(got[off:off+bs/8], int64(off)); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, src.data) {
				t.Fatal("wrong data")
			}
			s := c.Stats()
			if ra < 0 {
				if s.Misses != blocks || s.ReadAheads != 0 {
					t.Errorf("without read-ahead: %+v, want %d misses", s, blocks)
				}
				return
			}
			if s.Misses > 1 || s.ReadAheads != blocks-1 {
				t.Errorf("with read-ahead: %+v, want 1 miss and %d read-aheads", s, blocks-1)
			}
			if s.MaxBytes > s.Budget {
				t.Errorf("MaxBytes %d > Budget %d", s.MaxBytes, s.Budget)
			}
		})
	}
}

// TestReadAheadOutOfOrder reads like FUSE does: several 128 KiB-like
// requests in flight at once, finishing in any order.
func TestReadAheadOutOfOrder(t *testing.T) {
	const bs = 1 << 14
	const blocks = 48
	const chunk = bs / 8
	src := newSource(blocks*bs, 10)
	c := NewWithOptions(Options{Budget: 24 * bs, BlockSize: bs, ReadAhead: 6})
	r := c.NewReader("blob", blocks*bs, src.open)
	defer r.Close()
	got := make([]byte, blocks*bs)
	offs := make(chan int64)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := range offs {
				if _, err := r.ReadAt(got[off:off+chunk], off); err != nil {
					failed.Store(true)
				}
			}
		}()
	}
	for off := int64(0); off < blocks*bs; off += chunk {
		offs <- off
	}
	close(offs)
	wg.Wait()
	if failed.Load() || !bytes.Equal(got, src.data) {
		t.Fatal("wrong data or error")
	}
	s := c.Stats()
	if s.Misses > 2 {
		t.Errorf("stats = %+v: want at most 2 misses of %d blocks", s, blocks)
	}
	if lookups := s.Hits + s.Misses + s.Waits; s.Hits < lookups/2 {
		t.Errorf("stats = %+v: want mostly hits", s)
	}
}

func TestStreamReuse(t *testing.T) {
	const bs = 1 << 12
	src := newSource(16*bs, 11)
	c := NewWithOptions(Options{Budget: 64 * bs, BlockSize: bs, ReadAhead: -1, MaxSkip: 2 * bs})
	r := c.NewReader("blob", 16*bs, src.open)
	p := make([]byte, 10)
	read := func(off int64) {
		t.Helper()
		if n, err := r.ReadAt(p, off); n != len(p) || err != nil || !bytes.Equal(p, src.data[off:off+10]) {
			t.Fatalf("ReadAt(%d): %d, %v", off, n, err)
		}
	}
	// Blocks 0, 1, 2 in order: one stream.
	read(0)
	read(bs)
	read(2 * bs)
	if n := src.opens.Load(); n != 1 {
		t.Errorf("sequential blocks: opens = %d, want 1", n)
	}
	// Skip blocks 3 and 4 (within MaxSkip): same stream, bytes discarded.
	read(5 * bs)
	if n := src.opens.Load(); n != 1 {
		t.Errorf("small forward jump: opens = %d, want 1", n)
	}
	// Far forward: a new stream; back: another one.
	read(12 * bs)
	read(3 * bs)
	if n := src.opens.Load(); n != 3 {
		t.Errorf("far jump and jump back: opens = %d, want 3", n)
	}
	// Both kept streams continue where they ended.
	read(13 * bs)
	read(4 * bs)
	if n := src.opens.Load(); n != 3 {
		t.Errorf("continuing two streams: opens = %d, want 3", n)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n := streamsOpen(src); n != 0 {
		t.Errorf("%d streams left open after Close", n)
	}
}

func TestCloseStopsReadAhead(t *testing.T) {
	const bs = 1 << 12
	before := runtime.NumGoroutine()
	src := newSource(64*bs, 12)
	// Block 0 loads; the read-ahead of blocks 1-8 hangs on the gate.
	src.gate, src.gateFrom = make(chan struct{}), bs
	defer close(src.gate)
	c := NewWithOptions(Options{Budget: 64 * bs, BlockSize: bs, ReadAhead: 8, MaxStreams: -1})
	r := c.NewReader("blob", 64*bs, src.open)
	if _, err := r.ReadAt(make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.ReadAheads != 8 {
		t.Fatalf("read-ahead started %d loads, want 8", s.ReadAheads)
	}
	done := make(chan error)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return while read-ahead was blocked")
	}
	waitGoroutines(t, before)
	if n := streamsOpen(src); n != 0 {
		t.Errorf("%d streams left open", n)
	}
	if s := c.Stats(); s.Bytes != int64(bs) {
		t.Errorf("held %d bytes after Close, want %d (block 0 only)", s.Bytes, bs)
	}
}

// TestCloseEndsDemandRead closes a Reader while a ReadAt waits on the source.
func TestCloseEndsDemandRead(t *testing.T) {
	const bs = 1 << 12
	src := newSource(4*bs, 16)
	src.gate = make(chan struct{})
	defer close(src.gate)
	c := New(16*bs, bs)
	r := c.NewReader("blob", 4*bs, src.open)
	res := make(chan error)
	go func() {
		_, err := r.ReadAt(make([]byte, 10), 2*bs)
		res <- err
	}()
	waitFor(t, "the load to start", func() bool { return src.opens.Load() == 1 })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Errorf("ReadAt during Close: err = %v, want ErrClosed", err)
	}
	if n := streamsOpen(src); n != 0 {
		t.Errorf("%d streams left open", n)
	}
	if s := c.Stats(); s.Bytes != 0 {
		t.Errorf("held %d bytes, want 0", s.Bytes)
	}
}

// TestAbandonedLoadIsRetriedByOthers closes a Reader whose read-ahead another
// Reader of the same blob waits for: the waiter loads the block itself.
func TestAbandonedLoadIsRetriedByOthers(t *testing.T) {
	const bs = 1 << 12
	slow := newSource(4*bs, 13)
	slow.gate, slow.gateFrom = make(chan struct{}), bs
	defer close(slow.gate)
	fast := &source{data: slow.data}
	c := NewWithOptions(Options{Budget: 64 * bs, BlockSize: bs, ReadAhead: 1, MaxStreams: -1})
	a := c.NewReader("blob", 4*bs, slow.open)
	b := c.NewReader("blob", 4*bs, fast.open)
	defer b.Close()
	// a reads block 0 and starts reading block 1 ahead, which hangs.
	if _, err := a.ReadAt(make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 100)
	res := make(chan error)
	go func() {
		_, err := b.ReadAt(p, bs+50)
		res <- err
	}()
	waitFor(t, "b waiting on a's load", func() bool { return c.Stats().Waits == 1 })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("b.ReadAt after a closed: %v", err)
	}
	if !bytes.Equal(p, slow.data[bs+50:bs+150]) {
		t.Error("wrong data")
	}
	if n := fast.opens.Load(); n != 1 {
		t.Errorf("b opened %d streams, want 1", n)
	}
}

func TestReadersShareBlocks(t *testing.T) {
	const bs = 1 << 12
	src := newSource(2*bs, 14)
	c := New(8*bs, bs)
	r1 := c.NewReader("sha256:aaaa", 2*bs, src.open)
	r2 := c.NewReader("sha256:aaaa", 2*bs, src.open)
	other := newSource(2*bs, 15)
	r3 := c.NewReader("sha256:bbbb", 2*bs, other.open)
	for _, r := range []*Reader{r1, r2, r3} {
		defer r.Close()
	}
	p := make([]byte, 2*bs)
	for i, r := range []*Reader{r1, r2, r3} {
		want := src.data
		if r == r3 {
			want = other.data
		}
		if n, err := r.ReadAt(p, 0); n != len(p) || err != nil || !bytes.Equal(p, want) {
			t.Fatalf("reader %d: %d, %v", i, n, err)
		}
	}
	// r2 found both blocks cached by r1; r3's blob is another key.
	if s := c.Stats(); s.Hits < 2 || s.Loads != 4 {
		t.Errorf("stats = %+v, want r2 to hit and 4 loads in all", s)
	}
}

// TestEvictedBlockStaysCountedWhilePinned evicts a block a reader is still
// copying from: its bytes stay counted against the budget, and its buffer is
// not reused, until the reader lets go.
func TestEvictedBlockStaysCountedWhilePinned(t *testing.T) {
	const bs = 1 << 10
	src := newSource(8*bs, 17)
	c := NewWithOptions(Options{Budget: 3 * bs, BlockSize: bs, ReadAhead: -1})
	r := c.NewReader("blob", 8*bs, src.open)
	defer r.Close()
	if _, err := r.ReadAt(make([]byte, 1), 0); err != nil {
		t.Fatal(err)
	}
	what, pinned, _, err := c.acquire(blockKey{"blob", 0}, bs)
	if err != nil || what != found {
		t.Fatalf("acquire of a cached block = %v, %v", what, err)
	}
	// Blocks 1-6 go through a budget of three blocks: block 0 is evicted
	// early, its buffer must not be handed to a later load.
	p := make([]byte, bs)
	for i := int64(1); i <= 6; i++ {
		if n, err := r.ReadAt(p, i*bs); n != bs || err != nil || !bytes.Equal(p, src.data[i*bs:(i+1)*bs]) {
			t.Fatalf("block %d: %d, %v", i, n, err)
		}
		if s := c.Stats(); s.Bytes > s.Budget {
			t.Fatalf("Bytes %d > Budget %d", s.Bytes, s.Budget)
		}
	}
	if !bytes.Equal(pinned.data, src.data[:bs]) {
		t.Fatal("a pinned block's buffer was reused")
	}
	s := c.Stats()
	if s.Bytes != 3*bs {
		t.Errorf("held %d bytes, want %d (2 cached blocks and the pinned one)", s.Bytes, 3*bs)
	}
	c.unpin(pinned)
	if s := c.Stats(); s.Bytes != 2*bs {
		t.Errorf("after unpin: held %d bytes, want %d", s.Bytes, 2*bs)
	}
}

// TestReadAheadRestartsAndSpans checks that a second pass from offset 0
// reads ahead again, and that one read spanning several blocks loads them
// in parallel.
func TestReadAheadRestartsAndSpans(t *testing.T) {
	const bs = 1 << 10
	const blocks = 40
	src := newSource(blocks*bs, 18)
	c := NewWithOptions(Options{Budget: 8 * bs, BlockSize: bs, ReadAhead: 4})
	r := c.NewReader("blob", blocks*bs, src.open)
	defer r.Close()
	p := make([]byte, bs/4)
	for pass := range 2 {
		before := c.Stats()
		for off := 0; off < blocks*bs; off += len(p) {
			if _, err := r.ReadAt(p, int64(off)); err != nil {
				t.Fatal(err)
			}
		}
		if s := c.Stats(); s.Misses-before.Misses > 1 {
			t.Errorf("pass %d: %d misses, want at most 1", pass, s.Misses-before.Misses)
		}
	}
	// One read of four blocks elsewhere, not sequential: the first is a
	// miss, the other three are loaded in parallel (the cache holds none of
	// them: the budget is 8 blocks and the pass ended at the last one).
	before := c.Stats()
	p = make([]byte, 4*bs)
	if n, err := r.ReadAt(p, 10*bs); n != len(p) || err != nil || !bytes.Equal(p, src.data[10*bs:14*bs]) {
		t.Fatalf("4-block read: %d, %v", n, err)
	}
	s := c.Stats()
	if s.Misses-before.Misses != 1 || s.ReadAheads-before.ReadAheads != 3 {
		t.Errorf("4-block read: %d misses (want 1), %d read-aheads (want 3)", s.Misses-before.Misses, s.ReadAheads-before.ReadAheads)
	}
}

func TestPermanentErrorIsNotRetried(t *testing.T) {
	const bs = 1 << 10
	src := newSource(2*bs, 19)
	c := NewWithOptions(Options{
		Budget: 8 * bs, BlockSize: bs, ReadAhead: -1, RetryDelay: -1,
		Retryable: func(err error) bool { return !errors.Is(err, errInjected) },
	})
	r := c.NewReader("blob", 2*bs, src.open)
	defer r.Close()
	src.failOpens.Store(1)
	_, err := r.ReadAt(make([]byte, 10), 0)
	if !errors.Is(err, errInjected) {
		t.Fatalf("err = %v, want errInjected", err)
	}
	if s := c.Stats(); s.Retries != 0 {
		t.Errorf("retries = %d, want 0 for a permanent error", s.Retries)
	}
	if n, err := r.ReadAt(make([]byte, 10), 0); n != 10 || err != nil {
		t.Errorf("next read: %d, %v", n, err)
	}
}

// TestPrefault: the prefaulted buffers are made up front, counted in the
// budget only once a load takes them, taken by the first full-block loads
// (a short last block gets a buffer of its own), and loads that find none
// left allocate as before. The bytes read are right either way.
func TestPrefault(t *testing.T) {
	const bs = 4096
	src := newSource(3*bs+100, 7)
	c := NewWithOptions(Options{Budget: 16 * bs, BlockSize: bs, ReadAhead: -1, Prefault: 2})
	warm := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.warm)
	}
	if n := warm(); n != 2 {
		t.Fatalf("%d prefaulted buffers, want 2", n)
	}
	if b := c.Stats().Bytes; b != 0 {
		t.Errorf("cache holds %d bytes before any load, want 0", b)
	}
	r := c.NewReader("blob", int64(len(src.data)), src.open)
	defer r.Close()
	got := make([]byte, len(src.data))
	for i, want := range []int{2, 1, 1, 0, 0} {
		// Blocks 3 (short), 0, 3 again (cached), 1, 2: only full
		// blocks take prefaulted buffers.
		idx := []int64{3, 0, 3, 1, 2}[i]
		off := idx * bs
		end := min(off+bs, int64(len(src.data)))
		if n, err := r.ReadAt(got[off:end], off); n != int(end-off) || (err != nil && err != io.EOF) {
			t.Fatalf("read of block %d: %d bytes, %v", idx, n, err)
		}
		if n := warm(); n != want {
			t.Errorf("after reading block %d: %d prefaulted buffers left, want %d", idx, n, want)
		}
	}
	if !bytes.Equal(got, src.data) {
		t.Error("reads through prefaulted buffers return wrong bytes")
	}
	if b := c.Stats().Bytes; b != int64(len(src.data)) {
		t.Errorf("cache holds %d bytes after loading every block, want %d", b, len(src.data))
	}
}

// TestForget: once a blob is forgotten (deleted from storage), neither its
// cached blocks nor a Reader's kept stream serve its bytes: a read goes to
// the source, which no longer has it. Other blobs stay cached.
func TestForget(t *testing.T) {
	const bs = 16
	gone := newSource(4*bs, 1)
	kept := newSource(4*bs, 2)
	c := NewWithOptions(Options{Budget: 1 << 20, BlockSize: bs, ReadAhead: -1, RetryDelay: -1})
	rg := c.NewReader("sha256:gone@64", 64, gone.open)
	defer rg.Close()
	rk := c.NewReader("sha256:kept@64", 64, kept.open)
	defer rk.Close()
	buf := make([]byte, bs)
	for _, r := range []*Reader{rg, rk} {
		if _, err := r.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	// The blob's data is deleted: every open of it fails from now on.
	gone.failOpens.Store(1 << 30)
	if n := c.Forget("sha256:gone@"); n != 1 {
		t.Fatalf("Forget dropped %d blocks, want 1", n)
	}
	if _, err := rg.ReadAt(buf, 0); !errors.Is(err, errInjected) {
		t.Fatalf("cached block of a forgotten blob: err %v, want the source's failure", err)
	}
	// Block 1 would come from the stream kept after block 0.
	if _, err := rg.ReadAt(buf, bs); !errors.Is(err, errInjected) {
		t.Fatalf("kept stream of a forgotten blob: err %v, want the source's failure", err)
	}
	opens := kept.opens.Load()
	if _, err := rk.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, kept.data[:bs]) {
		t.Fatalf("other blob: %v", err)
	}
	if kept.opens.Load() != opens {
		t.Fatal("another blob's cached block was dropped")
	}
	if s := c.Stats(); s.Forgotten != 1 || s.Bytes != bs {
		t.Fatalf("stats after Forget: %+v", s)
	}
}
