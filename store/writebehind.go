package store

import (
	"crypto/sha256"
	"hash"
	"io"
	"sync"
)

// maxUploadBacklog bounds the bytes a writeBehind holds that it has not
// hashed yet (stored or not); a writer that gets that far ahead waits. 8 MiB
// is 64 FUSE writes of 128 KiB: enough to keep receiving while the driver
// stores a chunk (an S3 part upload) and to ride out a scheduling hiccup of
// the hashing goroutine, little memory per upload.
const maxUploadBacklog = 8 << 20

// maxSpareBuffers is how many chunk buffers a writeBehind keeps for reuse.
const maxSpareBuffers = 8

// writeBehind stores an upload's bytes and hashes them on goroutines of its
// own, in the order they were added: add copies the bytes and returns, the
// writing goroutine hands them to the driver's writer, and the hashing
// goroutine hashes what the driver took. The caller's next write overlaps
// both, so a FUSE write costs a copy, not a storage write and a hash. Bytes
// the driver did not take are never hashed: once the pipeline is idle, the
// hash covers exactly the bytes stored.
//
// A failed storage write is reported by the first drain (or failed) after
// it, with the number of bytes added that were not stored (the failed
// chunk's rest and everything queued after it, which is dropped).
//
// Each goroutine runs only while it has bytes to handle and exits when it
// has caught up, so an upload that is dropped without Close leaves nothing
// running. The writer and the hash belong to the goroutines while they run;
// setWriter, hash and reset wait until both are idle.
type writeBehind struct {
	mu   sync.Mutex
	cond sync.Cond

	w io.Writer
	h hash.Hash

	// toWrite and toHash are the chunks waiting for each stage, in order.
	toWrite, toHash [][]byte
	// writing and hashing are set while the stage's goroutine runs.
	writing, hashing bool
	// backlog is the bytes added and not hashed or dropped yet.
	backlog int
	// err is the first storage failure since the last drain, and dropped
	// the bytes added since then that were not stored.
	err     error
	dropped int64
	// spare are chunk buffers to reuse.
	spare [][]byte
}

func newWriteBehind() *writeBehind {
	wb := &writeBehind{h: sha256.New()}
	wb.cond.L = &wb.mu
	return wb
}

// newWriteBehindTo returns a writeBehind that writes to w.
func newWriteBehindTo(w io.Writer) *writeBehind {
	wb := newWriteBehind()
	wb.w = w
	return wb
}

// setWriter makes w the writer the next bytes go to. It waits until the
// pipeline is idle.
func (wb *writeBehind) setWriter(w io.Writer) {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	wb.waitIdle()
	wb.w = w
}

// add queues a copy of p to be stored and hashed after everything added
// before. It waits while the backlog is full.
func (wb *writeBehind) add(p []byte) {
	if len(p) == 0 {
		return
	}
	wb.mu.Lock()
	defer wb.mu.Unlock()
	for wb.backlog > 0 && wb.backlog+len(p) > maxUploadBacklog {
		wb.cond.Wait()
	}
	buf := wb.buffer(len(p))
	copy(buf, p)
	wb.toWrite = append(wb.toWrite, buf)
	wb.backlog += len(buf)
	if !wb.writing {
		wb.writing = true
		go wb.writeLoop()
	}
}

// buffer returns a buffer of n bytes, reused where one is big enough.
// wb.mu is held.
func (wb *writeBehind) buffer(n int) []byte {
	for i := len(wb.spare) - 1; i >= 0; i-- {
		if b := wb.spare[i]; cap(b) >= n {
			wb.spare[i] = wb.spare[len(wb.spare)-1]
			wb.spare[len(wb.spare)-1] = nil
			wb.spare = wb.spare[:len(wb.spare)-1]
			return b[:n]
		}
	}
	return make([]byte, n)
}

// recycle keeps b for reuse. wb.mu is held.
func (wb *writeBehind) recycle(b []byte) {
	if len(wb.spare) < maxSpareBuffers {
		wb.spare = append(wb.spare, b[:0])
	}
}

// pop removes and returns the first chunk of a queue, dropping the
// queue's reference to it.
func pop(q *[][]byte) []byte {
	buf := (*q)[0]
	(*q)[0] = nil
	*q = (*q)[1:]
	return buf
}

// writeLoop stores the queued chunks until there are none.
func (wb *writeBehind) writeLoop() {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	for len(wb.toWrite) > 0 {
		buf := pop(&wb.toWrite)
		n := 0
		if wb.err == nil {
			wb.mu.Unlock()
			var err error
			n, err = wb.w.Write(buf)
			if err == nil && n < len(buf) {
				err = io.ErrShortWrite
			}
			wb.mu.Lock()
			if err != nil {
				wb.err = err
			}
		}
		if lost := len(buf) - n; lost > 0 {
			wb.dropped += int64(lost)
			wb.backlog -= lost
		}
		if n > 0 {
			wb.toHash = append(wb.toHash, buf[:n])
			if !wb.hashing {
				wb.hashing = true
				go wb.hashLoop()
			}
		} else {
			wb.recycle(buf)
		}
		wb.cond.Broadcast()
	}
	wb.writing = false
	wb.cond.Broadcast()
}

// hashLoop hashes the stored chunks until there are none.
func (wb *writeBehind) hashLoop() {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	for len(wb.toHash) > 0 {
		buf := pop(&wb.toHash)
		wb.mu.Unlock()
		wb.h.Write(buf)
		wb.mu.Lock()
		wb.backlog -= len(buf)
		wb.recycle(buf)
		wb.cond.Broadcast()
	}
	wb.hashing = false
	wb.cond.Broadcast()
}

// waitIdle waits until both goroutines have caught up. wb.mu is held.
func (wb *writeBehind) waitIdle() {
	for wb.writing || wb.hashing {
		wb.cond.Wait()
	}
}

// failed reports, without waiting, whether a storage write failed since
// the last drain.
func (wb *writeBehind) failed() bool {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	return wb.err != nil
}

// drain waits until every byte added is stored and hashed, or dropped, and
// returns the first storage failure since the last drain with the number of
// bytes added since then that were not stored. It clears both.
func (wb *writeBehind) drain() (dropped int64, err error) {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	wb.waitIdle()
	dropped, err = wb.dropped, wb.err
	wb.dropped, wb.err = 0, nil
	return dropped, err
}

// hash waits until the pipeline is idle and returns the hash of the bytes
// stored; it is the caller's until the next add.
func (wb *writeBehind) hash() hash.Hash {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	wb.waitIdle()
	return wb.h
}

// reset waits until the pipeline is idle, then starts a fresh hash.
func (wb *writeBehind) reset() {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	wb.waitIdle()
	wb.h = sha256.New()
}
