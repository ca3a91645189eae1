package cache

import (
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Defaults used by New and by NewWithOptions for zero fields.
const (
	// DefaultBlockSize is the block size when none is given: large enough that
	// one S3 request per block is cheap relative to its transfer time, small
	// enough that a random 4 KiB read does not pull in much more than needed.
	DefaultBlockSize = 1 << 20
	// DefaultReadAhead is the number of blocks loaded ahead of a sequential
	// reader.
	DefaultReadAhead = 4
	// DefaultMaxStreams is the number of idle lower streams a Reader keeps.
	DefaultMaxStreams = 3
	// DefaultAttempts is how many times a block load is tried before its
	// error is returned.
	DefaultAttempts = 3
	// DefaultRetryDelay is the backoff before the second attempt; it doubles
	// for each further attempt.
	DefaultRetryDelay = 10 * time.Millisecond
)

// ErrClosed is returned by ReadAt on a Reader that was closed.
var ErrClosed = errors.New("cache: reader closed")

// ErrNegativeOffset is returned by ReadAt for an offset below zero.
var ErrNegativeOffset = errors.New("cache: negative offset")

// OpenFunc streams the object from offset to its end. The context is
// cancelled when the Reader that called it is closed.
type OpenFunc func(ctx context.Context, offset int64) (io.ReadCloser, error)

// Options configure a Cache. Zero fields take the defaults above.
type Options struct {
	// Budget is the most bytes the cache holds at any time, counting cached
	// blocks, blocks being loaded and blocks evicted while a reader still
	// copies from them. Zero or negative: nothing is cached and every read
	// goes straight to the source.
	Budget int64
	// BlockSize is the size of a block in bytes (DefaultBlockSize if <= 0).
	BlockSize int
	// ReadAhead is the number of blocks loaded ahead of a sequential reader
	// (DefaultReadAhead if 0, none if negative).
	ReadAhead int
	// MaxStreams is the number of idle lower streams kept per Reader
	// (DefaultMaxStreams if 0, none kept if negative).
	MaxStreams int
	// MaxSkip is the largest forward gap a kept stream skips by reading and
	// discarding instead of reopening (BlockSize if 0, never if negative).
	MaxSkip int64
	// Attempts is how many times a failing block load is tried
	// (DefaultAttempts if <= 0).
	Attempts int
	// RetryDelay is the backoff before the second attempt, doubled after
	// each further one (DefaultRetryDelay if 0, none if negative).
	RetryDelay time.Duration
	// Retryable, when set, tells transient errors from permanent ones (a
	// blob that was deleted), which fail at once. Nil retries every error.
	Retryable func(error) bool
	// Ranged makes every load open a stream of exactly the bytes it
	// loads, asking the source for them with driver.WithReadLength, and
	// close it at their end; no stream is kept. For a remote source (S3)
	// where a stream is a request: a bounded range is read to its end, so
	// the connection serves the next request, and the server sends nothing
	// that is not read. A read's own blocks then load before its
	// read-ahead starts, a read that loads its block returns as soon as
	// its own bytes are in (the rest arrives in the background), and the
	// read-ahead window grows with the run: one
	// block ahead when a run starts, twice as many each time the reader
	// enters a new block, up to ReadAhead, so a short read (a file's
	// header) does not fetch ReadAhead blocks nobody reads. Without it,
	// streams run to the end of the blob and are kept for the next load
	// (best for local files).
	Ranged bool
	// AheadLoads is, with Ranged, the most read-ahead loads one Reader
	// keeps in flight (ReadAhead if <= 0); without Ranged every block of
	// the read-ahead is started at once, as local reads always were.
	// With Ranged, ReadAhead may exceed it: the
	// blocks ahead are then a window in which a load that ends starts
	// the next one at once, so a slow load does not hold back the others.
	AheadLoads int
	// Prefault is the number of full-size block buffers allocated and
	// written to up front, for the first loads of the process: a fresh
	// buffer takes a page fault per 4 KiB on its first fill, which on a
	// VM made the first 1 MiB load of a new mount take 2-3 ms instead of
	// 0.2. They count in the budget only once a load takes them.
	Prefault int
}

// Stats are counters of a Cache since New. Hits, Misses, Waits and
// Uncached count demand lookups of one block by ReadAt.
type Stats struct {
	// Hits found the block cached.
	Hits int64
	// Misses found the block neither cached nor loading, so the reader
	// loaded it (or read it uncached).
	Misses int64
	// Loads counts block loads started, by demand or read-ahead.
	Loads int64
	// Evictions counts blocks dropped to make room.
	Evictions int64
	// ReadAheads counts the loads started by read-ahead.
	ReadAheads int64
	// Bytes is what the cache holds now: cached blocks, loads in flight,
	// evicted blocks still being copied from, and bytes charged (Charged).
	Bytes int64
	// Charged is the part of Bytes held outside the cache and charged to
	// its budget by Charge.
	Charged int64
	// MaxBytes is the high-water mark of Bytes; it never exceeds Budget.
	MaxBytes int64
	// Budget is the configured budget.
	Budget int64

	// Waits found the block being loaded by someone else and waited for it
	// (single flight).
	Waits int64
	// Uncached counts misses read straight into the caller's buffer because
	// the budget was taken by loads in flight.
	Uncached int64
	// LoadErrors counts block loads that failed after every attempt.
	LoadErrors int64
	// Retries counts load attempts after the first.
	Retries int64
	// Opens counts calls of an OpenFunc (lower streams opened).
	Opens int64
	// Forgotten counts the cached blocks dropped by Forget.
	Forgotten int64
	// Lends counts the reads answered with a loan of a block's bytes
	// (Reader.Lend); Loans is the number of those not yet ended.
	Lends, Loans int64
}

// Cache is one global, byte-budgeted cache of fixed-size blocks of immutable
// blobs, shared by every Reader made from it. It is safe for concurrent use.
type Cache struct {
	blockSize  int
	budget     int64
	readAhead  int
	aheadLoads int
	maxStreams int
	maxSkip    int64
	attempts   int
	retryDelay time.Duration
	retryable  func(error) bool
	ranged     bool

	mu sync.Mutex
	// lru holds the loaded blocks, most recently used first; guarded by mu.
	// Its entry limit is unreachable: eviction is by bytes, done by reserve.
	lru *simplelru.LRU[blockKey, *block]
	// loads are the loads in flight, one per block; guarded by mu.
	loads map[blockKey]*load
	// bytes is everything held (see Stats.Bytes); guarded by mu.
	bytes int64
	// loading is the part of bytes reserved by loads in flight; guarded by mu.
	loading int64
	// charged is the part of bytes charged by Charge; guarded by mu.
	charged int64
	// loans counts the loans not yet ended (Reader.Lend); guarded by mu.
	loans int64
	// stats are the counters kept under mu; Bytes and Budget are filled in
	// by Stats.
	stats Stats

	// opens and retries are counted outside mu, by the loaders.
	opens, retries atomic.Int64
	// forgets counts the calls of Forget: an idle lower stream opened
	// before the latest one may read a blob that is gone, so it is not
	// used again (see Reader.takeStream).
	forgets atomic.Int64

	// free holds buffers of full-size blocks that nothing references any
	// more (evicted and unpinned, or of a failed load), for the next loads,
	// so that a cache that turns its budget over neither allocates and
	// zeroes a block per load nor leaves the garbage collector and the
	// runtime's scavenger to free, return and fault in a block's worth of
	// memory per load. The cache holds them, so they count with the blocks:
	// bytes + freeBytes never exceed the budget (putBuf and takeBuf keep
	// it so); guarded by mu.
	free [][]byte
	// freeBytes is the size of free; guarded by mu.
	freeBytes int64
	// warm are the buffers Options.Prefault made, taken by loads before
	// any other; guarded by mu.
	warm [][]byte
}

// blockKey names block idx of the blob key.
type blockKey struct {
	key string
	idx int64
}

// block is a loaded block. Its data never changes once cached, so readers
// copy from it without holding the lock; pins says how many are doing so.
type block struct {
	data []byte
	// pins counts readers copying from data; guarded by Cache.mu.
	pins int
	// evicted is set when the block left the LRU while pinned: its bytes
	// stay counted until the last unpin; guarded by Cache.mu.
	evicted bool
	// loans counts the loans of its bytes (Reader.Lend) not yet ended;
	// guarded by Cache.mu.
	loans int
	// withheld is set when the block left the cache, uncounted, while
	// lent: its buffer goes back to the free list when the last loan
	// ends; guarded by Cache.mu.
	withheld bool
}

// load is one block load in flight; the goroutines that want the block
// meanwhile wait on done.
type load struct {
	done chan struct{}
	// waiters counts the goroutines waiting on done; guarded by Cache.mu.
	waiters int
	// blk and err are the result, set before done is closed. blk comes
	// pinned once for each waiter.
	blk *block
	err error
	// buf is the buffer the block loads into, taken when its bytes were
	// reserved.
	buf []byte
	// abandoned tells waiters that the load failed only because the Reader
	// that started it was closed, so they should load the block themselves.
	abandoned bool
	// forgotten is set by Forget: the block is handed to its waiters but
	// not cached; guarded by Cache.mu.
	forgotten bool
}

// New returns a cache of at most budget bytes in blocks of blockSize bytes
// (DefaultBlockSize if blockSize <= 0), with default options otherwise.
func New(budget int64, blockSize int) *Cache {
	return NewWithOptions(Options{Budget: budget, BlockSize: blockSize})
}

// NewWithOptions returns a cache configured by o.
func NewWithOptions(o Options) *Cache {
	c := &Cache{
		blockSize:  o.BlockSize,
		budget:     max(o.Budget, 0),
		readAhead:  o.ReadAhead,
		aheadLoads: o.AheadLoads,
		maxStreams: o.MaxStreams,
		maxSkip:    o.MaxSkip,
		attempts:   o.Attempts,
		retryDelay: o.RetryDelay,
		retryable:  o.Retryable,
		ranged:     o.Ranged,
		loads:      make(map[blockKey]*load),
	}
	if c.blockSize <= 0 {
		c.blockSize = DefaultBlockSize
	}
	switch {
	case c.readAhead == 0:
		c.readAhead = DefaultReadAhead
	case c.readAhead < 0:
		c.readAhead = 0
	}
	if c.aheadLoads <= 0 || c.aheadLoads > c.readAhead {
		c.aheadLoads = c.readAhead
	}
	switch {
	case c.maxStreams == 0:
		c.maxStreams = DefaultMaxStreams
	case c.maxStreams < 0:
		c.maxStreams = 0
	}
	switch {
	case c.maxSkip == 0:
		c.maxSkip = int64(c.blockSize)
	case c.maxSkip < 0:
		c.maxSkip = 0
	}
	if c.attempts <= 0 {
		c.attempts = DefaultAttempts
	}
	switch {
	case c.retryDelay == 0:
		c.retryDelay = DefaultRetryDelay
	case c.retryDelay < 0:
		c.retryDelay = 0
	}
	// The entry limit only has to be out of reach; simplelru allocates
	// nothing up front.
	lru, err := simplelru.NewLRU[blockKey, *block](math.MaxInt, nil)
	if err != nil {
		panic(err) // only for a non-positive size
	}
	c.lru = lru
	for range max(o.Prefault, 0) {
		b := make([]byte, c.blockSize)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		c.warm = append(c.warm, b)
	}
	return c
}

// BlockSize returns the block size in bytes.
func (c *Cache) BlockSize() int { return c.blockSize }

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	s := c.stats
	s.Bytes = c.bytes
	s.Charged = c.charged
	s.Loans = c.loans
	c.mu.Unlock()
	s.Budget = c.budget
	s.Opens = c.opens.Load()
	s.Retries = c.retries.Load()
	return s
}

