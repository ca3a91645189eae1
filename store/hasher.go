package store

import (
	"crypto/sha256"
	"hash"
	"sync"
)

// maxHashBacklog bounds the bytes an asyncHasher holds that it has not
// hashed yet; a writer that gets that far ahead waits. 4 MiB is 32 FUSE
// writes of 128 KiB: plenty to ride out a scheduling hiccup of the hashing
// goroutine, little memory per upload.
const maxHashBacklog = 4 << 20

// asyncHasher feeds a sha256 hash on a goroutine of its own, so that an
// upload hashes while its writer is already sending the next bytes: one
// pass over the data, with the hashing off the FUSE write's critical path.
// Measured with regfs-bench (cp of 1 GiB into _uploads/ on 2 cores), see
// docs/benchmarks.md.
//
// The goroutine runs only while there are bytes to hash and exits when it
// has caught up, so an upload that is dropped without Close leaves nothing
// running. The bytes are copied on add: the caller's buffer (a FUSE
// request's) is reused as soon as the write returns.
type asyncHasher struct {
	mu   sync.Mutex
	cond sync.Cond
	// h is touched by the goroutine while running is set, and by sum and
	// state callers only after wait; it needs no lock of its own.
	h hash.Hash
	// queue are the chunks not hashed yet, in order; guarded by mu.
	queue [][]byte
	// backlog is the bytes in queue plus the chunk being hashed; guarded by mu.
	backlog int
	// running is set while the goroutine runs; guarded by mu.
	running bool
	// spare are chunk buffers to reuse; guarded by mu.
	spare [][]byte
}

func newAsyncHasher() *asyncHasher {
	a := &asyncHasher{h: sha256.New()}
	a.cond.L = &a.mu
	return a
}

// add queues a copy of p to be hashed after everything added before.
func (a *asyncHasher) add(p []byte) {
	if len(p) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.backlog > 0 && a.backlog+len(p) > maxHashBacklog {
		a.cond.Wait()
	}
	var buf []byte
	if n := len(a.spare); n > 0 && cap(a.spare[n-1]) >= len(p) {
		buf = a.spare[n-1][:len(p)]
		a.spare[n-1] = nil
		a.spare = a.spare[:n-1]
	} else {
		buf = make([]byte, len(p))
	}
	copy(buf, p)
	a.queue = append(a.queue, buf)
	a.backlog += len(buf)
	if !a.running {
		a.running = true
		go a.run()
	}
}

// run hashes the queue until it is empty.
func (a *asyncHasher) run() {
	a.mu.Lock()
	for len(a.queue) > 0 {
		buf := a.queue[0]
		a.queue[0] = nil
		a.queue = a.queue[1:]
		a.mu.Unlock()
		a.h.Write(buf)
		a.mu.Lock()
		a.backlog -= len(buf)
		if len(a.spare) < 4 {
			a.spare = append(a.spare, buf)
		}
		a.cond.Broadcast()
	}
	a.running = false
	a.cond.Broadcast()
	a.mu.Unlock()
}

// wait returns once every byte added has been hashed; the hash is then the
// caller's until the next add.
func (a *asyncHasher) wait() hash.Hash {
	a.mu.Lock()
	for a.running {
		a.cond.Wait()
	}
	a.mu.Unlock()
	return a.h
}

// reset waits, then replaces the hash with a fresh one.
func (a *asyncHasher) reset() {
	a.wait()
	a.h = sha256.New()
}
