package remote

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// Block loads of one sequential reader share GETs. The cache loads each
// block with a ranged GET of just that block (cache.Options.Ranged), and a
// registry pays for every request: docker-registry spent 0.4 s of CPU
// sending a 1 GiB blob in one GET and 0.6 s sending it in 16 MiB ranges
// (docs/benchmarks.md, "Remote registry (issue 18)"). So once a reader's
// loads walk forward (a load starts where an earlier GET of the same open
// file ended), a GET asks for the rest of an aligned span of streamSpan
// loads, and the loads of the span take their bytes from it in turn: a
// load whose bytes the stream has not reached waits for the loads before
// it; one past a gap that no load waits for (a block another reader
// loaded) skips it. A load elsewhere (a random read) gets a GET of exactly
// its bytes, as before.
const (
	// streamSpan is how many loads' bytes a sequential reader's GET asks
	// for.
	streamSpan = 4
	// streamIdle is how long an idle stream is kept for the next load; an
	// older one is closed (the registry, or the call's idle timer, may
	// have ended it).
	streamIdle = time.Second
)

// blobStreams are the GETs in progress of one open blob (one cache
// Reader), positioned between loads.
type blobStreams struct {
	// get makes a GET of [off, end) of the blob.
	get func(ctx context.Context, off, end int64) (io.ReadCloser, error)

	mu      sync.Mutex
	streams []*blobStream // guarded by mu
	// ended are the ends of the GETs made, for telling a sequential load
	// from a random one; guarded by mu.
	ended []int64
	// closed is set once the reader's context ends; guarded by mu.
	closed bool
	// waiting counts the loads waiting for a stream, by offset; guarded
	// by mu.
	waiting map[int64]int
	// changed is closed (and replaced) whenever a stream is taken, handed
	// back or dropped; guarded by mu.
	changed chan struct{}
}

// blobStream is one GET: a body whose bytes up to next are taken (read,
// or being read by the load holding it), ending at end.
type blobStream struct {
	body  io.ReadCloser
	start int64
	next  int64
	end   int64
	// busy is set while a load holds the stream.
	busy bool
	// idleSince is when the stream was last handed back.
	idleSince time.Time
}

// newBlobStreams returns the streams of one open blob; ctx is the Reader's
// (cancelled when it closes, which closes the idle streams).
func newBlobStreams(ctx context.Context, get func(ctx context.Context, off, end int64) (io.ReadCloser, error)) *blobStreams {
	bs := &blobStreams{get: get, waiting: map[int64]int{}, changed: make(chan struct{})}
	context.AfterFunc(ctx, bs.closeAll)
	return bs
}

// closeAll closes the idle streams and keeps no more.
func (bs *blobStreams) closeAll() {
	bs.mu.Lock()
	bs.closed = true
	var idle []*blobStream
	kept := bs.streams[:0]
	for _, s := range bs.streams {
		if !s.busy {
			idle = append(idle, s)
		} else {
			kept = append(kept, s)
		}
	}
	bs.streams = kept
	bs.signal()
	bs.mu.Unlock()
	for _, s := range idle {
		s.body.Close()
	}
}

