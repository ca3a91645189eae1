package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/regfs/regfs/driver"
)

// Reader reads one blob through its Cache. ReadAt is safe for concurrent
// use; Close stops its read-ahead and closes its lower streams.
type Reader struct {
	c    *Cache
	key  string
	size int64
	open OpenFunc

	// ctx is cancelled by Close; lower streams are opened under it.
	ctx    context.Context
	cancel context.CancelFunc
	// readAheads tracks the read-ahead goroutines and the loads finishing
	// in the background after loadFirst, so Close can wait.
	readAheads sync.WaitGroup

	mu sync.Mutex
	// closed is set by Close; guarded by mu.
	closed bool
	// streams are the idle lower streams, least recently used first;
	// guarded by mu.
	streams []*stream
	// lastEnd is the end of the furthest read of the current sequential
	// run, or -1 before the first read; guarded by mu.
	lastEnd int64
	// raNext is the first block index read-ahead has not yet covered in
	// the current sequential run; guarded by mu.
	raNext int64
	// raInFlight counts this Reader's read-ahead loads; guarded by mu.
	raInFlight int
	// raTo is the last block index the current run reads ahead to;
	// guarded by mu.
	raTo int64
	// raWindow is how many blocks past the furthest one read the current
	// run reads ahead, with Options.Ranged (which grows it); guarded by mu.
	raWindow int64
}

// stream is an open lower stream positioned at pos.
type stream struct {
	rc  io.ReadCloser
	pos int64
	// forgets is the Cache's count of Forget calls when rc was opened.
	forgets int64
}

// NewReader returns a Reader of the blob named key (its digest), size bytes
// long, whose bytes open streams. Readers of the same key share blocks, so
// key must name immutable content.
func (c *Cache) NewReader(key string, size int64, open OpenFunc) *Reader {
	ctx, cancel := context.WithCancel(context.Background())
	return &Reader{
		c:       c,
		key:     key,
		size:    max(size, 0),
		open:    open,
		ctx:     ctx,
		cancel:  cancel,
		lastEnd: -1,
	}
}

// Size returns the size of the blob.
func (r *Reader) Size() int64 { return r.size }

// ReadAt reads len(p) bytes at off, following the io.ReaderAt contract: it
// returns fewer only at the end of the blob, with io.EOF, or with an error.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	n, _, err := r.readAt(p, off, false)
	return n, err
}

// Lend reads len(p) bytes at off as ReadAt does, except that when they lie
// in one block that is cached (or that another read is loading) it copies
// nothing: it returns the block's own bytes, which the cache neither
// reuses nor overwrites until done is called, even if the block leaves the
// cache meanwhile (its memory is then no longer counted in the budget).
// Otherwise it returns the bytes read into p, and done is nil. The bytes
// returned must not be written to.
//
// regfs answers FUSE reads with it: the FUSE library copies the answer
// into a message of its own after the handler returned, so a copy into p
// would be a second one.
func (r *Reader) Lend(p []byte, off int64) (data []byte, done func(), err error) {
	n, b, err := r.readAt(p, off, true)
	if b == nil {
		return p[:n], nil, err
	}
	done = r.c.lend(b)
	r.c.unpin(b)
	within := off % int64(r.c.blockSize)
	return b.data[within : within+int64(n)], done, err
}

// readAt is ReadAt, and Lend when lend is set: it then returns the block
// whose bytes it read, pinned, instead of copying them, when they lie in
// one block that it did not read early or straight from the source.
func (r *Reader) readAt(p []byte, off int64, lend bool) (int, *block, error) {
	if off < 0 {
		return 0, nil, ErrNegativeOffset
	}
	if off >= r.size {
		if r.isClosed() {
			return 0, nil, ErrClosed
		}
		return 0, nil, io.EOF
	}
	var atEOF error
	if rest := r.size - off; int64(len(p)) > rest {
		p = p[:rest]
		atEOF = io.EOF
	}
	if len(p) == 0 {
		return 0, nil, nil
	}
	if r.c.ranged {
		// On a remote source the blocks of this read load first, then the
		// ones ahead: started together, they would share the bandwidth,
		// and the first byte of a fresh sequential read would wait for
		// all of them.
		if r.isClosed() {
			return 0, nil, ErrClosed
		}
		n, b, err := r.readBlocks(p, off, lend)
		if err != nil {
			return n, nil, err
		}
		_ = r.access(off, off+int64(len(p))) // ErrClosed: the bytes are read
		return n, b, atEOF
	}
	if err := r.access(off, off+int64(len(p))); err != nil {
		return 0, nil, err
	}
	n, b, err := r.readBlocks(p, off, lend)
	if err != nil {
		return n, nil, err
	}
	return n, b, atEOF
}

