package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"time"
)

// Whiteout names, from the OCI image layer specification.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// Tree is the merged root filesystem of an image. It is immutable and safe
// for concurrent use.
type Tree struct {
	layers []*Layer
	root   *Node
	nodes  int
	// dirs caches directories by path while merging; cleared whenever a
	// directory leaves the tree.
	dirs map[string]*Node
	slab []Node // nodes are allocated from here while merging
	// Skipped lists entries that could not be applied (a hard link to a
	// name that does not exist), as "layer N: name: reason".
	Skipped []string
}

// Node is one inode of a Tree: a directory, file, symlink, device or fifo.
// Hard links are one Node under several names. Fields are read-only.
type Node struct {
	// ID is stable for the same layers (derived from the node's first
	// path in name order), never 0; the root's is 1. Use it for inode
	// numbers.
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

	layer  int    // index in Tree.layers of the content's layer
	entry  *Entry // the entry holding the content (regular files)
	kids   []Dirent
	kidMap map[string]*Node // while merging
}

// IsDir reports whether n is a directory.
func (n *Node) IsDir() bool { return n.Mode.IsDir() }

// Dirent is one name in a directory.
type Dirent struct {
	Name string
	Node *Node
}

// Merge applies layers in order (the base first) with OCI whiteouts:
// `.wh.<name>` removes name as the layers below left it, `.wh..wh..opq`
// removes everything the layers below put in its directory; neither shows.
// A later entry replaces an earlier one of the same name, except that a
// directory over a directory only changes its attributes. A hard link names
// the inode its target names at that point; one to a missing name or a
// directory is skipped and listed in Tree.Skipped.
func Merge(layers []*Layer) (*Tree, error) {
	hint := 0
	for _, l := range layers {
		if l != nil {
			hint += len(l.Entries())
		}
	}
	t := &Tree{layers: layers, dirs: map[string]*Node{}, slab: make([]Node, 0, hint+16)}
	t.root = &Node{Mode: fs.ModeDir | 0o755, kidMap: map[string]*Node{}}
	t.dirs[""] = t.root
	for li, l := range layers {
		if l == nil {
			return nil, fmt.Errorf("image: layer %d is nil", li)
		}
		entries := l.Entries()
		// Whiteouts apply to the layers below only, so all of them go
		// first; entries of this layer may then bring names back.
		for i := range entries {
			e := &entries[i]
			dir, base := splitName(e.Name)
			if !strings.HasPrefix(base, whiteoutPrefix) {
				continue
			}
			d := t.walk(dir)
			if d == nil || !d.IsDir() {
				continue
			}
			if base == whiteoutOpaque {
				for name, k := range d.kidMap {
					t.unlink(k)
					delete(d.kidMap, name)
				}
				continue
			}
			name := base[len(whiteoutPrefix):]
			if k, ok := d.kidMap[name]; ok {
				t.unlink(k)
				delete(d.kidMap, name)
			}
		}
		for i := range entries {
			t.add(li, &entries[i])
		}
	}
	t.slab = nil
	t.finish(hint)
	return t, nil
}

func splitName(name string) (dir, base string) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}

// walk returns the node at a clean relative path while merging.
func (t *Tree) walk(p string) *Node {
	if d, ok := t.dirs[p]; ok {
		return d
	}
	n := t.root
	for rest := p; rest != ""; {
		var c string
		c, rest, _ = strings.Cut(rest, "/")
		k, ok := n.kidMap[c]
		if !ok {
			return nil
		}
		n = k
	}
	if n.IsDir() {
		t.dirs[p] = n
	}
	return n
}

// unlink drops one name of n (and of everything below a directory).
func (t *Tree) unlink(n *Node) {
	n.Nlink--
	if n.IsDir() && len(t.dirs) > 1 {
		clear(t.dirs)
		t.dirs[""] = t.root
	}
	for _, k := range n.kidMap {
		t.unlink(k)
	}
}

// mkdirs returns the directory at p, making missing ones (and replacing
// anything else in the way) the way extracting a tar does.
func (t *Tree) mkdirs(p string) *Node {
	if d, ok := t.dirs[p]; ok {
		return d
	}
	n := t.root
	for rest := p; rest != ""; {
		var c string
		c, rest, _ = strings.Cut(rest, "/")
		k, ok := n.kidMap[c]
		if !ok || !k.IsDir() {
			if ok {
				t.unlink(k)
			}
			k = t.newNode()
			k.Mode, k.Nlink, k.kidMap = fs.ModeDir|0o755, 1, map[string]*Node{}
			n.kidMap[c] = k
		}
		n = k
	}
	t.dirs[p] = n
	return n
}

// newNode returns a zero Node from the slab: one allocation for most of a
// tree's nodes instead of one each.
func (t *Tree) newNode() *Node {
	if len(t.slab) == cap(t.slab) {
		t.slab = make([]Node, 0, 1024)
	}
	t.slab = t.slab[:len(t.slab)+1]
	return &t.slab[len(t.slab)-1]
}