// lookup is the outcome of acquire.
type lookup int

const (
	found    lookup = iota // blk is pinned for the caller
	mustLoad               // the caller owns ld and has reserved its bytes
	uncached               // no room: the caller reads without caching
)

// acquire finds block bk of n bytes for a demand read. It waits for a load
// in flight. On a miss it reserves room and registers a load the caller must
// run and finish; when no room can be made it says so instead of waiting,
// so a reader always makes progress.
func (c *Cache) acquire(bk blockKey, n int) (lookup, *block, *load, error) {
	c.mu.Lock()
	for {
		if b, ok := c.lru.Get(bk); ok {
			b.pins++
			c.stats.Hits++
			c.mu.Unlock()
			return found, b, nil, nil
		}
		if ld, ok := c.loads[bk]; ok {
			ld.waiters++
			c.stats.Waits++
			c.mu.Unlock()
			<-ld.done
			if ld.err == nil {
				return found, ld.blk, nil, nil
			}
			if !ld.abandoned {
				return 0, nil, nil, ld.err
			}
			c.mu.Lock()
			continue
		}
		c.stats.Misses++
		buf, ok := c.reserve(n)
		if !ok {
			c.stats.Uncached++
			c.mu.Unlock()
			return uncached, nil, nil, nil
		}
		ld := c.startLoad(bk, buf)
		c.mu.Unlock()
		return mustLoad, nil, ld, nil
	}
}

