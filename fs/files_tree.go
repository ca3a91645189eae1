package fs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"sort"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/regfs/regfs/image"
)

var (
	_ fusefs.Node                = treeDir{}
	_ fusefs.NodeRequestLookuper = treeDir{}
	_ fusefs.HandleReadDirAller  = treeDir{}
	_ fusefs.NodeOpener          = treeDir{}
	_ fusefs.NodeSetattrer       = treeDir{}
	_ fusefs.NodeRenamer         = treeDir{}

	_ fusefs.Node           = treeFile{}
	_ fusefs.NodeOpener     = treeFile{}
	_ fusefs.NodeReadlinker = treeFile{}
	_ fusefs.NodeSetattrer  = treeFile{}
	_ fusefs.HandleReader   = treeFile{}
)

// imageRefusals refuse every change below _files/: EPERM, or EROFS on a
// read-only mount, for chmod and utimes too (which other directories
// accept and ignore): an image's files are what its layers say.
type imageRefusals struct {
	refusals
}

// Setattr implements fs.NodeSetattrer.
func (r imageRefusals) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return r.f.refuse("setattr", r.dir)
}

// Rename implements fs.NodeRenamer.
func (r imageRefusals) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fusefs.Node) error {
	return r.f.refuse("rename", r.path(req.OldName))
}

// treeDir is a directory inside an image. Like every node below an image
// root it holds the tree it belongs to and its node in it, both
// immutable; root is the inode of the image root directory, from which
// every inode below is derived.
type treeDir struct {
	noXattr
	synced
	imageRefusals
	t            *image.Tree
	n            *image.Node
	root, parent uint64
}

// treeFile is anything but a directory inside an image: a regular file, a
// symlink, a device or a fifo. A hard link is one treeFile under several
// names (its value holds no name), so the kernel sees one inode.
type treeFile struct {
	noXattr
	synced
	noPoll
	f    *FS
	t    *image.Tree
	n    *image.Node
	root uint64
	// dir is the path of a directory holding it, for errors (not its own
	// name: a hard link has several).
	dir string
}

// newTreeNode returns the node of n, at path p in the image whose root
// directory has inode root; parent is the inode of the directory holding
// it, and dir that directory's path.
func newTreeNode(f *FS, t *image.Tree, n *image.Node, root, parent uint64, dir, p string) fusefs.Node {
	if n.Mode.IsDir() {
		return treeDir{imageRefusals: imageRefusals{refusals{f: f, dir: p}}, t: t, n: n, root: root, parent: parent}
	}
	return treeFile{f: f, t: t, n: n, root: root, dir: dir}
}

// nodeInode derives the inode of the tree node id in the image whose root
// directory has inode root.
func nodeInode(root, id uint64) uint64 {
	h := fnv.New64a()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], root)
	binary.LittleEndian.PutUint64(b[8:], id)
	h.Write(b[:])
	v := h.Sum64()
	if v <= rootInode {
		v += 2
	}
	return v
}

// childNamed finds name in the directory dir by binary search (Children
// is sorted by name).
func childNamed(t *image.Tree, dir *image.Node, name string) (*image.Node, bool) {
	kids := t.Children(dir)
	i := sort.Search(len(kids), func(i int) bool { return kids[i].Name >= name })
	if i < len(kids) && kids[i].Name == name {
		return kids[i].Node, true
	}
	return nil, false
}

// treeDirents lists the directory dir of an image whose root has inode root.
func treeDirents(t *image.Tree, dir *image.Node, root uint64) []fuse.Dirent {
	kids := t.Children(dir)
	out := make([]fuse.Dirent, 0, len(kids))
	for _, k := range kids {
		out = append(out, fuse.Dirent{Inode: nodeInode(root, k.Node.ID), Type: direntType(k.Node.Mode), Name: k.Name})
	}
	return out
}

func direntType(m fs.FileMode) fuse.DirentType {
	switch {
	case m.IsDir():
		return fuse.DT_Dir
	case m&fs.ModeSymlink != 0:
		return fuse.DT_Link
	case m&fs.ModeCharDevice != 0:
		return fuse.DT_Char
	case m&fs.ModeDevice != 0:
		return fuse.DT_Block
	case m&fs.ModeNamedPipe != 0:
		return fuse.DT_FIFO
	case m&fs.ModeSocket != 0:
		return fuse.DT_Socket
	}
	return fuse.DT_File
}

