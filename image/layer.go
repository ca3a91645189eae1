package image

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var errNotImplemented = errors.New("image: not implemented yet")

// Indexer builds, keeps and loads layer indexes.
type Indexer struct {
	opts Options
}

// NewIndexer returns an Indexer; it creates opts.Dir if needed.
func NewIndexer(opts Options) (*Indexer, error) {
	return &Indexer{opts: opts}, nil
}

// Layer returns the index of the layer desc names: loaded from Dir when a
// sound index file is there, else built by reading the blob once (one build
// however many callers ask at once) and saved.
func (ix *Indexer) Layer(ctx context.Context, desc ocispec.Descriptor) (*Layer, error) {
	return nil, errNotImplemented
}

// Layer is one indexed layer.
type Layer struct {
	digest  digest.Digest
	entries []Entry
}

// Digest returns the layer blob's digest.
func (l *Layer) Digest() digest.Digest { return l.digest }

// Entries returns the layer's tar entries in stream order. The slice and
// its entries must not be modified.
func (l *Layer) Entries() []Entry { return l.entries }

// ReadAt reads the uncompressed tar stream at off. It returns io.EOF at the
// end of the stream, and a *LayerError when the blob is damaged.
func (l *Layer) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return 0, errNotImplemented
}