// tryReadAhead registers a read-ahead load of block bk of n bytes. It
// reports whether the block is cached or loading afterwards. Read-ahead may
// only fill half the budget with loads in flight, so demand reads keep room.
func (c *Cache) tryReadAhead(bk blockKey, n int) (ld *load, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lru.Contains(bk) {
		return nil, true
	}
	if _, loading := c.loads[bk]; loading {
		return nil, true
	}
	if c.loading+int64(n) > c.budget/2 {
		return nil, false
	}
	buf, ok := c.reserve(n)
	if !ok {
		return nil, false
	}
	c.stats.ReadAheads++
	return c.startLoad(bk, buf), true
}

// present reports whether block bk is cached or loading, without making it
// more recently used.
func (c *Cache) present(bk blockKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, loading := c.loads[bk]
	return loading || c.lru.Contains(bk)
}

// touch makes the cached blocks first to last of key the most recently
// used, last first.
func (c *Cache) touch(key string, first, last int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := last; i >= first; i-- {
		c.lru.Get(blockKey{key, i})
	}
}

// startLoad registers a load of bk into buf, whose bytes are reserved;
// c.mu is held.
func (c *Cache) startLoad(bk blockKey, buf []byte) *load {
	ld := &load{done: make(chan struct{}), buf: buf}
	c.loads[bk] = ld
	c.stats.Loads++
	return ld
}

