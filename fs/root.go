package fs

import (
	"context"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

var (
	_ fs.Node                = rootDir{}
	_ fs.NodeRequestLookuper = rootDir{}
	_ fs.HandleReadDirAller  = rootDir{}
	_ fs.NodeMkdirer         = rootDir{}
	_ fs.NodeRemover         = rootDir{}
)

// rootDir is the mount's root: the top-level namespaces and .regfs. It is
// not a repository (a repository name has at least one component), so it
// has no _layers, _manifests or _uploads. It holds only directories.
type rootDir struct {
	noXattr
	synced
	refusals
}

func newRootDir(f *FS) rootDir { return rootDir{refusals: refusals{f: f}} }

// Attr implements fs.Node.
func (r rootDir) Attr(ctx context.Context, a *fuse.Attr) error {
	r.f.dirAttr(a, "", rootInode, r.f.opts.DirCacheTTL)
	return nil
}

// Lookup implements fs.NodeRequestLookuper.
func (r rootDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	if req.Name == controlDirName {
		resp.EntryValid = immutableTTL
		return newControlDir(r.f), nil
	}
	return r.f.lookupNamespace(ctx, "", req.Name, resp)
}

// ReadDirAll implements fs.HandleReadDirAller.
func (r rootDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	out, err := r.f.readNamespace(ctx, r, "", rootInode)
	if err != nil {
		return nil, err
	}
	ctl := fuse.Dirent{Inode: controlInode, Type: fuse.DT_Dir, Name: controlDirName}
	return append(dots(rootInode, rootInode, ctl), out...), nil
}

// Mkdir implements fs.NodeMkdirer.
func (r rootDir) Mkdir(ctx context.Context, req *fuse.MkdirRequest) (fs.Node, error) {
	return r.f.mkdir(ctx, "", req.Name)
}

// Remove implements fs.NodeRemover: rmdir of a top-level namespace.
func (r rootDir) Remove(ctx context.Context, req *fuse.RemoveRequest) error {
	if req.Name == controlDirName {
		return r.f.refuse("rmdir", req.Name)
	}
	return r.f.rmdir(ctx, "", req.Name)
}
