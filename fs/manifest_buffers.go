package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.HandleReader   = (*manifestHandle)(nil)
	_ fs.HandlePoller   = (*manifestHandle)(nil)
	_ fs.HandleReleaser = (*manifestHandle)(nil)
)

// errNoMemory: opening a manifest when the manifests already open take
// their share of the cache budget (ENOMEM). It is made here, as a
// fuse.Errno, so that the errno table stays the store's.
var errNoMemory = fuse.Errno(syscall.ENOMEM)

// manifestBuffers shares the bytes of the revisions open for reading: every
// descriptor of one revision in one repository reads one immutable buffer,
// counted once against the cache budget (cache.Cache.Charge) while any of
// them is open. A schema1 revision's bytes carry the signatures stored in
// its repository, so buffers are keyed by repository and digest.
type manifestBuffers struct {
	mu sync.Mutex
	// m holds the buffers with open handles. Guarded by mu.
	m map[fileKey]*manifestBuf
}

// manifestBuf is one revision's bytes, shared by its open handles.
type manifestBuf struct {
	key  fileKey
	data []byte
	// refs counts the handles reading it. Guarded by manifestBuffers.mu.
	refs int
	// charged is what Charge took for it (0 without a cache).
	charged int64
}

// sharedManifest returns the buffer of an open revision, with a reference
// for the caller, or nil.
func (f *FS) sharedManifest(k fileKey) *manifestBuf {
	f.manifests.mu.Lock()
	defer f.manifests.mu.Unlock()
	b := f.manifests.m[k]
	if b != nil {
		b.refs++
	}
	return b
}

// manifestSize returns the size of revision dgst of repo, from its open
// buffer when there is one.
func (f *FS) manifestSize(ctx context.Context, repo store.Repository, dgst digest.Digest) (int64, error) {
	k := fileKey{repo.Name(), dgst.String()}
	f.manifests.mu.Lock()
	b := f.manifests.m[k]
	f.manifests.mu.Unlock()
	if b != nil {
		if ok, err := repo.Manifests().Exists(ctx, dgst); err != nil || !ok {
			return 0, manifestGone(err, repo, dgst)
		}
		return int64(len(b.data)), nil
	}
	content, _, err := repo.Manifests().Get(ctx, dgst)
	return int64(len(content)), err
}

// manifestGone is the error for a revision Exists did not find.
func manifestGone(err error, repo store.Repository, dgst digest.Digest) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %s in %s", store.ErrManifestUnknown, dgst, repo.Name())
}

// openManifest returns a handle reading revision dgst of repo. A revision
// already open shares its buffer (once its link is seen to be still
// there); otherwise its bytes are read and charged to the cache budget,
// and when the budget has no room for them the open fails with ENOMEM
// rather than holding memory nothing bounds.
func (f *FS) openManifest(ctx context.Context, repo store.Repository, dgst digest.Digest, p string) (*manifestHandle, error) {
	k := fileKey{repo.Name(), dgst.String()}
	if b := f.sharedManifest(k); b != nil {
		ok, err := repo.Manifests().Exists(ctx, dgst)
		if err != nil || !ok {
			f.releaseManifest(b)
			return nil, manifestGone(err, repo, dgst)
		}
		return &manifestHandle{f: f, path: p, buf: b}, nil
	}
	content, _, err := repo.Manifests().Get(ctx, dgst)
	if err != nil {
		return nil, err
	}
	nb := &manifestBuf{key: k, data: content, refs: 1}
	if c := f.opts.Cache; c != nil {
		if !c.Charge(int64(len(content))) {
			f.stats.manifestOpensRefused.Add(1)
			return nil, errNoMemory
		}
		nb.charged = int64(len(content))
	}
	f.manifests.mu.Lock()
	if b := f.manifests.m[k]; b != nil {
		// Opened meanwhile by another request: share that one.
		b.refs++
		f.manifests.mu.Unlock()
		f.uncharge(nb)
		return &manifestHandle{f: f, path: p, buf: b}, nil
	}
	if f.manifests.m == nil {
		f.manifests.m = map[fileKey]*manifestBuf{}
	}
	f.manifests.m[k] = nb
	f.manifests.mu.Unlock()
	f.stats.manifestLoads.Add(1)
	return &manifestHandle{f: f, path: p, buf: nb}, nil
}

// releaseManifest drops a reference; the last one lets the bytes go.
func (f *FS) releaseManifest(b *manifestBuf) {
	f.manifests.mu.Lock()
	b.refs--
	last := b.refs == 0
	if last && f.manifests.m[b.key] == b {
		delete(f.manifests.m, b.key)
	}
	f.manifests.mu.Unlock()
	if last {
		f.uncharge(b)
	}
}

func (f *FS) uncharge(b *manifestBuf) {
	if b.charged > 0 {
		f.opts.Cache.Uncharge(b.charged)
	}
}

// openManifestBuffers returns how many buffers are shared now and their
// bytes, for .regfs/stats.
func (f *FS) openManifestBuffers() (n int, size int64) {
	f.manifests.mu.Lock()
	defer f.manifests.mu.Unlock()
	for _, b := range f.manifests.m {
		size += int64(len(b.data))
	}
	return len(f.manifests.m), size
}

// manifestHandle reads a revision (or the revision a tag pointed to at
// open) from its shared buffer.
type manifestHandle struct {
	noPoll
	f    *FS
	path string
	buf  *manifestBuf
	once sync.Once
}

// Read implements fs.HandleReader.
func (h *manifestHandle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	n, err := bytes.NewReader(h.buf.data).ReadAt(resp.Data[:req.Size], req.Offset)
	resp.Data = resp.Data[:n]
	h.f.countRead(n)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return h.f.errno("read", h.path, err)
}

// Release implements fs.HandleReleaser.
func (h *manifestHandle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	h.once.Do(func() { h.f.releaseManifest(h.buf) })
	return nil
}
