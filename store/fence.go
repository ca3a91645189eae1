package store

import (
	"sync"

	"github.com/opencontainers/go-digest"
)

// writeTracker records what this store's writers have in flight (the
// blobs being uploaded, committed, linked or named by a manifest being
// stored, and the uploads open), so that a collector running in the same
// process can be fenced off them: their times say nothing about whether
// they are live (an upload resumed after a week is old and in use).
//
// Its mutex is held for map updates only, never across I/O.
type writeTracker struct {
	mu sync.Mutex
	// inflight counts the holds on each blob; guarded by mu.
	inflight map[digest.Digest]int
	// uploads counts the holders of each open upload ("repo/id");
	// guarded by mu.
	uploads map[string]int
	// fences counts the fences taken and not released, and touched holds
	// every blob held while one was; both guarded by mu.
	fences  int
	touched map[digest.Digest]bool
}

func newWriteTracker() *writeTracker {
	return &writeTracker{inflight: map[digest.Digest]int{}, uploads: map[string]int{}, touched: map[digest.Digest]bool{}}
}

// hold marks the blobs in flight until the returned release is called.
func (w *writeTracker) hold(ds ...digest.Digest) (release func()) {
	if w == nil { // a storage made for fsck, which writes no blobs
		return func() {}
	}
	w.mu.Lock()
	for _, d := range ds {
		w.inflight[d]++
		if w.fences > 0 {
			w.touched[d] = true
		}
	}
	w.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			for _, d := range ds {
				if w.inflight[d]--; w.inflight[d] <= 0 {
					delete(w.inflight, d)
				}
				if w.fences > 0 {
					w.touched[d] = true
				}
			}
		})
	}
}

// openUpload marks an upload open, and the blob it must become in flight,
// until the returned release is called.
func (w *writeTracker) openUpload(repo, id string, expected digest.Digest) (release func()) {
	if w == nil {
		return func() {}
	}
	k := repo + "/" + id
	var blobs []digest.Digest
	if expected != "" {
		blobs = append(blobs, expected)
	}
	releaseBlobs := w.hold(blobs...)
	w.mu.Lock()
	w.uploads[k]++
	w.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			releaseBlobs()
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.uploads[k]--; w.uploads[k] <= 0 {
				delete(w.uploads, k)
			}
		})
	}
}

// Fence tells a collector what the store's writers are doing: the blobs
// they hold now or held at any time since the fence was taken, and the
// uploads open now. It implements gc.Fence.
type Fence struct {
	w *writeTracker
}

// TakeFence starts recording the blobs st's writers touch, for a
// collection that runs until release is called. For a Store that New did
// not make it returns nil (and a no-op release): nothing to fence.
func TakeFence(st Store) (f *Fence, release func()) {
	s, ok := st.(*storage)
	if !ok {
		return nil, func() {}
	}
	w := s.writes
	w.mu.Lock()
	w.fences++
	w.mu.Unlock()
	var once sync.Once
	return &Fence{w: w}, func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.fences--; w.fences == 0 {
				clear(w.touched)
			}
		})
	}
}

// HoldsBlob tells whether a writer holds d now or held it since the fence
// was taken.
func (f *Fence) HoldsBlob(d digest.Digest) bool {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	return f.w.inflight[d] > 0 || f.w.touched[d]
}

// HoldsUpload tells whether the upload is open in this store.
func (f *Fence) HoldsUpload(repo, id string) bool {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	return f.w.uploads[repo+"/"+id] > 0
}

// BlobDeleted tells st that the data of blob dgst was deleted from its
// storage (by a collector in this process), so that the blocks of it the
// block cache holds are dropped: a reader still open on the blob gets
// the storage's answer (ErrBlobUnknown), not the deleted bytes. For a
// Store that New did not make it does nothing.
func BlobDeleted(st Store, dgst digest.Digest) {
	if s, ok := st.(*storage); ok {
		s.forgetBlob(dgst)
	}
}

// forgetBlob drops the cached blocks of blob dgst, whatever its size or
// the times it was replaced (every key openBlob makes for it).
func (s *storage) forgetBlob(dgst digest.Digest) {
	s.forgets.Add(1)
	if n := s.cache.Forget(dgst.String() + "@"); n > 0 {
		s.log.Debug("cached blocks of a deleted blob dropped", "digest", dgst, "blocks", n)
	}
}
