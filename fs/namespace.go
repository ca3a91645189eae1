package fs

import (
	"context"
	"path"
	"slices"
	"sort"
	"strings"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.Node                = nsDir{}
	_ fs.NodeRequestLookuper = nsDir{}
	_ fs.HandleReadDirAller  = nsDir{}
	_ fs.NodeMkdirer         = nsDir{}
	_ fs.NodeRemover         = nsDir{}
)

// nsDir is a namespace directory below the root: a/, a/b/. Any of them may
// be a repository, so each offers _layers, _manifests and _uploads besides
// its sub-namespaces, and _files, the files of its images, which is
// looked up but not listed (see filesDir). It holds only directories. Its path (refusals.dir)
// is the namespace's name.
type nsDir struct {
	noXattr
	synced
	refusals
	ino uint64
}

func newNSDir(f *FS, p string) nsDir {
	return nsDir{refusals: refusals{f: f, dir: p}, ino: pathInode(p)}
}

// Attr implements fs.Node.
func (d nsDir) Attr(ctx context.Context, a *fuse.Attr) error {
	d.f.dirAttr(a, d.dir, d.ino, d.f.opts.DirCacheTTL)
	return nil
}

// Lookup implements fs.NodeRequestLookuper. The reserved names exist in
// every namespace directory, so their entries are valid for long: a
// second find looks none of them up again.
func (d nsDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	switch req.Name {
	case reservedLayers:
		resp.EntryValid = immutableTTL
		return newLayersDir(d.f, d.dir), nil
	case reservedManifests:
		resp.EntryValid = immutableTTL
		return newManifestsDir(d.f, d.dir), nil
	case reservedUploads:
		resp.EntryValid = immutableTTL
		return newUploadsDir(d.f, d.dir), nil
	case reservedFiles:
		resp.EntryValid = immutableTTL
		return newFilesDir(d.f, d.dir), nil
	}
	return d.f.lookupNamespace(ctx, d.dir, req.Name, resp)
}

// ReadDirAll implements fs.HandleReadDirAller.
func (d nsDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	out, err := d.f.readNamespace(ctx, d, d.dir, d.ino)
	if err != nil {
		return nil, err
	}
	for _, n := range []string{reservedLayers, reservedManifests, reservedUploads} {
		out = append(out, fuse.Dirent{Inode: childInode(d.ino, n), Type: fuse.DT_Dir, Name: n})
	}
	return append(dots(d.ino, pathInode(path.Dir("/" + d.dir)[1:])), out...), nil
}

// Mkdir implements fs.NodeMkdirer.
func (d nsDir) Mkdir(ctx context.Context, req *fuse.MkdirRequest) (fs.Node, error) {
	return d.f.mkdir(ctx, d.dir, req.Name)
}

// Remove implements fs.NodeRemover: rmdir of a sub-namespace or repository.
func (d nsDir) Remove(ctx context.Context, req *fuse.RemoveRequest) error {
	switch req.Name {
	case reservedLayers, reservedManifests, reservedUploads:
		return d.f.rmdirReserved(ctx, d.dir, req.Name)
	}
	return d.f.rmdir(ctx, d.dir, req.Name)
}

// rmdirReserved is rmdir of a repository's _layers, _manifests or
// _uploads: ENOTEMPTY while it holds anything, else success without a
// change, as the directory is part of the repository for as long as the
// repository exists. This is the step of rm -rf of a repository between
// emptying these directories and removing the repository.
func (f *FS) rmdirReserved(ctx context.Context, repoName, name string) error {
	p := joinPath(repoName, name)
	if err := f.readOnly(); err != nil {
		return f.errno("rmdir", p, err)
	}
	repo, err := f.st.Repository(repoName)
	if err != nil {
		return f.errno("rmdir", p, err)
	}
	var n int
	switch name {
	case reservedLayers:
		l, err := repo.Layers().List(ctx)
		if err != nil {
			return f.errno("rmdir", p, err)
		}
		n = len(l)
	case reservedManifests:
		revs, err := repo.Manifests().List(ctx)
		if err != nil {
			return f.errno("rmdir", p, err)
		}
		tags, err := repo.Tags().List(ctx)
		if err != nil {
			return f.errno("rmdir", p, err)
		}
		n = len(revs) + len(tags) + len(f.pendingNames(repoName))
	case reservedUploads:
		l, err := repo.Uploads().List(ctx)
		if err != nil {
			return f.errno("rmdir", p, err)
		}
		n = len(l)
	}
	if n > 0 {
		return f.errno("rmdir", p, errNotEmpty)
	}
	return nil
}