// readBlocks copies len(p) bytes at off from the blocks that hold them;
// with lend, when they lie in one block, it may return that block pinned
// instead (see readBlock).
func (r *Reader) readBlocks(p []byte, off int64, lend bool) (int, *block, error) {
	bs := int64(r.c.blockSize)
	if lend && off/bs == (off+int64(len(p))-1)/bs {
		idx := off / bs
		return r.readBlock(p, idx, off-idx*bs, true)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		idx := pos / bs
		m, _, err := r.readBlock(p[n:], idx, pos-idx*bs, false)
		n += m
		if err != nil {
			return n, nil, err
		}
	}
	return n, nil, nil
}

// readBlock copies into dst what block idx holds from offset within on, and
// returns how many bytes it copied. With lend it copies nothing from a
// block it got whole: it returns the block, pinned, and how many of its
// bytes are the read's.
func (r *Reader) readBlock(dst []byte, idx, within int64, lend bool) (int, *block, error) {
	bk := blockKey{r.key, idx}
	n := r.blockLen(idx)
	what, b, ld, err := r.c.acquire(bk, n)
	switch {
	case err != nil:
		return 0, nil, err
	case what == uncached:
		m := min(len(dst), n-int(within))
		if err := r.fill(dst[:m], idx*int64(r.c.blockSize)+within); err != nil {
			return 0, nil, err
		}
		return m, nil, nil
	case what == mustLoad && r.c.ranged:
		if m, ok, err := r.loadFirst(dst, bk, ld, n, within); ok || err != nil {
			return m, nil, err
		}
		fallthrough
	case what == mustLoad:
		b, err = r.load(bk, ld, n, 1)
		if err != nil {
			return 0, nil, err
		}
	}
	if lend {
		return min(len(dst), len(b.data)-int(within)), b, nil
	}
	m := copy(dst, b.data[within:])
	r.c.unpin(b)
	return m, nil, nil
}

// load runs the load ld of block bk (n bytes) and finishes it, leaving the
// block pinned pins times for the caller.
func (r *Reader) load(bk blockKey, ld *load, n, pins int) (*block, error) {
	data := newBuf(ld, n)
	err := r.fill(data, bk.idx*int64(r.c.blockSize))
	abandoned := errors.Is(err, ErrClosed)
	b := r.c.finish(bk, ld, n, data, err, abandoned, pins)
	return b, err
}

// loadFirst runs the load ld of block bk (n bytes) for a demand read of
// dst from offset within on (Options.Ranged): it returns the read's bytes
// as soon as they have arrived and lets the rest of the block arrive in
// the background, so a large block costs the first byte nothing. It
// reports false, having done nothing, when the read needs the block to its
// end or the Reader is closed; the caller then loads the block as usual.
// A failure of the first bytes' request falls back to the usual load, with
// its retries.
func (r *Reader) loadFirst(dst []byte, bk blockKey, ld *load, n int, within int64) (int, bool, error) {
	m := min(len(dst), n-int(within))
	need := int(within) + m
	if need == n || r.isClosed() {
		return 0, false, nil
	}
	off := bk.idx * int64(r.c.blockSize)
	data := newBuf(ld, n)
	r.c.opens.Add(1)
	rc, err := r.open(driver.WithReadLength(r.ctx, int64(n)), off)
	if err == nil {
		if _, err = io.ReadFull(rc, data[:need]); err != nil {
			rc.Close()
		}
	}
	if err != nil {
		err = r.fill(data, off)
		b := r.c.finish(bk, ld, n, data, err, errors.Is(err, ErrClosed), 1)
		if err != nil {
			return 0, true, err
		}
		copy(dst[:m], b.data[within:])
		r.c.unpin(b)
		return m, true, nil
	}
	copy(dst[:m], data[within:need])
	rest := func() {
		_, err := io.ReadFull(rc, data[need:])
		rc.Close()
		if err != nil {
			err = r.fill(data[need:], off+int64(need))
		}
		r.c.finish(bk, ld, n, data, err, errors.Is(err, ErrClosed), 0)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		rest() // ends at once: the stream's context is cancelled
		return m, true, nil
	}
	r.readAheads.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.readAheads.Done()
		rest()
	}()
	return m, true, nil
}

