package fs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/regfs/regfs/image"
	"github.com/regfs/regfs/store"
)

// Errors of the image file view (errno maps them; see docs/decisions.md).
var (
	// errImageUnreadable: an image whose layers cannot all be read: a
	// layer not in storage (a foreign layer), a truncated or corrupt blob
	// (EIO). Each case is listed in .regfs/errors with its reason.
	errImageUnreadable = errors.New("image cannot be read")
	// errImageUnsupported: a layer of a media type regfs does not read,
	// a manifest that is neither an image nor an index, a sparse file
	// (ENOTSUP).
	errImageUnsupported = errors.New("image format not supported")
)

// maxTrees is how many merged image trees stay in memory. A tree of a
// 20,000-file image takes a few MiB; what is evicted is merged again from
// the layer indexes, which stay on disk.
const maxTrees = 16

// images is the state of the image file view (_files/): the layer indexer
// and the merged trees of the images looked at lately.
type images struct {
	f   *FS
	dir string
	max int64

	once  sync.Once
	ix    *image.Indexer
	ixErr error

	mu sync.Mutex
	// trees holds the merged tree of each image manifest by digest,
	// being built or built; at most maxTrees, least recently used
	// evicted first (order). Guarded by mu.
	trees map[digest.Digest]*treeBuild
	order []digest.Digest
	// layerRepo is the repository each layer was last read through, for
	// the indexer's blob reads. Guarded by mu.
	layerRepo map[digest.Digest]string
	// lastFailure is the last failure imageFailed recorded, and when.
	// Guarded by mu.
	lastFailure   string
	lastFailureAt time.Time
}

// treeBuild is one image's tree: done is closed once tree or err is set.
type treeBuild struct {
	done chan struct{}
	tree *image.Tree
	err  error
}

func newImages(f *FS, dir string, max int64) *images {
	return &images{
		f:         f,
		dir:       dir,
		max:       max,
		trees:     map[digest.Digest]*treeBuild{},
		layerRepo: map[digest.Digest]string{},
	}
}

// repoKey carries the repository a layer is read through in a context.
type repoKey struct{}

// indexer returns the layer indexer, made on first use.
func (im *images) indexer() (*image.Indexer, error) {
	im.once.Do(func() {
		im.ix, im.ixErr = image.NewIndexer(image.Options{
			Dir:      im.dir,
			MaxBytes: im.max,
			Blobs:    image.BlobsFunc(im.openBlob),
			Log:      im.f.log,
		})
	})
	return im.ix, im.ixErr
}

// close closes the indexer's paused decoders and the blobs they hold,
// when the mount ends. An indexer not made yet is never made.
func (im *images) close() {
	im.once.Do(func() { im.ixErr = errors.New("the mount has ended") })
	if im.ix != nil {
		if err := im.ix.Close(); err != nil {
			im.f.log.Warn("closing the layer indexer", "error", err)
		}
	}
}

// openBlob opens a layer blob for the indexer, through the repository the
// read is for (from ctx, else the one it was last read through): a blob
// is only read where it is linked.
func (im *images) openBlob(ctx context.Context, dgst digest.Digest) (image.Blob, error) {
	name, _ := ctx.Value(repoKey{}).(string)
	if name == "" {
		im.mu.Lock()
		name = im.layerRepo[dgst]
		im.mu.Unlock()
	}
	repo, err := im.f.st.Repository(name)
	if err != nil {
		return nil, err
	}
	return repo.Layers().Open(ctx, dgst)
}

// manifest reads and parses the manifest dgst of repo.
func (im *images) manifest(ctx context.Context, repoName string, dgst digest.Digest) (*viewManifest, error) {
	repo, err := im.f.st.Repository(repoName)
	if err != nil {
		return nil, err
	}
	content, mediaType, err := repo.Manifests().Get(ctx, dgst)
	if err != nil {
		return nil, err
	}
	return parseViewManifest(content, mediaType)
}

