package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// slowBuffer is a writer that takes its time, so that chunks queue up, and
// can be told to fail once it holds limit bytes (a short write, then
// errors).
type slowBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	limit int // < 0: no limit
	delay time.Duration
	calls int
}

var errDiskFull = errors.New("disk full")

func (w *slowBuffer) Write(p []byte) (int, error) {
	time.Sleep(w.delay)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	if w.limit >= 0 && w.buf.Len()+len(p) > w.limit {
		n := w.limit - w.buf.Len()
		w.buf.Write(p[:n])
		return n, errDiskFull
	}
	return w.buf.Write(p)
}

func (w *slowBuffer) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.buf.Bytes())
}

// checkIdle fails when a goroutine of wb still runs or a chunk is queued.
func checkIdle(t *testing.T, wb *writeBehind) {
	t.Helper()
	wb.mu.Lock()
	defer wb.mu.Unlock()
	if wb.writing || wb.hashing || len(wb.toWrite) != 0 || len(wb.toHash) != 0 || wb.backlog != 0 {
		t.Errorf("not idle: writing %v, hashing %v, %d+%d chunks queued, backlog %d",
			wb.writing, wb.hashing, len(wb.toWrite), len(wb.toHash), wb.backlog)
	}
}

// TestWriteBehindStoresAndHashesInOrder adds chunks of every size, reusing
// the caller's buffer at once as FUSE does, and checks that the writer got
// exactly those bytes in order, that the hash matches hashing them in one
// go, and that the backlog never passes its bound.
func TestWriteBehindStoresAndHashesInOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	w := &slowBuffer{limit: -1, delay: 50 * time.Microsecond}
	wb := newWriteBehindTo(w)
	var all bytes.Buffer
	buf := make([]byte, 3*maxUploadBacklog/2)
	for i := 0; i < 300; i++ {
		n := rng.IntN(256 << 10)
		if i == 150 {
			n = len(buf) // one chunk beyond the backlog bound
		}
		p := buf[:n]
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		all.Write(p)
		wb.add(p)
		clear(p) // the caller reuses its buffer
		wb.mu.Lock()
		backlog := wb.backlog
		wb.mu.Unlock()
		if backlog > max(maxUploadBacklog, n) {
			t.Fatalf("backlog %d beyond the bound %d", backlog, maxUploadBacklog)
		}
	}
	dropped, err := wb.drain()
	if err != nil || dropped != 0 {
		t.Fatalf("drain: %d bytes dropped, %v", dropped, err)
	}
	checkIdle(t, wb)
	if !bytes.Equal(w.bytes(), all.Bytes()) {
		t.Fatal("the writer got other bytes than were added, or in another order")
	}
	want := sha256.Sum256(all.Bytes())
	if got := wb.hash().Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatal("digest differs from hashing the bytes in one go")
	}
	wb.reset()
	if got, want := wb.hash().Sum(nil), sha256.Sum256(nil); !bytes.Equal(got, want[:]) {
		t.Error("reset did not start a fresh hash")
	}
}

// TestWriteBehindFailure: a storage write that fails part-way is reported
// by drain with every byte added that was not stored; the chunks queued
// after it are dropped without a write; the hash covers exactly the bytes
// stored; and after the report, writes go on.
func TestWriteBehindFailure(t *testing.T) {
	const chunk, limit = 100 << 10, 250 << 10
	w := &slowBuffer{limit: limit, delay: time.Millisecond}
	wb := newWriteBehindTo(w)
	rng := rand.New(rand.NewPCG(3, 4))
	p := make([]byte, chunk)
	for range 10 {
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		wb.add(p)
	}
	for deadline := time.Now().Add(10 * time.Second); !wb.failed(); {
		if time.Now().After(deadline) {
			t.Fatal("failed() never reported the storage failure")
		}
		time.Sleep(time.Millisecond)
	}
	dropped, err := wb.drain()
	if !errors.Is(err, errDiskFull) {
		t.Fatalf("drain: error %v, want %v", err, errDiskFull)
	}
	if want := int64(10*chunk - limit); dropped != want {
		t.Errorf("drain: %d bytes dropped, want %d", dropped, want)
	}
	if w.calls != 3 {
		t.Errorf("the writer was called %d times, want 3 (nothing after the failure)", w.calls)
	}
	checkIdle(t, wb)
	stored := w.bytes()
	want := sha256.Sum256(stored)
	if got := wb.hash().Sum(nil); !bytes.Equal(got, want[:]) {
		t.Error("hash does not cover exactly the bytes stored")
	}
	if dropped, err := wb.drain(); dropped != 0 || err != nil {
		t.Errorf("second drain: %d bytes, %v; want the failure reported once", dropped, err)
	}

	w.mu.Lock()
	w.limit = -1
	w.mu.Unlock()
	wb.add([]byte("more"))
	if dropped, err := wb.drain(); dropped != 0 || err != nil {
		t.Fatalf("drain after the failure: %d bytes, %v", dropped, err)
	}
	want = sha256.Sum256(append(stored, "more"...))
	if got := wb.hash().Sum(nil); !bytes.Equal(got, want[:]) {
		t.Error("writes after the failure are not stored and hashed in order")
	}
}
