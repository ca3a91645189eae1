package fs

import (
	"errors"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

// openLayers counts the layer nodes open for reading, by digest. The
// kernel keeps a layer's pages across opens (OpenKeepCache): a descriptor
// opened before the blob was deleted would go on reading them. When regfs
// learns that a blob is gone it drops those pages (blobGone), so that
// reads through such a descriptor come to regfs, whose block cache has
// dropped the blob too, and fail instead of returning deleted bytes.
type openLayers struct {
	mu sync.Mutex
	// nodes counts the open handles of each node, by digest; guarded by mu.
	nodes map[digest.Digest]map[layerFile]int
}

// add notes a handle opened on n and returns what its release calls.
func (o *openLayers) add(n layerFile) (release func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.nodes == nil {
		o.nodes = map[digest.Digest]map[layerFile]int{}
	}
	if o.nodes[n.dgst] == nil {
		o.nodes[n.dgst] = map[layerFile]int{}
	}
	o.nodes[n.dgst][n]++
	var once sync.Once
	return func() {
		once.Do(func() {
			o.mu.Lock()
			defer o.mu.Unlock()
			if o.nodes[n.dgst][n]--; o.nodes[n.dgst][n] <= 0 {
				delete(o.nodes[n.dgst], n)
				if len(o.nodes[n.dgst]) == 0 {
					delete(o.nodes, n.dgst)
				}
			}
		})
	}
}

// of returns the open nodes of the blob d.
func (o *openLayers) of(d digest.Digest) []layerFile {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]layerFile, 0, len(o.nodes[d]))
	for n := range o.nodes[d] {
		out = append(out, n)
	}
	return out
}

// blobGone drops the kernel's pages of every open node of the blob d,
// whose data (or, in one repository, link) is gone from storage. Dropping
// the pages of a blob still stored only costs reading them again.
func (f *FS) blobGone(d digest.Digest) {
	for _, n := range f.openLayers.of(d) {
		f.invalidateNode(n)
	}
}

// noteBlobUnknown calls blobGone when err says the blob d is not there.
func (f *FS) noteBlobUnknown(d digest.Digest, err error) {
	if errors.Is(err, store.ErrBlobUnknown) {
		f.blobGone(d)
	}
}