// Charge counts n bytes that the caller holds outside the cache (regfs's
// manifests being read) against the budget, evicting least recently used
// blocks to make room, so that what the process holds stays within the
// budget. Charges may take at most half the budget, so that blob reads
// keep room for blocks. It reports false, charging nothing, when there is
// no room; the caller then must not hold the bytes. Each successful Charge
// is undone by an Uncharge of the same n once the bytes are let go.
func (c *Cache) Charge(n int64) bool {
	if n < 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.charged+n > c.budget/2 || !c.makeRoom(n) {
		return false
	}
	c.bytes += n
	c.charged += n
	c.stats.MaxBytes = max(c.stats.MaxBytes, c.bytes)
	c.trimFree()
	return true
}

// Uncharge gives back n bytes of an earlier Charge.
func (c *Cache) Uncharge(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bytes -= n
	c.charged -= n
}

// reserve makes room for a block of n bytes by evicting least recently
// used blocks, counts it as loading and returns the buffer to load it into.
// It reports false, reserving nothing, when loads in flight, charges and
// pinned blocks leave no room; c.mu is held.
func (c *Cache) reserve(n int) ([]byte, bool) {
	if !c.makeRoom(int64(n)) {
		return nil, false
	}
	c.bytes += int64(n)
	c.loading += int64(n)
	c.stats.MaxBytes = max(c.stats.MaxBytes, c.bytes)
	return c.takeBuf(n), true
}

// makeRoom evicts least recently used blocks until n more bytes fit in the
// budget. It reports false when they cannot fit, evicting nothing when
// the bytes that cannot be evicted (loads in flight, charges) leave no
// room; c.mu is held.
func (c *Cache) makeRoom(n int64) bool {
	if c.loading+c.charged+n > c.budget {
		return false
	}
	for c.bytes+n > c.budget {
		_, b, ok := c.lru.RemoveOldest()
		if !ok {
			return false
		}
		c.stats.Evictions++
		if b.pins == 0 {
			c.drop(b)
		} else {
			b.evicted = true
		}
	}
	return true
}