// blockLen is the length of block idx: the last block of a blob is short.
func (r *Reader) blockLen(idx int64) int {
	bs := int64(r.c.blockSize)
	return int(min(bs, r.size-idx*bs))
}

// isClosed reports whether Close was called.
func (r *Reader) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// access notes a read of [off, end) for sequential detection and starts
// read-ahead when reads walk forward. A read near the end of the previous
// reads continues a run (FUSE sends a sequential pass as requests that
// arrive concurrently and slightly out of order); a read at 0 starts one.
// The blocks of a read spanning several are loaded in parallel in any case.
func (r *Reader) access(off, end int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	bs := int64(r.c.blockSize)
	slack := 2 * bs
	near := r.lastEnd >= 0 && off >= r.lastEnd-slack && off <= r.lastEnd+slack
	if near {
		if r.c.ranged && (end-1)/bs > (r.lastEnd-1)/bs {
			// The run entered a new block: widen the window.
			r.raWindow = min(2*r.raWindow, int64(r.c.readAhead))
		}
		r.lastEnd = max(r.lastEnd, end)
	} else {
		// A new run starts here; one from the start reads ahead at once.
		r.lastEnd = end
		r.raNext = 0
		r.raWindow = min(1, int64(r.c.readAhead))
	}
	if r.c.readAhead == 0 {
		return nil
	}
	first, last := off/bs, (end-1)/bs
	to := last // the blocks after the first one of this read are needed now
	if near || off == 0 {
		if r.c.ranged {
			to = min((r.lastEnd-1)/bs+r.raWindow, (r.size-1)/bs)
		} else {
			to = min(last+int64(r.c.readAhead), (r.size-1)/bs)
		}
		// Make the blocks of this read the most recent, so that making room
		// for the blocks ahead evicts blocks behind the reader, not these.
		r.c.touch(r.key, first, last)
	}
	r.raNext = max(r.raNext, first+1)
	r.raTo = to
	r.startAhead()
	return nil
}

// startAhead starts read-ahead loads of the blocks from raNext to raTo,
// with Options.Ranged while fewer than Options.AheadLoads are in flight
// (without it, as before the cap: every block of the window at once); r.mu
// is held.
func (r *Reader) startAhead() {
	i := r.raNext
	for ; i <= r.raTo && (!r.c.ranged || r.raInFlight < r.c.aheadLoads); i++ {
		bk := blockKey{r.key, i}
		n := r.blockLen(i)
		ld, ok := r.c.tryReadAhead(bk, n)
		if !ok {
			break
		}
		if ld != nil {
			r.raInFlight++
			r.readAheads.Add(1)
			go r.readAhead(bk, ld, n)
		}
	}
	r.raNext = i
}

// readAhead runs a read-ahead load.
func (r *Reader) readAhead(bk blockKey, ld *load, n int) {
	defer r.readAheads.Done()
	_, err := r.load(bk, ld, n, 0) // a failure is seen by waiters, or by a later demand load
	r.mu.Lock()
	r.raInFlight--
	if r.c.ranged && err == nil && !r.closed {
		// The window may hold more blocks than loads in flight: the next
		// one starts now, not when the reader next moves.
		r.startAhead()
	}
	r.mu.Unlock()
}

// fill reads len(dst) bytes at off from the source, retrying transient
// failures a bounded number of times with a short, growing backoff. Once the
// Reader is closed it stops with ErrClosed.
func (r *Reader) fill(dst []byte, off int64) error {
	delay := r.c.retryDelay
	var err error
	for attempt := 0; attempt < r.c.attempts; attempt++ {
		if attempt > 0 {
			r.c.retries.Add(1)
			if delay > 0 {
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-r.ctx.Done():
					t.Stop()
					return ErrClosed
				}
				delay *= 2
			}
		}
		if err = r.fillOnce(dst, off); err == nil {
			return nil
		}
		if r.ctx.Err() != nil {
			return ErrClosed
		}
		if r.c.retryable != nil && !r.c.retryable(err) {
			break
		}
	}
	return fmt.Errorf("cache: read %d bytes of %s at %d: %w", len(dst), r.key, off, err)
}

