// Package cache is the read path of regfs: a Reader serves ReadAt on an
// immutable blob from fixed-size blocks held in one global, byte-budgeted
// LRU cache, loading missing blocks from a lower stream (a storage driver
// reader) and reading ahead of sequential readers.
//
// # Blocks
//
// A blob is cut into blocks of BlockSize bytes (1 MiB by default; the last
// block is short), keyed by (blob digest, block index). Blobs never change,
// so a cached block is valid forever and every Reader of the same digest
// shares it. 1 MiB is a compromise between the cost of a request to the
// backend (an S3 GET costs tens of milliseconds before its first byte, so a
// block should take longer than that to transfer) and waste on random
// access (a 4 KiB read pulls in a whole block), and is eight FUSE read
// requests of 128 KiB, so one load serves several requests.
//
// # Budget
//
// The cache holds at most Budget bytes, counted as: blocks in the LRU, plus
// blocks being loaded (their bytes are reserved before the load starts),
// plus blocks evicted while a reader still copies from them (pinned; their
// bytes are released by the last unpin), plus bytes its user holds outside
// it and charges to it (Charge: regfs's manifests being read, at most half
// the budget), so that one budget bounds what the process holds. The
// buffers it keeps for later loads fit in the budget beside all that. The
// one exception is a block lent (Reader.Lend) that leaves the cache before
// its loan ends: its bytes are uncounted at once, and its buffer is out of
// the budget until the loan ends. Eviction is by bytes, least recently
// used first, on the hashicorp simplelru under one mutex, whose entry limit
// is set out of reach. Stats.MaxBytes records the high-water mark, which
// never exceeds the budget.
//
// When a block cannot be reserved (the budget is taken by loads in flight,
// or the budget is smaller than a block), a reader does not wait: it reads
// the bytes it needs straight from the source into the caller's buffer, so
// it always makes progress and the cache allocates nothing beyond the
// budget, however many readers there are and however large the blobs. The
// memory a Reader itself holds is bounded too: a few idle streams and at
// most AheadLoads loads in flight, each counted against the budget.
//
// # Single flight
//
// A block has at most one load in flight. Concurrent ReadAt calls that want
// it wait for that load and copy from its result; a failed load is returned
// to every waiter and not cached, so the next read tries again. If the load
// failed only because the Reader that ran it was closed, waiters from other
// Readers load the block themselves instead of failing.
//
// Loads retry a bounded number of times with a short backoff. A stream that
// ends before the block is full is an io.ErrUnexpectedEOF: a short block is
// never cached.
//
// # Read-ahead
//
// Each Reader watches where its reads land. A read within two blocks of the
// end of the previous reads continues a sequential run, and a read at
// offset 0 starts one; the slack absorbs FUSE requests that arrive
// concurrently and slightly out of order. During a run the Reader keeps the
// next ReadAhead blocks (4 by default) loading in parallel, each load
// registered in the cache before ReadAt returns, so a sequential pass finds
// its next block cached or in flight and rarely misses. Before reading
// ahead, the blocks being read are made the most recently used, so the room
// made for the blocks ahead is taken from blocks behind the reader, not
// from the next ones (which would thrash a budget only a few windows
// large). A single read spanning several blocks loads them in parallel the
// same way, sequential or not.
//
// With Options.Ranged (a remote source) a read's own blocks are loaded
// before read-ahead starts: started together they would share the
// bandwidth, and the first byte of a fresh sequential read would wait for
// the whole window. A read that loads its block returns as soon as its own
// bytes have arrived; the rest of the block arrives in the background and
// is cached whole (other readers of it wait for all of it), so a large
// remote block does not delay the first byte. The window grows with the
// run: one block ahead when it starts, doubled each time the reader enters
// a new block, up to ReadAhead, so a short read of a fresh file does not
// fetch a whole window nobody reads. A read-ahead load that ends starts the
// next block of the window at once, and AheadLoads may keep fewer loads in
// flight than the window holds, so that loads go on past a slow one.
//
// Read-ahead stops at the end of the blob, never lets the loads in flight
// fill more than half the budget (demand reads keep the other half), keeps
// at most AheadLoads (ReadAhead by default) loads in flight per Reader, and
// stops on Close, which cancels its loads and waits for their goroutines.
//
// # Lower streams
//
// Opening a stream can cost a request, so a Reader keeps a few idle streams
// positioned where their last load ended. A load at a kept stream's
// position reuses it; a small forward gap (MaxSkip, one block by default)
// is read and discarded; anything else opens a new stream at the block's
// offset. Streams are opened under a context that Close cancels, and Close
// closes the kept ones.
//
// With Options.Ranged (regfs sets it for S3) no stream is kept: each load
// opens a stream of exactly its block, telling the source its length with
// driver.WithReadLength, and reads it to its end. An S3 GET without an end
// makes the server send bytes that are never read, and its connection,
// closed before the end of the answer, cannot serve the next GET; parallel
// read-ahead rarely continues a kept stream anyway, since the block after
// one load is another load's.
//
// # Copies and allocation
//
// A block is read from the stream into its own buffer once, and copied from
// there into the caller's buffer once; cached blocks are immutable, so the
// copy happens outside the lock. Reader.Lend skips that copy for a read
// within one block: it hands out the block's own bytes, and the cache
// withholds the block's buffer from reuse until the loan ends, even if
// the block leaves the cache (and the budget) meanwhile. The buffer of a full block that nothing
// references any more (evicted and unpinned) is kept on a free list and
// reused by the next load, so a cache that turns its budget over does not
// allocate and zero a block per load. The list is the cache's, not a
// sync.Pool's: a pool is emptied by every garbage collection, and under
// regfs's memory limit a cold read runs one every few megabytes, so each
// load allocated a fresh block and the runtime freed, returned to the
// system and faulted in again a block's worth of memory per load. The
// kept buffers count with the blocks: together they never exceed the
// budget.
package cache