// finish ends the load ld of bk: on success the block is cached, pinned for
// every waiter plus pins for the loader itself; on failure the reservation
// is released and nothing is cached. abandoned marks a failure caused by
// the closing of the loader's Reader.
func (c *Cache) finish(bk blockKey, ld *load, n int, data []byte, err error, abandoned bool, pins int) *block {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.loads, bk)
	c.loading -= int64(n)
	ld.buf = nil
	if err != nil {
		c.bytes -= int64(n)
		c.putBuf(data)
		c.stats.LoadErrors++
		ld.err = err
		ld.abandoned = abandoned
		close(ld.done)
		return nil
	}
	b := &block{data: data, pins: ld.waiters + pins}
	if ld.forgotten {
		// Nobody finds it again: it goes once its readers unpin it.
		b.evicted = true
	} else {
		c.lru.Add(bk, b)
	}
	ld.blk = b
	close(ld.done)
	return b
}

// Forget drops every cached block of the blobs whose key starts with
// prefix, for a blob deleted from storage: its blocks must not be served
// any more, neither to Readers open on it nor to ones opened on a blob
// stored again under the same key. Loads in flight for those keys are not
// cached when they end, and the idle lower streams every Reader keeps
// are not used again (a stream opened before the deletion may still read
// the old bytes). It returns how many cached blocks it dropped.
func (c *Cache) Forget(prefix string) int {
	c.forgets.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, bk := range c.lru.Keys() {
		if !strings.HasPrefix(bk.key, prefix) {
			continue
		}
		b, ok := c.lru.Peek(bk)
		if !ok {
			continue
		}
		c.lru.Remove(bk)
		n++
		if b.pins == 0 {
			c.drop(b)
		} else {
			b.evicted = true
		}
	}
	for bk, ld := range c.loads {
		if strings.HasPrefix(bk.key, prefix) {
			ld.forgotten = true
		}
	}
	c.stats.Forgotten += int64(n)
	return n
}

// unpin releases a block acquired for copying.
func (c *Cache) unpin(b *block) {
	c.mu.Lock()
	b.pins--
	if b.pins == 0 && b.evicted {
		c.drop(b)
	}
	c.mu.Unlock()
}

// drop uncounts a block that left the cache and that no reader copies from
// any more, and keeps its buffer for a later load, unless bytes of it are
// lent (Reader.Lend): the buffer is then withheld until the last loan
// ends; c.mu is held.
func (c *Cache) drop(b *block) {
	c.bytes -= int64(len(b.data))
	if b.loans > 0 {
		b.withheld = true
		return
	}
	c.putBuf(b.data)
}

// lend counts a loan of b's bytes and returns the function that ends it.
func (c *Cache) lend(b *block) func() {
	c.mu.Lock()
	b.loans++
	c.loans++
	c.stats.Lends++
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		b.loans--
		c.loans--
		if b.loans == 0 && b.withheld {
			b.withheld = false
			c.putBuf(b.data)
		}
	}
}

// takeBuf returns a kept buffer for a load of n bytes whose bytes were
// just reserved, or nil when there is none: the load then allocates one
// (newBuf), not under c.mu. Its content is garbage: a load overwrites all
// of it or fails. c.mu is held.
func (c *Cache) takeBuf(n int) []byte {
	var b []byte
	switch k, f := len(c.warm), len(c.free); {
	case n != c.blockSize:
	case k > 0:
		b, c.warm[k-1], c.warm = c.warm[k-1], nil, c.warm[:k-1]
	case f > 0:
		b, c.free[f-1], c.free = c.free[f-1], nil, c.free[:f-1]
		c.freeBytes -= int64(n)
	}
	c.trimFree()
	return b
}

// newBuf returns ld's buffer, allocating one of n bytes if the cache had
// none to give.
func newBuf(ld *load, n int) []byte {
	if ld.buf == nil {
		ld.buf = make([]byte, n)
	}
	return ld.buf
}

// putBuf keeps the buffer of a block that nothing references any more for
// a later load, if the budget has room for it besides what the cache
// holds; c.mu is held and b's bytes are no longer counted in c.bytes.
func (c *Cache) putBuf(b []byte) {
	if len(b) == c.blockSize && c.bytes+c.freeBytes+int64(len(b)) <= c.budget {
		c.free = append(c.free, b)
		c.freeBytes += int64(len(b))
	}
}

// trimFree lets go of kept buffers until the cache's bytes and them fit in
// the budget again; c.mu is held.
func (c *Cache) trimFree() {
	for f := len(c.free); f > 0 && c.bytes+c.freeBytes > c.budget; f-- {
		c.free[f-1], c.free = nil, c.free[:f-1]
		c.freeBytes -= int64(c.blockSize)
	}
}