func (t *Tree) add(li int, e *Entry) {
	dir, base := splitName(e.Name)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return
	}
	if e.Name == "" {
		if e.Type == tar.TypeDir {
			setAttrs(t.root, e)
		}
		return
	}
	parent := t.mkdirs(dir)
	old, exists := parent.kidMap[base]
	switch e.Type {
	case tar.TypeDir:
		if exists && old.IsDir() {
			setAttrs(old, e)
			return
		}
		n := t.newNode()
		n.Nlink, n.kidMap = 1, map[string]*Node{}
		setAttrs(n, e)
		if exists {
			t.unlink(old)
		}
		parent.kidMap[base] = n
	case tar.TypeLink:
		target := t.walk(e.Linkname)
		if target == nil || target.IsDir() || target == t.root {
			t.Skipped = append(t.Skipped, fmt.Sprintf("layer %d: %s: hard link to %q, which is not a file there", li, e.Name, e.Linkname))
			return
		}
		if exists && old == target {
			return
		}
		if exists {
			t.unlink(old)
		}
		target.Nlink++
		parent.kidMap[base] = target
	default:
		n := t.newNode()
		n.Nlink = 1
		setAttrs(n, e)
		if e.Type == tar.TypeReg {
			n.Size = e.Size
			n.layer, n.entry = li, e
		}
		if exists {
			t.unlink(old)
		}
		parent.kidMap[base] = n
	}
}

func setAttrs(n *Node, e *Entry) {
	n.Mode = e.FileMode()
	n.UID, n.GID = e.UID, e.GID
	n.ModTime = e.ModTime
	n.Xattrs = e.Xattrs
	if e.Type == tar.TypeSymlink {
		n.Linkname = e.Linkname
		n.Size = int64(len(e.Linkname))
	}
	n.Devmajor, n.Devminor = e.Devmajor, e.Devminor
}

// FNV-1a, 64 bits, fed a byte at a time so a child's hash continues its
// parent's without building the path.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvAdd(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// finish sorts directories, counts directory links and numbers the nodes:
// each node's ID is the FNV-1a hash of the first path that reaches it in
// name order ("/a/b"), the next free value on a collision.
func (t *Tree) finish(hint int) {
	t.dirs = nil
	used := make(map[uint64]struct{}, hint+2)
	used[0], used[1] = struct{}{}, struct{}{}
	t.root.ID = 1
	t.nodes = 1
	var visit func(n *Node, h uint64)
	visit = func(n *Node, h uint64) {
		n.kids = make([]Dirent, 0, len(n.kidMap))
		for name, k := range n.kidMap {
			n.kids = append(n.kids, Dirent{name, k})
		}
		n.kidMap = nil
		slices.SortFunc(n.kids, func(a, b Dirent) int { return strings.Compare(a.Name, b.Name) })
		n.Nlink = 2
		for _, d := range n.kids {
			k := d.Node
			if k.ID == 0 {
				kh := fnvAdd(fnvAdd(h, "/"), d.Name)
				id := kh
				for {
					if _, ok := used[id]; !ok {
						break
					}
					id++
				}
				used[id] = struct{}{}
				k.ID = id
				t.nodes++
				if k.IsDir() {
					visit(k, kh)
				}
			}
			if k.IsDir() {
				n.Nlink++
			}
		}
	}
	visit(t.root, fnvOffset)
}

// Root returns the root directory.
func (t *Tree) Root() *Node { return t.root }

// Len returns the number of nodes (inodes) in the tree.
func (t *Tree) Len() int { return t.nodes }

// Layers returns the layers the tree was merged from.
func (t *Tree) Layers() []*Layer { return t.layers }

// Lookup returns the node at a slash-separated path relative to the root
// ("" or "/" is the root), never following symlinks.
func (t *Tree) Lookup(p string) (*Node, bool) {
	n := t.root
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." {
			continue
		}
		k, ok := t.Child(n, c)
		if !ok {
			return nil, false
		}
		n = k
	}
	return n, true
}

// Child returns the node named name in directory dir.
func (t *Tree) Child(dir *Node, name string) (*Node, bool) {
	i := sort.Search(len(dir.kids), func(i int) bool { return dir.kids[i].Name >= name })
	if i < len(dir.kids) && dir.kids[i].Name == name {
		return dir.kids[i].Node, true
	}
	return nil, false
}

// Children returns a directory's entries sorted by name; nil for others.
// The slice must not be modified.
func (t *Tree) Children(dir *Node) []Dirent { return dir.kids }

// Content returns the layer and the range of its uncompressed stream that
// hold a regular file's bytes; ok is false for anything else.
func (t *Tree) Content(n *Node) (layer *Layer, off, size int64, ok bool) {
	if n.entry == nil {
		return nil, 0, 0, false
	}
	return t.layers[n.layer], n.entry.Offset, n.entry.Size, true
}

// ErrNotRegular is returned when reading the content of a node that is not a
// regular file.
var ErrNotRegular = errors.New("image: not a regular file")

// ReadAt reads a regular file's content at off, io.EOF at its end.
func (t *Tree) ReadAt(ctx context.Context, n *Node, p []byte, off int64) (int, error) {
	if n.entry == nil {
		return 0, ErrNotRegular
	}
	if n.entry.Sparse {
		return 0, ErrSparse
	}
	if off < 0 {
		return 0, fmt.Errorf("image: negative offset %d", off)
	}
	size := n.entry.Size
	if off >= size {
		return 0, io.EOF
	}
	want := p
	if rest := size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	k, err := t.layers[n.layer].ReadAt(ctx, want, n.entry.Offset+off)
	if err == io.EOF && k == len(want) {
		err = nil
	}
	if err != nil {
		return k, err
	}
	if k < len(p) {
		return k, io.EOF
	}
	return k, nil
}