// lookupNamespace finds the sub-namespace name of parent: one made by mkdir,
// a repository, or a namespace holding repositories. Its entry is valid
// for DirCacheTTL, like the listing of parent: a repository another writer
// deletes disappears within that time. A name the last listing of parent
// (not expired) had needs no storage access, and its entry expires with
// that listing: find looks up every name it just listed.
func (f *FS) lookupNamespace(ctx context.Context, parent, name string, resp *fuse.LookupResponse) (fs.Node, error) {
	p := joinPath(parent, name)
	if strings.HasPrefix(name, "_") || store.ValidateRepositoryName(p) != nil {
		return nil, f.errno("lookup", p, errNotFound)
	}
	if left := f.expiry.listedFor(parent, name); left > 0 {
		resp.EntryValid = left
		return newNSDir(f, p), nil
	}
	ok, err := f.namespaceExists(ctx, parent, name)
	if err != nil {
		return nil, f.errno("lookup", p, err)
	}
	if !ok {
		return nil, f.errno("lookup", p, errNotFound)
	}
	resp.EntryValid = f.opts.DirCacheTTL
	return newNSDir(f, p), nil
}

// namespaceExists tells whether parent/name is a directory: made by mkdir,
// or a directory in storage (a repository, a namespace holding
// repositories, or an empty directory a driver keeps), which one listing
// of it tells. A lookup needs no more: every one of them is the same
// namespace directory.
func (f *FS) namespaceExists(ctx context.Context, parent, name string) (bool, error) {
	p := joinPath(parent, name)
	if f.hasMkdirDir(p) {
		return true, nil
	}
	return f.st.IsDirectory(ctx, p)
}

// readNamespace lists the sub-namespaces of p, whose directory is dir:
// those in storage and those made by mkdir.
func (f *FS) readNamespace(ctx context.Context, dir fs.Node, p string, ino uint64) ([]fuse.Dirent, error) {
	kids, err := f.st.Children(ctx, p)
	if err != nil {
		return nil, f.errno("readdir", p, err)
	}
	kids = slices.Clone(kids)
	sort.Strings(kids)
	f.expiry.listedNamespace(dir, p, slices.Clone(kids))
	seen := map[string]bool{}
	for _, k := range kids {
		seen[k] = true
	}
	for _, k := range f.mkdirChildren(p) {
		if !seen[k] {
			seen[k] = true
			kids = append(kids, k)
		}
	}
	sort.Strings(kids)
	out := make([]fuse.Dirent, 0, len(kids)+3)
	for _, k := range kids {
		out = append(out, fuse.Dirent{Inode: childInode(ino, k), Type: fuse.DT_Dir, Name: k})
	}
	return out, nil
}

// mkdir makes the directory name in parent. It exists in memory only until
// something is pushed into it: a namespace is not a repository.
func (f *FS) mkdir(ctx context.Context, parent, name string) (fs.Node, error) {
	p := joinPath(parent, name)
	if err := f.readOnly(); err != nil {
		return nil, f.errno("mkdir", p, err)
	}
	if strings.HasPrefix(name, "_") {
		return nil, f.errno("mkdir", p, errInvalidName(p, "names starting with '_' are reserved"))
	}
	if err := store.ValidateRepositoryName(p); err != nil {
		return nil, f.errno("mkdir", p, err)
	}
	ok, err := f.namespaceExists(ctx, parent, name)
	if err != nil {
		return nil, f.errno("mkdir", p, err)
	}
	if ok {
		return nil, f.errno("mkdir", p, errExists)
	}
	f.addMkdirDir(parent, name)
	return newNSDir(f, p), nil
}

// rmdir removes the directory name in parent: a repository only when it is
// empty (store.RemoveRepository decides), a directory made by mkdir only
// when no directory was made in it.
func (f *FS) rmdir(ctx context.Context, parent, name string) error {
	p := joinPath(parent, name)
	if err := f.readOnly(); err != nil {
		return f.errno("rmdir", p, err)
	}
	if len(f.mkdirChildren(p)) > 0 {
		return f.errno("rmdir", p, errNotEmpty)
	}
	kids, err := f.st.Children(ctx, p)
	if err != nil {
		return f.errno("rmdir", p, err)
	}
	if len(kids) > 0 {
		return f.errno("rmdir", p, errNotEmpty)
	}
	// A directory made by mkdir that nothing was pushed into has no
	// repository in storage to remove, and a repository whose last link
	// was removed may be gone from storage already (drivers without
	// directories drop it): either way the directory is gone, as asked.
	if err := f.st.RemoveRepository(ctx, p); err != nil && !isNotFoundErr(err) {
		return f.errno("rmdir", p, err)
	}
	f.removeMkdirDir(parent, name)
	f.forgetDirectory(parent, p)
	return nil
}

// errInvalidName wraps store.ErrInvalidName with the name and reason.
func errInvalidName(name, reason string) error {
	return &nameError{name: name, reason: reason}
}

type nameError struct{ name, reason string }

func (e *nameError) Error() string { return "invalid name " + path.Base(e.name) + ": " + e.reason }
func (e *nameError) Unwrap() error { return store.ErrInvalidName }