// tree returns the merged tree of the image manifest dgst of repo,
// building it once however many callers ask at the same time. The build
// runs under the mount's context, so a caller that gives up (ctx done)
// leaves it to finish for the others. A failed build is not kept: the
// next call tries again.
func (im *images) tree(ctx context.Context, repoName string, dgst digest.Digest) (*image.Tree, error) {
	im.mu.Lock()
	b, ok := im.trees[dgst]
	if ok {
		im.touchLocked(dgst)
	} else {
		b = &treeBuild{done: make(chan struct{})}
		im.trees[dgst] = b
		im.order = append(im.order, dgst)
		im.evictLocked()
	}
	im.mu.Unlock()
	if !ok {
		go im.build(repoName, dgst, b)
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return b.tree, b.err
}

// build merges the tree of b and forgets b if it failed.
func (im *images) build(repoName string, dgst digest.Digest, b *treeBuild) {
	b.tree, b.err = im.merge(im.f.ctx, repoName, dgst)
	if b.err != nil {
		im.mu.Lock()
		if im.trees[dgst] == b {
			delete(im.trees, dgst)
			if i := indexOf(im.order, dgst); i >= 0 {
				im.order = append(im.order[:i], im.order[i+1:]...)
			}
		}
		im.mu.Unlock()
	}
	close(b.done)
}

func (im *images) touchLocked(dgst digest.Digest) {
	if i := indexOf(im.order, dgst); i >= 0 {
		im.order = append(append(im.order[:i], im.order[i+1:]...), dgst)
	}
}

// evictLocked drops the least recently used trees past maxTrees; one
// being built stays (its callers wait for it) and is dropped later.
func (im *images) evictLocked() {
	for i := 0; len(im.trees) > maxTrees && i < len(im.order); {
		d := im.order[i]
		select {
		case <-im.trees[d].done:
			delete(im.trees, d)
			im.order = append(im.order[:i], im.order[i+1:]...)
		default:
			i++
		}
	}
}

func indexOf(ds []digest.Digest, d digest.Digest) int {
	for i, x := range ds {
		if x == d {
			return i
		}
	}
	return -1
}

// merge reads the manifest, checks that every layer is linked in the
// repository, indexes each layer (from the index directory, or by reading
// it once) and merges them. Every layer is checked before any is read, so
// an image with a missing layer fails at once and names every missing one.
func (im *images) merge(ctx context.Context, repoName string, dgst digest.Digest) (*image.Tree, error) {
	m, err := im.manifest(ctx, repoName, dgst)
	if err != nil {
		return nil, err
	}
	if m.index {
		return nil, &because{why: "an index or manifest list has no files of its own: its platforms do", kind: errImageUnsupported}
	}
	ix, err := im.indexer()
	if err != nil {
		return nil, &because{why: "index directory: " + err.Error(), kind: errImageUnreadable}
	}
	repo, err := im.f.st.Repository(repoName)
	if err != nil {
		return nil, err
	}
	var missing []string
	for i, l := range m.layers {
		if _, err := image.CompressionOf(l.MediaType); err != nil {
			return nil, &because{why: fmt.Sprintf("layer %d of %d (%s): %v", i+1, len(m.layers), l.Digest, err), kind: errImageUnsupported}
		}
		if _, err := repo.Layers().Stat(ctx, l.Digest); err != nil {
			if !isNotFoundErr(err) {
				return nil, err
			}
			why := fmt.Sprintf("layer %d of %d (%s) is not in storage", i+1, len(m.layers), l.Digest)
			if len(l.URLs) > 0 {
				why += " (a foreign layer, served from " + strings.Join(l.URLs, ", ") + ")"
			}
			missing = append(missing, why)
		}
	}
	if len(missing) > 0 {
		return nil, &because{why: strings.Join(missing, "; "), kind: errImageUnreadable}
	}
	im.mu.Lock()
	for _, l := range m.layers {
		im.layerRepo[l.Digest] = repoName
	}
	im.mu.Unlock()
	ctx = context.WithValue(ctx, repoKey{}, repoName)
	layers := make([]*image.Layer, 0, len(m.layers))
	for i, l := range m.layers {
		layer, err := ix.Layer(ctx, v1.Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size})
		if err != nil {
			return nil, imageErr(fmt.Sprintf("layer %d of %d (%s)", i+1, len(m.layers), l.Digest), err)
		}
		layers = append(layers, layer)
	}
	t, err := image.Merge(layers)
	if err != nil {
		return nil, imageErr("merging the layers", err)
	}
	return t, nil
}

// imageErr gives an error of the image package its kind for errno, with
// what failed: a cancelled or storage error keeps its own.
func imageErr(what string, err error) error {
	var unsupported *image.UnsupportedMediaTypeError
	var layer *image.LayerError
	switch {
	case errors.As(err, &unsupported), errors.Is(err, image.ErrSparse):
		return &because{why: what + ": " + err.Error(), kind: errImageUnsupported}
	case errors.As(err, &layer), errors.Is(err, image.ErrCorrupt):
		return &because{why: what + ": " + err.Error(), kind: errImageUnreadable}
	case errors.Is(err, store.ErrBlobUnknown):
		return &because{why: what + " is not in storage: " + err.Error(), kind: errImageUnreadable}
	}
	return err
}

// failureRepeat is how long the same failure of the same path is recorded
// once: the kernel retries a failed read, and ls looks up what it could
// not list, so one command fails several requests.
const failureRepeat = 10 * time.Second

// imageFailed records in .regfs/errors and the log why an image (or a file
// in it) at p cannot be read, for the errors the image view makes itself:
// the errno alone (EIO, ENOTSUP) does not say which layer or why.
func (f *FS) imageFailed(p string, err error) {
	if !errors.Is(err, errImageUnreadable) && !errors.Is(err, errImageUnsupported) {
		return
	}
	now := time.Now()
	key := p + "\x00" + err.Error()
	im := f.images
	im.mu.Lock()
	repeat := key == im.lastFailure && now.Sub(im.lastFailureAt) < failureRepeat
	if !repeat {
		im.lastFailure, im.lastFailureAt = key, now
	}
	im.mu.Unlock()
	if repeat {
		return
	}
	f.errLog.add(rejection{time: now, path: p, reasons: reasonsOf(err)})
	f.log.Warn("image unreadable", "path", p, "reason", err.Error())
}
