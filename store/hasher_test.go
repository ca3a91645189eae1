package store

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// TestAsyncHasherHashesInOrder feeds chunks of every size, reusing the
// caller's buffer at once as FUSE does, and checks the digest against
// hashing the same bytes in one go.
func TestAsyncHasherHashesInOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	a := newAsyncHasher()
	var all bytes.Buffer
	buf := make([]byte, 3*maxHashBacklog/2)
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
		a.add(p)
		for j := range p {
			p[j] = 0 // the caller reuses its buffer
		}
		a.mu.Lock()
		backlog := a.backlog
		a.mu.Unlock()
		if backlog > max(maxHashBacklog, n) {
			t.Fatalf("backlog %d beyond the bound %d", backlog, maxHashBacklog)
		}
	}
	got := a.wait().Sum(nil)
	want := sha256.Sum256(all.Bytes())
	if !bytes.Equal(got, want[:]) {
		t.Fatal("digest differs from hashing the bytes in one go")
	}
	a.mu.Lock()
	running, queued := a.running, len(a.queue)
	a.mu.Unlock()
	if running || queued != 0 {
		t.Errorf("after wait: running %v, %d chunks queued", running, queued)
	}
	a.reset()
	if got, want := a.wait().Sum(nil), sha256.Sum256(nil); !bytes.Equal(got, want[:]) {
		t.Error("reset did not start a fresh hash")
	}
}
