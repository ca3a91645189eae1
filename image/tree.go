package image

import (
	"context"
	"io/fs"
	"time"
)

// Tree is the merged root filesystem of an image. It is immutable.
type Tree struct {
	layers []*Layer
	root   *Node
}

// Node is one inode of a Tree: a directory, file, symlink, device or fifo.
// Hard links are one Node under several names. Fields are read-only.
type Node struct {
	// ID is stable for the same layers (derived from the node's first
	// path), never 0; the root's is 1. Use it for inode numbers.
	ID       uint64
	Mode     fs.FileMode // type and permission bits
	UID, GID int
	Size     int64
	ModTime  time.Time
	Linkname string // symlink target as stored
	Devmajor int64
	Devminor int64
	Xattrs   map[string]string
	// Nlink is the number of names of a non-directory, 2 plus the number of
	// subdirectories for a directory.
	Nlink int

	layer int    // index in Tree.layers of the content's layer
	entry *Entry // the entry holding the content (regular files)
	kids  []Dirent
}

// Dirent is one name in a directory.
type Dirent struct {
	Name string
	Node *Node
}

// Merge applies layers in order (the base first) with OCI whiteouts.
func Merge(layers []*Layer) (*Tree, error) {
	return nil, errNotImplemented
}

// Root returns the root directory.
func (t *Tree) Root() *Node { return t.root }

// Lookup returns the node at a slash-separated path relative to the root
// ("" or "/" is the root), never following symlinks.
func (t *Tree) Lookup(path string) (*Node, bool) { return nil, false }

// Children returns a directory's entries sorted by name; nil for others.
func (t *Tree) Children(dir *Node) []Dirent { return dir.kids }

// Content returns the layer and the range of the uncompressed stream that
// hold a regular file's bytes; ok is false for anything else.
func (t *Tree) Content(n *Node) (layer *Layer, off, size int64, ok bool) {
	return nil, 0, 0, false
}

// ReadAt reads a regular file's content at off, io.EOF at its end.
func (t *Tree) ReadAt(ctx context.Context, n *Node, p []byte, off int64) (int, error) {
	return 0, errNotImplemented
}
