package fs

import (
	"context"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.Node          = revisionFile{}
	_ fs.NodeOpener    = revisionFile{}
	_ fs.NodeSetattrer = revisionFile{}
	_ fs.Node          = tagFile{}
	_ fs.NodeOpener    = tagFile{}
	_ fs.NodeSetattrer = tagFile{}
	_ fs.NodeForgetter = tagFile{}
)

// revisionFile is a manifest revision, _manifests/sha256:<hex>. Its bytes
// are what a registry client receives (schema1 with its signatures).
type revisionFile struct {
	noXattr
	synced
	f    *FS
	repo string
	dgst digest.Digest
	size int64
	// mtime is the revision link's modification time: when it was pushed.
	mtime time.Time
}

func (r revisionFile) path() string {
	return joinPath(r.repo, reservedManifests+"/"+r.dgst.String())
}

// Attr implements fs.Node.
func (r revisionFile) Attr(ctx context.Context, a *fuse.Attr) error {
	r.f.immutableAttr(a, r.dgst, r.size, r.mtime)
	return nil
}

// Open implements fs.NodeOpener.
func (r revisionFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	if !req.Flags.IsReadOnly() {
		return nil, r.f.refuseWrite("open", r.path())
	}
	repo, err := r.f.st.Repository(r.repo)
	if err != nil {
		return nil, r.f.errno("open", r.path(), err)
	}
	h, err := r.f.openManifest(ctx, repo, r.dgst, r.path())
	if err != nil {
		return nil, r.f.errno("open", r.path(), err)
	}
	resp.Flags |= fuse.OpenKeepCache
	return h, nil
}

// Setattr implements fs.NodeSetattrer.
func (r revisionFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return r.f.setattrFixed("setattr", r.path(), req)
}

// tagFile is a tag, _manifests/<tag>, or a manifest being written under a
// name that is not in storage yet. A tag reads as the revision it points
// to now and shares its inode.
type tagFile struct {
	noXattr
	synced
	f    *FS
	repo string
	name string
}

func (t tagFile) path() string { return joinPath(t.repo, reservedManifests+"/"+t.name) }

// moved returns t under the name mv gave it: the kernel moves the node of
// a renamed name to the new name, and the node's value keeps the old one
// (see manifestsDir.Rename).
func (t tagFile) moved() tagFile {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	if n, ok := t.f.renamed[fileKey{t.repo, t.name}]; ok {
		t.name = n
	}
	return t
}

// Forget implements fs.NodeForgetter: once the kernel has dropped the
// node, no entry can reach it under the name mv gave it.
func (t tagFile) Forget() { t.f.forgetRename(t.repo, t.name) }

func (t tagFile) dir() manifestsDir {
	return newManifestsDir(t.f, t.repo)
}

// Attr implements fs.Node.
func (t tagFile) Attr(ctx context.Context, a *fuse.Attr) error {
	t = t.moved()
	t.f.baseAttr(a)
	if w := t.f.pendingManifest(fileKey{t.repo, t.name}); w != nil {
		a.Inode = childInode(t.dir().ino, t.name)
		a.Mode = t.f.mode(modeFile)
		a.Size = uint64(w.size())
		a.Valid = 0
		return nil
	}
	repo, err := t.f.st.Repository(t.repo)
	if err != nil {
		return t.f.errno("getattr", t.path(), err)
	}
	dgst, err := resolveName(ctx, repo, t.name)
	if err != nil {
		return t.f.errno("getattr", t.path(), err)
	}
	size, err := t.f.manifestSize(ctx, repo, dgst)
	if err != nil {
		return t.f.errno("getattr", t.path(), err)
	}
	// A tag's time is its current link's (when it was last pointed); a
	// revision's name read through tagFile (a digest being written) has
	// its revision link's.
	var mtime time.Time
	if dgst.String() == t.name {
		mtime, err = repo.Manifests().LinkTime(ctx, dgst)
	} else {
		mtime, err = repo.Tags().LinkTime(ctx, t.name)
	}
	if err != nil {
		return t.f.errno("getattr", t.path(), err)
	}
	setTimes(a, mtime)
	t.f.noteTime(t.dir().dir, mtime)
	a.Inode = digestInode(dgst)
	a.Mode = t.f.mode(modeFile)
	if dgst.String() == t.name {
		a.Mode = t.f.mode(modeReadOnly)
	}
	a.Size = uint64(size)
	a.Blocks = blocks(size)
	a.Valid = t.f.opts.AttrTTL
	return nil
}

// Open implements fs.NodeOpener. Reading takes a snapshot of the revision
// the tag points to at open, so a re-tag never mixes two manifests in one
// read. Writing replaces the tag with a new manifest when the file is
// closed.
//
// Both are direct I/O: a tag's page cache would be shared by its readers
// and its writers, and a write copies the new manifest over the old one's
// cached page, which a reader then sees as the new manifest's head
// followed by the old one's tail (the size the kernel keeps is the old
// one's until the tag is stored). Tags are small; reading them through
// the daemon every time costs little.
func (t tagFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	t = t.moved()
	resp.Flags |= fuse.OpenDirectIO
	if req.Flags.IsReadOnly() {
		repo, err := t.f.st.Repository(t.repo)
		if err != nil {
			return nil, t.f.errno("open", t.path(), err)
		}
		dgst, err := resolveName(ctx, repo, t.name)
		if err != nil {
			return nil, t.f.errno("open", t.path(), err)
		}
		h, err := t.f.openManifest(ctx, repo, dgst, t.path())
		if err != nil {
			return nil, t.f.errno("open", t.path(), err)
		}
		return h, nil
	}
	if err := t.f.readOnly(); err != nil {
		return nil, t.f.errno("open", t.path(), err)
	}
	if w := t.f.pendingManifest(fileKey{t.repo, t.name}); w != nil {
		return w, nil
	}
	if _, err := store.ParseDigest(t.name); err == nil {
		// A revision in storage: its bytes are fixed by its name.
		return nil, t.f.errno("open", t.path(), errImmutable)
	}
	if req.Flags&fuse.OpenAppend != 0 {
		t.f.reject(t.path(), errAppend)
		return nil, t.f.errno("open", t.path(), errAppend)
	}
	return &manifestWriter{f: t.f, dir: t.dir(), name: t.name, opener: processOf(req.Pid)}, nil
}

// Setattr implements fs.NodeSetattrer. Setting the times of a name created
// but never written (touch _manifests/new) is EINVAL: an empty manifest is
// not a push, and succeeding would leave nothing. Truncating to 0 is accepted, as
// every open with O_TRUNC does it first: the manifest written next replaces
// the tag whole. A manifest being written can be truncated to any size.
func (t tagFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	t = t.moved()
	p := t.path()
	if err := t.f.readOnly(); err != nil {
		return t.f.errno("setattr", p, err)
	}
	if err := ignoredAttrs(req); err != nil {
		return t.f.errno("setattr", p, err)
	}
	w := t.f.pendingManifest(fileKey{t.repo, t.name})
	if w != nil && !req.Valid.Size() && (req.Valid.Mtime() || req.Valid.MtimeNow()) && w.untouched() {
		t.f.reject(p, errEmptyManifest)
		return t.f.errno("setattr", p, errEmptyManifest)
	}
	if !req.Valid.Size() {
		return nil
	}
	if w != nil {
		return t.f.errno("setattr", p, w.truncate(int64(req.Size)))
	}
	if req.Size != 0 {
		return t.f.errno("setattr", p, errImmutable)
	}
	if _, err := store.ParseDigest(t.name); err == nil {
		return t.f.errno("setattr", p, errImmutable)
	}
	return nil
}
