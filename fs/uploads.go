package fs

import (
	"context"
	"fmt"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.Node                = uploadsDir{}
	_ fs.NodeRequestLookuper = uploadsDir{}
	_ fs.HandleReadDirAller  = uploadsDir{}
	_ fs.NodeCreater         = uploadsDir{}
	_ fs.NodeRemover         = uploadsDir{}
	_ fs.NodeRenamer         = uploadsDir{}

	_ fs.Node          = uploadFile{}
	_ fs.NodeOpener    = uploadFile{}
	_ fs.NodeSetattrer = uploadFile{}
	_ fs.NodeFsyncer   = uploadFile{}
)

// uploadsDir is a repository's _uploads/. Uploads regfs started are named
// by the digest they must hash to; uploads another writer (the registry)
// left are named by their ID. Uploads are made by writing, never by ln.
type uploadsDir struct {
	noXattr
	synced
	refusals
	repo string
	ino  uint64
}

func newUploadsDir(f *FS, repo string) uploadsDir {
	return uploadsDir{
		refusals: refusals{f: f, dir: joinPath(repo, reservedUploads)},
		repo:     repo,
		ino:      childInode(pathInode(repo), reservedUploads),
	}
}

// Attr implements fs.Node.
func (d uploadsDir) Attr(ctx context.Context, a *fuse.Attr) error {
	d.f.dirAttr(a, d.dir, d.ino, immutableTTL)
	return nil
}

// Lookup implements fs.NodeRequestLookuper. Entries are never cached: the
// kernel starts O_APPEND writes at the size it last saw, so that size must
// be fetched at every open.
func (d uploadsDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	p := d.path(req.Name)
	key := fileKey{d.repo, req.Name}
	if d.f.openUpload(key) == nil {
		if c, ok := d.f.committedFor(key, req.Pid); ok {
			resp.EntryValid = 0
			return committedFile{f: d.f, dir: d, name: req.Name, size: c.size}, nil
		}
		if _, err := d.f.findUpload(ctx, key); err != nil {
			return nil, d.f.errno("lookup", p, err)
		}
	}
	resp.EntryValid = 0
	return uploadFile{f: d.f, dir: d, name: req.Name}, nil
}

// ReadDirAll implements fs.HandleReadDirAller.
func (d uploadsDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return nil, d.f.errno("readdir", d.path(""), err)
	}
	infos, err := repo.Uploads().List(ctx)
	if err != nil {
		return nil, d.f.errno("readdir", d.path(""), err)
	}
	out := dots(d.ino, pathInode(d.repo))
	seen := map[string]bool{}
	for _, in := range infos {
		n := uploadName(in)
		if !seen[n] {
			seen[n] = true
			out = append(out, fuse.Dirent{Inode: childInode(d.ino, n), Type: fuse.DT_File, Name: n})
		}
	}
	d.f.expiry.listed(d)
	return out, nil
}

// uploadInfo describes the upload id of repo.
func (f *FS) uploadInfo(ctx context.Context, repo, id string) (store.UploadInfo, error) {
	r, err := f.st.Repository(repo)
	if err != nil {
		return store.UploadInfo{}, err
	}
	return r.Uploads().Stat(ctx, id)
}

// uploadName is the file name of an upload: its expected digest, or its ID
// when it has none.
func uploadName(in store.UploadInfo) string {
	if in.Expected != "" {
		return in.Expected.String()
	}
	return in.ID
}

// Create implements fs.NodeCreater: _uploads/sha256:<hex> starts an upload
// that must hash to that digest, or resumes the one in progress.
func (d uploadsDir) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fs.Node, fs.Handle, error) {
	p := d.path(req.Name)
	if err := d.f.readOnly(); err != nil {
		return nil, nil, d.f.errno("create", p, err)
	}
	if _, err := uploadDigest(req.Name); err != nil {
		return nil, nil, d.f.errno("create", p, err)
	}
	key := fileKey{d.repo, req.Name}
	st, err := d.f.acquireUpload(ctx, key, true)
	if err != nil {
		return nil, nil, d.f.errno("create", p, err)
	}
	if req.Flags&fuse.OpenTruncate != 0 {
		if err := d.f.restartUpload(ctx, key); err != nil {
			d.f.releaseUpload(st)
			return nil, nil, d.f.errno("create", p, err)
		}
	}
	resp.EntryValid = 0
	resp.Flags |= UploadOpenFlags
	n := uploadFile{f: d.f, dir: d, name: req.Name}
	return n, &uploadHandle{f: d.f, node: n, st: st, created: true, opener: processOf(req.Pid)}, nil
}

// Remove implements fs.NodeRemover: rm cancels the upload.
func (d uploadsDir) Remove(ctx context.Context, req *fuse.RemoveRequest) error {
	p := d.path(req.Name)
	if err := d.f.readOnly(); err != nil {
		return d.f.errno("unlink", p, err)
	}
	return d.f.errno("unlink", p, d.f.cancelUpload(ctx, fileKey{d.repo, req.Name}))
}

// uploadFile is one upload in progress. Its size is the bytes uploaded so
// far; it only grows, by appending.
type uploadFile struct {
	noXattr
	f    *FS
	dir  uploadsDir
	name string
}

func (u uploadFile) path() string { return u.dir.path(u.name) }
func (u uploadFile) key() fileKey { return fileKey{u.dir.repo, u.name} }

