package fs

import (
	"context"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.Node                = layersDir{}
	_ fs.NodeRequestLookuper = layersDir{}
	_ fs.HandleReadDirAller  = layersDir{}
	_ fs.NodeRemover         = layersDir{}
	_ fs.NodeLinker          = layersDir{}
	_ fs.NodeCreater         = layersDir{}
	_ fs.NodeMkdirer         = layersDir{}
	_ fs.NodeSymlinker       = layersDir{}
	_ fs.NodeRenamer         = layersDir{}
	_ fs.NodeSetattrer       = layersDir{}

	_ fs.Node          = layerFile{}
	_ fs.NodeOpener    = layerFile{}
	_ fs.NodeSetattrer = layerFile{}
)

// layersDir is a repository's _layers/: the blobs linked into it.
type layersDir struct {
	noXattr
	f    *FS
	repo string
	ino  uint64
}

func (d layersDir) path(name string) string { return joinPath(d.repo, reservedLayers+"/"+name) }

// Attr implements fs.Node.
func (d layersDir) Attr(ctx context.Context, a *fuse.Attr) error {
	dirAttr(d.f, a, d.ino, immutableTTL)
	return nil
}

// Lookup implements fs.NodeRequestLookuper. Only the blob's link and size
// are read, never its data.
func (d layersDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	p := d.path(req.Name)
	dgst, err := store.ParseDigest(req.Name)
	if err != nil {
		return nil, d.f.errno("lookup", p, errNotFound)
	}
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return nil, d.f.errno("lookup", p, err)
	}
	desc, err := repo.Layers().Stat(ctx, dgst)
	if err != nil {
		return nil, d.f.errno("lookup", p, err)
	}
	resp.EntryValid = immutableTTL
	return layerFile{f: d.f, repo: d.repo, dgst: dgst, size: desc.Size}, nil
}

// ReadDirAll implements fs.HandleReadDirAller.
func (d layersDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return nil, d.f.errno("readdir", d.path(""), err)
	}
	ds, err := repo.Layers().List(ctx)
	if err != nil {
		return nil, d.f.errno("readdir", d.path(""), err)
	}
	out := make([]fuse.Dirent, len(ds))
	for i, dg := range ds {
		out[i] = fuse.Dirent{Inode: digestInode(dg), Type: fuse.DT_File, Name: dg.String()}
	}
	return out, nil
}

// Remove implements fs.NodeRemover: rm unlinks the blob from the
// repository; its data stays until gc.
func (d layersDir) Remove(ctx context.Context, req *fuse.RemoveRequest) error {
	p := d.path(req.Name)
	if err := d.f.readOnly(); err != nil {
		return d.f.errno("unlink", p, err)
	}
	dgst, err := store.ParseDigest(req.Name)
	if err != nil {
		return d.f.errno("unlink", p, errNotFound)
	}
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return d.f.errno("unlink", p, err)
	}
	return d.f.errno("unlink", p, repo.Layers().Unlink(ctx, dgst))
}

// Link implements fs.NodeLinker: ln a/_layers/<d> b/_layers/ links the blob
// into b without copying (a cross-repository mount). The source must be a
// layer and the new name its digest.
func (d layersDir) Link(ctx context.Context, req *fuse.LinkRequest, old fs.Node) (fs.Node, error) {
	p := d.path(req.NewName)
	if err := d.f.readOnly(); err != nil {
		return nil, d.f.errno("link", p, err)
	}
	src, ok := old.(layerFile)
	if !ok || src.dgst.String() != req.NewName {
		return nil, d.f.errno("link", p, errWrongKind)
	}
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return nil, d.f.errno("link", p, err)
	}
	if err := repo.Layers().Link(ctx, src.dgst); err != nil {
		return nil, d.f.errno("link", p, err)
	}
	return layerFile{f: d.f, repo: d.repo, dgst: src.dgst, size: src.size}, nil
}

// Create implements fs.NodeCreater: blobs arrive through _uploads/.
func (d layersDir) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fs.Node, fs.Handle, error) {
	return nil, nil, d.f.refuse("create", d.path(req.Name))
}

// Mkdir implements fs.NodeMkdirer.
func (d layersDir) Mkdir(ctx context.Context, req *fuse.MkdirRequest) (fs.Node, error) {
	return nil, d.f.refuse("mkdir", d.path(req.Name))
}

// Symlink implements fs.NodeSymlinker.
func (d layersDir) Symlink(ctx context.Context, req *fuse.SymlinkRequest) (fs.Node, error) {
	return nil, d.f.refuse("symlink", d.path(req.NewName))
}

// Rename implements fs.NodeRenamer.
func (d layersDir) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fs.Node) error {
	return d.f.refuse("rename", d.path(req.OldName))
}

// Setattr implements fs.NodeSetattrer.
func (d layersDir) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return d.f.setattrFixed("setattr", d.path(""), req)
}

// layerFile is one blob linked into a repository. It never changes: its
// size is part of its identity.
type layerFile struct {
	noXattr
	f    *FS
	repo string
	dgst digest.Digest
	size int64
}

func (l layerFile) path() string { return joinPath(l.repo, reservedLayers+"/"+l.dgst.String()) }

// Attr implements fs.Node.
func (l layerFile) Attr(ctx context.Context, a *fuse.Attr) error {
	l.f.immutableAttr(a, l.dgst, l.size)
	return nil
}

// Open implements fs.NodeOpener. The kernel keeps the page cache across
// opens: the bytes behind a digest cannot change.
func (l layerFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	if !req.Flags.IsReadOnly() {
		return nil, l.f.refuseWrite("open", l.path())
	}
	repo, err := l.f.st.Repository(l.repo)
	if err != nil {
		return nil, l.f.errno("open", l.path(), err)
	}
	r, err := repo.Layers().Open(ctx, l.dgst)
	if err != nil {
		return nil, l.f.errno("open", l.path(), err)
	}
	resp.Flags |= fuse.OpenKeepCache
	return &blobHandle{f: l.f, path: l.path(), r: r}, nil
}

// Setattr implements fs.NodeSetattrer.
func (l layerFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return l.f.setattrFixed("setattr", l.path(), req)
}

// immutableAttr fills the attributes of a blob or a revision: content
// addressed, so read-only, inode from the digest, valid for long.
func (f *FS) immutableAttr(a *fuse.Attr, dgst digest.Digest, size int64) {
	a.Inode = digestInode(dgst)
	a.Mode = 0o444
	a.Size = uint64(size)
	a.Blocks = blocks(size)
	a.Valid = immutableTTL
	f.attrTimes(a)
}

// refuseWrite is the error for writing an immutable file: EROFS on a
// read-only mount, EPERM otherwise.
func (f *FS) refuseWrite(op, name string) error {
	if err := f.readOnly(); err != nil {
		return f.errno(op, name, err)
	}
	return f.errno(op, name, errImmutable)
}

// blocks is size in 512-byte units, for du.
func blocks(size int64) uint64 { return uint64(size+511) / 512 }