// fillOnce reads len(dst) bytes at off through a kept stream or a new one.
// A stream that ends early is an io.ErrUnexpectedEOF and is dropped.
func (r *Reader) fillOnce(dst []byte, off int64) error {
	if r.c.ranged {
		return r.fillRange(dst, off)
	}
	s, err := r.takeStream(off)
	if err != nil {
		return err
	}
	n, err := io.ReadFull(s.rc, dst)
	s.pos += int64(n)
	if err != nil {
		s.rc.Close()
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	r.putStream(s)
	return nil
}

// fillRange reads len(dst) bytes at off through a stream of just those
// bytes (Options.Ranged), closed at their end.
func (r *Reader) fillRange(dst []byte, off int64) error {
	r.c.opens.Add(1)
	rc, err := r.open(driver.WithReadLength(r.ctx, int64(len(dst))), off)
	if err != nil {
		return err
	}
	_, err = io.ReadFull(rc, dst)
	rc.Close()
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// takeStream returns a stream positioned at off: a kept one at off or a
// little before it (skipping a gap nobody else loads), else a newly opened
// one. The stream
// is the caller's until it hands it back with putStream.
func (r *Reader) takeStream(off int64) (*stream, error) {
	r.mu.Lock()
	var stale []*stream
	if f := r.c.forgets.Load(); len(r.streams) > 0 {
		// A blob forgotten since a stream was opened may be this one: the
		// stream may read bytes deleted from storage. Drop it.
		kept := r.streams[:0]
		for _, s := range r.streams {
			if s.forgets == f {
				kept = append(kept, s)
			} else {
				stale = append(stale, s)
			}
		}
		r.streams = kept
	}
	best := -1
	for i, s := range r.streams {
		if s.pos <= off && off-s.pos <= r.c.maxSkip && (best < 0 || s.pos > r.streams[best].pos) {
			best = i
		}
	}
	var s *stream
	if best >= 0 {
		s = r.streams[best]
		r.streams = append(r.streams[:best], r.streams[best+1:]...)
	}
	r.mu.Unlock()
	for _, s := range stale {
		s.rc.Close()
	}
	if s != nil && s.pos < off && r.c.present(blockKey{r.key, s.pos / int64(r.c.blockSize)}) {
		// The gap is cached or being loaded by a parallel read-ahead:
		// discarding it would fetch it twice. Keep the stream for later.
		r.putStream(s)
		s = nil
	}
	if s != nil {
		if gap := off - s.pos; gap > 0 {
			if _, err := io.CopyN(io.Discard, s.rc, gap); err != nil {
				s.rc.Close()
				s = nil
			} else {
				s.pos = off
			}
		}
		if s != nil {
			return s, nil
		}
	}
	r.c.opens.Add(1)
	forgets := r.c.forgets.Load()
	rc, err := r.open(r.ctx, off)
	if err != nil {
		return nil, err
	}
	return &stream{rc: rc, pos: off, forgets: forgets}, nil
}

// putStream keeps s for a later load, closing the least recently used
// stream beyond the limit, or s itself once the Reader is closed or at EOF.
func (r *Reader) putStream(s *stream) {
	r.mu.Lock()
	if r.closed || r.c.maxStreams == 0 || s.pos >= r.size {
		r.mu.Unlock()
		s.rc.Close()
		return
	}
	r.streams = append(r.streams, s)
	var drop *stream
	if len(r.streams) > r.c.maxStreams {
		drop = r.streams[0]
		r.streams = append(r.streams[:0], r.streams[1:]...)
	}
	r.mu.Unlock()
	if drop != nil {
		drop.rc.Close()
	}
}

// Close stops read-ahead, waits for its loads to end and closes the kept
// streams. Reads in flight end with ErrClosed or their data; later reads
// return ErrClosed. Closing twice is harmless.
func (r *Reader) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	streams := r.streams
	r.streams = nil
	r.mu.Unlock()
	r.cancel()
	r.readAheads.Wait()
	var errs []error
	for _, s := range streams {
		errs = append(errs, s.rc.Close())
	}
	return errors.Join(errs...)
}
