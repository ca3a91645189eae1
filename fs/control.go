package fs

import (
	"context"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

var (
	_ fs.Node                = controlDir{}
	_ fs.NodeRequestLookuper = controlDir{}
	_ fs.HandleReadDirAller  = controlDir{}

	_ fs.Node          = controlFile{}
	_ fs.NodeOpener    = controlFile{}
	_ fs.NodeSetattrer = controlFile{}
)

// Control file names in .regfs/.
const (
	controlErrors = "errors"
	controlStats  = "stats"
)

// controlInode is the inode of .regfs.
var controlInode = childInode(rootInode, controlDirName)

// controlDir is .regfs/: files about the daemon itself. Nothing in it can
// be changed.
type controlDir struct {
	noXattr
	synced
	refusals
}

func newControlDir(f *FS) controlDir {
	return controlDir{refusals: refusals{f: f, dir: controlDirName}}
}

// Attr implements fs.Node.
func (d controlDir) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode = controlInode
	a.Mode = d.f.mode(modeControlDir)
	a.Valid = immutableTTL
	d.f.baseAttr(a)
	return nil
}

// Lookup implements fs.NodeRequestLookuper.
func (d controlDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	switch req.Name {
	case controlErrors, controlStats:
		resp.EntryValid = immutableTTL
		return controlFile{f: d.f, name: req.Name}, nil
	}
	return nil, d.f.errno("lookup", joinPath(controlDirName, req.Name), errNotFound)
}

// ReadDirAll implements fs.HandleReadDirAller.
func (d controlDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	return dots(controlInode, rootInode,
		fuse.Dirent{Inode: childInode(controlInode, controlErrors), Type: fuse.DT_File, Name: controlErrors},
		fuse.Dirent{Inode: childInode(controlInode, controlStats), Type: fuse.DT_File, Name: controlStats},
	), nil
}

// controlFile is .regfs/errors or .regfs/stats. Its content is made at open
// and served with direct I/O, so a reader sees one consistent snapshot
// whatever size the kernel last saw.
type controlFile struct {
	noXattr
	synced
	f    *FS
	name string
}

// Attr implements fs.Node. The size is the current content's; it changes
// at any time, so it is never cached.
func (c controlFile) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode = childInode(controlInode, c.name)
	a.Mode = c.f.mode(modeReadOnly)
	a.Size = uint64(len(c.content()))
	a.Valid = 0
	c.f.baseAttr(a)
	return nil
}

// Open implements fs.NodeOpener.
func (c controlFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	p := joinPath(controlDirName, c.name)
	if !req.Flags.IsReadOnly() {
		if err := c.f.readOnly(); err != nil {
			return nil, c.f.errno("open", p, err)
		}
		return nil, c.f.errno("open", p, errImmutable)
	}
	resp.Flags |= fuse.OpenDirectIO
	return &bytesHandle{f: c.f, path: p, data: c.content()}, nil
}

// Setattr implements fs.NodeSetattrer.
func (c controlFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return c.f.setattrFixed("setattr", joinPath(controlDirName, c.name), req)
}

func (c controlFile) content() []byte {
	switch c.name {
	case controlErrors:
		return c.f.errLog.render()
	case controlStats:
		return c.f.statsJSON()
	}
	return nil
}
