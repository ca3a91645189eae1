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
	_ fs.NodeCreater         = rootDir{}
	_ fs.NodeLinker          = rootDir{}
	_ fs.NodeSymlinker       = rootDir{}
	_ fs.NodeRenamer         = rootDir{}
	_ fs.NodeSetattrer       = rootDir{}
)

// rootDir is the mount's root: the top-level namespaces and .regfs. It is
// not a repository (a repository name has at least one component), so it
// has no _layers, _manifests or _uploads.
type rootDir struct {
	noXattr
	f *FS
}

// Attr implements fs.Node.
func (r rootDir) Attr(ctx context.Context, a *fuse.Attr) error {
	dirAttr(r.f, a, rootInode, r.f.opts.AttrTTL)
	return nil
}

// Lookup implements fs.NodeRequestLookuper.
func (r rootDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	if req.Name == controlDirName {
		resp.EntryValid = immutableTTL
		return controlDir{f: r.f}, nil
	}
	return r.f.lookupNamespace(ctx, "", req.Name, resp)
}

// ReadDirAll implements fs.HandleReadDirAller.
func (r rootDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	out, err := r.f.readNamespace(ctx, "", rootInode)
	if err != nil {
		return nil, err
	}
	dot := fuse.Dirent{Inode: controlDir{f: r.f}.ino(), Type: fuse.DT_Dir, Name: controlDirName}
	return append([]fuse.Dirent{dot}, out...), nil
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

// Create implements fs.NodeCreater: the root holds only directories.
func (r rootDir) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fs.Node, fs.Handle, error) {
	return nil, nil, r.f.refuse("create", req.Name)
}

// Link implements fs.NodeLinker: the root holds only directories.
func (r rootDir) Link(ctx context.Context, req *fuse.LinkRequest, old fs.Node) (fs.Node, error) {
	return nil, r.f.refuse("link", req.NewName)
}

// Symlink implements fs.NodeSymlinker: regfs has no symbolic links.
func (r rootDir) Symlink(ctx context.Context, req *fuse.SymlinkRequest) (fs.Node, error) {
	return nil, r.f.refuse("symlink", req.NewName)
}

// Rename implements fs.NodeRenamer: storage cannot rename atomically.
func (r rootDir) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fs.Node) error {
	return r.f.refuse("rename", req.OldName)
}

// Setattr implements fs.NodeSetattrer.
func (r rootDir) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return r.f.setattrFixed("setattr", "", req)
}