// Attr implements fs.Node. Never cached (see uploadsDir.Lookup).
func (u uploadFile) Attr(ctx context.Context, a *fuse.Attr) error {
	u.f.baseAttr(a)
	a.Inode = childInode(u.dir.ino, u.name)
	a.Valid = 0
	a.Mode = u.f.mode(modeFile)
	if st := u.f.openUpload(u.key()); st != nil {
		st.mu.Lock()
		a.Size = uint64(st.up.Size())
		mtime, id := st.modTime, st.up.ID()
		st.mu.Unlock()
		if mtime.IsZero() {
			// Open, not written to yet: storage's time, read once.
			if info, err := u.f.uploadInfo(ctx, u.dir.repo, id); err == nil {
				mtime = info.ModTime
				st.mu.Lock()
				if st.modTime.IsZero() {
					st.modTime = mtime
				}
				st.mu.Unlock()
			}
		}
		setTimes(a, mtime)
	} else {
		info, err := u.f.findUpload(ctx, u.key())
		if err != nil {
			return u.f.errno("getattr", u.path(), err)
		}
		a.Size = uint64(info.Size)
		if info.Expected == "" {
			a.Mode = u.f.mode(modeReadOnly)
		}
		setTimes(a, info.ModTime)
	}
	a.Blocks = blocks(int64(a.Size))
	return nil
}

// Open implements fs.NodeOpener. Uploads are for writing only: reading one
// is EACCES.
func (u uploadFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	if !req.Flags.IsWriteOnly() {
		return nil, u.f.errno("open", u.path(), errNotReadable)
	}
	if err := u.f.readOnly(); err != nil {
		return nil, u.f.errno("open", u.path(), err)
	}
	st, err := u.f.acquireUpload(ctx, u.key(), false)
	if err != nil {
		return nil, u.f.errno("open", u.path(), err)
	}
	resp.Flags |= UploadOpenFlags
	return &uploadHandle{f: u.f, node: u, st: st, opener: processOf(req.Pid)}, nil
}

// UploadOpenFlags are the flags uploads are opened with: direct I/O, so
// that each write(2) reaches regfs from the writer's own pages instead of
// through the page cache. An upload is never read through the mount, so
// caching its pages only costs: the kernel allocated and filled a page
// cache as large as the upload. With direct I/O, cp of 1 GiB into _uploads/
// took 1.13-1.20 s instead of 1.36-1.63 s, with a quarter less CPU (see
// docs/benchmarks.md).
const UploadOpenFlags = fuse.OpenDirectIO

// Setattr implements fs.NodeSetattrer. Truncating to 0 starts the upload
// over (what O_TRUNC does); truncating to the current size does nothing;
// any other size is EINVAL, as an upload only grows by appending.
func (u uploadFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	p := u.path()
	if err := u.f.readOnly(); err != nil {
		return u.f.errno("setattr", p, err)
	}
	if err := ignoredAttrs(req); err != nil {
		return u.f.errno("setattr", p, err)
	}
	if !req.Valid.Size() {
		return nil
	}
	if req.Size == 0 {
		return u.f.errno("setattr", p, u.f.restartUpload(ctx, u.key()))
	}
	size, err := u.f.uploadSize(ctx, u.key())
	if err != nil {
		return u.f.errno("setattr", p, err)
	}
	if int64(req.Size) != size {
		return u.f.errno("setattr", p, fmt.Errorf("%w: truncate to %d, upload has %d bytes", store.ErrInvalidOffset, req.Size, size))
	}
	return nil
}

// Fsync implements fs.NodeFsyncer: the data and hash state become durable.
func (u uploadFile) Fsync(ctx context.Context, req *fuse.FsyncRequest) error {
	st := u.f.openUpload(u.key())
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return nil
	}
	return u.f.errno("fsync", u.path(), st.up.Flush(context.WithoutCancel(ctx)))
}

// uploadDigest returns the digest an upload named name must hash to: the
// name itself, or the digest in an rsync temporary name (see tempUpload).
func uploadDigest(name string) (digest.Digest, error) {
	if d, ok := tempUpload(name); ok {
		return d, nil
	}
	return store.ParseDigest(name)
}

// tempUpload tells whether name is the temporary name rsync writes a file
// to before renaming it into place (".<name>.XXXXXX"), for a name that is a
// digest, and returns that digest. Such a file is an upload of the digest
// like any other: it commits at close, and the rename that follows
// (Rename) has nothing left to do.
func tempUpload(name string) (digest.Digest, bool) {
	if len(name) < 2+7 || name[0] != '.' || name[len(name)-7] != '.' {
		return "", false
	}
	for _, c := range name[len(name)-6:] {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return "", false
		}
	}
	d, err := store.ParseDigest(name[1 : len(name)-7])
	return d, err == nil
}

// Rename implements fs.NodeRenamer: only rsync's rename of its temporary
// name to the digest it names (tempUpload), once the upload under it was
// committed at close: the layer is stored already, so there is nothing to
// move. Any other rename in _uploads is EPERM; of a temporary name whose
// upload is still open, EBUSY; of one whose upload did not commit, ENOENT.
func (d uploadsDir) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fs.Node) error {
	p := d.path(req.OldName)
	if err := d.f.readOnly(); err != nil {
		return d.f.errno("rename", p, err)
	}
	to, ok := newDir.(uploadsDir)
	dgst, temp := tempUpload(req.OldName)
	if !ok || to.repo != d.repo || !temp || dgst.String() != req.NewName {
		return d.f.errno("rename", p, errNotSupported)
	}
	old := fileKey{d.repo, req.OldName}
	if d.f.openUpload(old) != nil {
		return d.f.errno("rename", p, errBusy)
	}
	d.f.mu.Lock()
	c, ok := d.f.committed[old]
	if ok {
		delete(d.f.committed, old)
		d.f.committed[fileKey{d.repo, req.NewName}] = c
	}
	d.f.mu.Unlock()
	if ok {
		return nil
	}
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return d.f.errno("rename", p, err)
	}
	if _, err := repo.Layers().Stat(ctx, dgst); err != nil {
		return d.f.errno("rename", p, err)
	}
	return nil
}