// open returns a reader of the n bytes at off: a part of a stream in
// progress, or of a new GET.
func (bs *blobStreams) open(ctx context.Context, off, n, size int64) (io.ReadCloser, error) {
	waiting := false
	// A load waits for the others at most streamIdle, then makes its own
	// GET: whatever the order of the loads, each makes progress.
	giveUp := time.NewTimer(streamIdle)
	defer giveUp.Stop()
	defer func() {
		if waiting {
			bs.mu.Lock()
			bs.unwait(off)
			bs.signal()
			bs.mu.Unlock()
		}
	}()
	for {
		bs.mu.Lock()
		var s *blobStream
		for _, c := range bs.streams {
			if c.next <= off && off+n <= c.end {
				s = c
				break
			}
		}
		if s == nil || bs.closed || !s.busy && off-s.next > streamSpan*n {
			break
		}
		if s.busy || bs.waitingBefore(s.next, off) {
			// The stream is another load's, or will be: wait for it.
			changed := bs.changed
			if !waiting {
				waiting = true
				bs.waiting[off]++
			}
			bs.mu.Unlock()
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-giveUp.C:
				return bs.get(ctx, off, off+n)
			}
		}
		if time.Since(s.idleSince) > streamIdle {
			bs.remove(s)
			bs.signal()
			bs.mu.Unlock()
			s.body.Close()
			continue
		}
		gap := off - s.next
		s.next = off + n
		s.busy = true
		bs.signal()
		bs.mu.Unlock()
		return &streamPart{bs: bs, s: s, skip: gap, left: n}, nil
	}
	// A new GET: for a sequential load, its span of loads (from where the
	// GETs before it end, for the loads before this one that have not
	// come yet, to short of the next stream); else just these bytes.
	start, end := off, off+n
	if bs.sequential(off, n) {
		g := streamSpan * n
		start = off / g * g
		end = max(off+n, min(size, start+g))
		for _, e := range bs.ended {
			if e <= off {
				start = max(start, e)
			}
		}
		for _, c := range bs.streams {
			if c.end <= off {
				start = max(start, c.end)
			}
			if c.start > off && c.start < end {
				end = max(off+n, c.start)
			}
		}
	}
	bs.noteEnd(end)
	if start == off && end == off+n || bs.closed {
		bs.mu.Unlock()
		return bs.get(ctx, off, end)
	}
	// The stream is listed before its GET is made, so that the loads of
	// its span wait for it instead of making their own.
	s := &blobStream{start: start, next: start, end: end, busy: true}
	bs.streams = append(bs.streams, s)
	bs.signal()
	bs.mu.Unlock()
	body, err := bs.get(ctx, start, end)
	bs.mu.Lock()
	if err != nil {
		bs.remove(s)
		bs.signal()
		bs.mu.Unlock()
		return nil, err
	}
	s.body = body
	if start == off {
		s.next = off + n
		bs.mu.Unlock()
		return &streamPart{bs: bs, s: s, left: n}, nil
	}
	// The loads before this one take their bytes first; this one waits
	// for them as any other.
	s.busy, s.idleSince = false, time.Now()
	bs.signal()
	bs.mu.Unlock()
	return bs.open(ctx, off, n, size)
}

// waitingBefore tells whether a load waits for bytes in [from, to); bs.mu
// is held.
func (bs *blobStreams) waitingBefore(from, to int64) bool {
	for o := range bs.waiting {
		if o >= from && o < to {
			return true
		}
	}
	return false
}

// unwait removes a waiter at off; bs.mu is held.
func (bs *blobStreams) unwait(off int64) {
	if bs.waiting[off]--; bs.waiting[off] <= 0 {
		delete(bs.waiting, off)
	}
}

// signal wakes the waiting loads; bs.mu is held.
func (bs *blobStreams) signal() {
	close(bs.changed)
	bs.changed = make(chan struct{})
}

// sequential tells whether a load of n bytes at off continues a run: an
// earlier GET ended at most a span before off. bs.mu is held.
func (bs *blobStreams) sequential(off, n int64) bool {
	for _, e := range bs.ended {
		if e <= off && off-e <= streamSpan*n {
			return true
		}
	}
	return false
}

// noteEnd records where a GET ends (the last few); bs.mu is held.
func (bs *blobStreams) noteEnd(end int64) {
	if len(bs.ended) == 8 {
		bs.ended = append(bs.ended[:0], bs.ended[1:]...)
	}
	bs.ended = append(bs.ended, end)
}

// remove drops s from the streams; bs.mu is held.
func (bs *blobStreams) remove(s *blobStream) {
	for i, c := range bs.streams {
		if c == s {
			bs.streams = append(bs.streams[:i], bs.streams[i+1:]...)
			return
		}
	}
}

// release hands s back after a load: kept for the next load when the load
// read all its bytes and the stream has more, else closed.
func (bs *blobStreams) release(s *blobStream, ok bool) {
	bs.mu.Lock()
	keep := ok && s.next < s.end && !bs.closed
	if !keep {
		bs.remove(s)
	}
	s.busy = false
	s.idleSince = time.Now()
	bs.signal()
	bs.mu.Unlock()
	if !keep {
		s.body.Close()
	}
}

// streamPart is a load's part of a stream: skip bytes to discard, then
// left bytes to read.
type streamPart struct {
	bs   *blobStreams
	s    *blobStream
	skip int64
	left int64
	err  error
	done bool
}

func (p *streamPart) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.skip > 0 {
		if _, err := io.CopyN(io.Discard, p.s.body, p.skip); err != nil {
			p.err = noEOF(err)
			return 0, p.err
		}
		p.skip = 0
	}
	if p.left == 0 {
		return 0, io.EOF
	}
	n, err := p.s.body.Read(b[:min(int64(len(b)), p.left)])
	p.left -= int64(n)
	if p.left == 0 {
		return n, nil
	}
	if err != nil {
		p.err = noEOF(err)
	}
	return n, p.err
}

// noEOF makes a stream that ends before its span an unexpected EOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Close hands the stream back: to the next load when this one read all of
// its bytes, else it is closed.
func (p *streamPart) Close() error {
	if !p.done {
		p.done = true
		p.bs.release(p.s, p.left == 0 && p.skip == 0 && p.err == nil)
	}
	return nil
}