// treeAttr fills the attributes of n, with inode ino: what the tar headers
// say (mode, owner, size, time), valid for long, as nothing in an image
// changes.
func (f *FS) treeAttr(a *fuse.Attr, n *image.Node, ino uint64) {
	f.baseAttr(a)
	a.Inode = ino
	a.Mode = n.Mode
	a.Nlink = uint32(max(n.Nlink, 1))
	a.Uid, a.Gid = uint32(n.UID), uint32(n.GID)
	switch {
	case n.Mode.IsRegular():
		a.Size = uint64(n.Size)
	case n.Mode&fs.ModeSymlink != 0:
		a.Size = uint64(len(n.Linkname))
	case n.Mode&fs.ModeDevice != 0:
		a.Rdev = encodeDev(n.Devmajor, n.Devminor)
	}
	a.Blocks = blocks(int64(a.Size))
	setTimes(a, n.ModTime)
	a.Valid = immutableTTL
}

// encodeDev packs a device number the way the kernel's new_encode_dev
// does, which is what FUSE carries.
func encodeDev(major, minor int64) uint32 {
	ma, mi := uint32(major), uint32(minor)
	return (mi & 0xff) | (ma&0xfff)<<8 | (mi&^0xff)<<12
}

// Attr implements fs.Node.
func (d treeDir) Attr(ctx context.Context, a *fuse.Attr) error {
	d.f.treeAttr(a, d.n, nodeInode(d.root, d.n.ID))
	return nil
}

// Lookup implements fs.NodeRequestLookuper.
func (d treeDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fusefs.Node, error) {
	n, ok := childNamed(d.t, d.n, req.Name)
	if !ok {
		return nil, d.f.errno("lookup", d.path(req.Name), errNotFound)
	}
	resp.EntryValid = immutableTTL
	return newTreeNode(d.f, d.t, n, d.root, nodeInode(d.root, d.n.ID), d.dir, d.path(req.Name)), nil
}

// ReadDirAll implements fs.HandleReadDirAller.
func (d treeDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	return treeDirents(d.t, d.n, d.root), nil
}

// Open implements fs.NodeOpener.
func (d treeDir) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fusefs.Handle, error) {
	return d.f.openDir(d, nodeInode(d.root, d.n.ID), d.parent, resp)
}

func (n treeFile) path() string {
	return fmt.Sprintf("%s/ (inode %d)", n.dir, nodeInode(n.root, n.n.ID))
}

// Attr implements fs.Node.
func (n treeFile) Attr(ctx context.Context, a *fuse.Attr) error {
	n.f.treeAttr(a, n.n, nodeInode(n.root, n.n.ID))
	return nil
}

// Readlink implements fs.NodeReadlinker: the target as stored, never
// followed.
func (n treeFile) Readlink(ctx context.Context, req *fuse.ReadlinkRequest) (string, error) {
	if n.n.Mode&fs.ModeSymlink == 0 {
		return "", n.f.errno("readlink", n.path(), errWrongKind)
	}
	return n.n.Linkname, nil
}

// Open implements fs.NodeOpener. The node is its own handle: it holds
// nothing per open. The kernel keeps the page cache across opens.
func (n treeFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fusefs.Handle, error) {
	if !req.Flags.IsReadOnly() || req.Flags&fuse.OpenTruncate != 0 {
		return nil, n.f.refuseWrite("open", n.path())
	}
	resp.Flags |= fuse.OpenKeepCache
	return n, nil
}

// Read implements fs.HandleReader: the file's bytes from its layer,
// decompressed from the checkpoint nearest before them.
func (n treeFile) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	got, err := n.t.ReadAt(ctx, n.n, resp.Data[:req.Size], req.Offset)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if err != nil {
		got = 0 // never a byte from a layer that failed
		err = imageErr("reading", err)
		n.f.imageFailed(n.path(), err)
	}
	resp.Data = resp.Data[:got]
	n.f.countRead(got)
	return n.f.errno("read", n.path(), err)
}

// Setattr implements fs.NodeSetattrer.
func (n treeFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return n.f.refuse("setattr", n.path())
}
