package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/opencontainers/go-digest"

	regfsfs "github.com/regfs/regfs/fs"
)

// The bare tree (R3's FUSE baseline): the least a bazil.org/fuse file
// system can do to serve, from memory, what ls -l of repositories'
// _manifests walks through a regfs mount: the namespace directories down to
// each repository, its _manifests, and in it its tags and revisions as
// regular files of their manifests' sizes. Names, modes, sizes, listings
// ("." and ".." first) and how long the kernel may keep each entry and
// attribute are regfs's for a --registry mount with its defaults; the files
// have no content (ls -l opens none). It runs in the bare child process
// (bare.go), selected by bareEnvTree.
const bareEnvTree = "REGFS_BENCH_BARE_TREE"

// bareTreeEntry is one file of a repository's _manifests: a tag or a
// revision (name is then the digest), and the size of the manifest it is.
type bareTreeEntry struct {
	repo, name string
	dgst       digest.Digest
	size       int64
}

// registryManifests reads the tags and revisions of repos from the
// registry layout below root (written by writeGCRegistry), with their
// manifests' sizes: what ls -l of their _manifests shows through regfs.
func registryManifests(root string, repos []string) ([]bareTreeEntry, error) {
	var out []bareTreeEntry
	add := func(repo, name string, link string) error {
		b, err := os.ReadFile(link)
		if err != nil {
			return err
		}
		d, err := digest.Parse(string(b))
		if err != nil {
			return fmt.Errorf("%s: %w", link, err)
		}
		fi, err := os.Stat(blobDataPath(root, d))
		if err != nil {
			return err
		}
		out = append(out, bareTreeEntry{repo: repo, name: name, dgst: d, size: fi.Size()})
		return nil
	}
	for _, repo := range repos {
		dir := filepath.Join(repositoriesDir(root), repo, "_manifests")
		tags, err := os.ReadDir(filepath.Join(dir, "tags"))
		if err != nil {
			return nil, err
		}
		for _, t := range tags {
			if err := add(repo, t.Name(), filepath.Join(dir, "tags", t.Name(), "current", "link")); err != nil {
				return nil, err
			}
		}
		revs, err := os.ReadDir(filepath.Join(dir, "revisions", "sha256"))
		if err != nil {
			return nil, err
		}
		for _, r := range revs {
			if err := add(repo, "sha256:"+r.Name(), filepath.Join(dir, "revisions", "sha256", r.Name(), "link")); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// writeBareTree writes entries to path, one "repo name digest size" line
// each, for the bare tree's process to read.
func writeBareTree(path string, entries []bareTreeEntry) error {
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "%s %s %s %d\n", e.repo, e.name, e.dgst, e.size)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// readBareTree reads what writeBareTree wrote.
func readBareTree(path string) ([]bareTreeEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []bareTreeEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 4 {
			return nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		d, err := digest.Parse(fields[2])
		if err != nil {
			return nil, err
		}
		size, err := strconv.ParseInt(fields[3], 10, 64)
		if err != nil {
			return nil, err
		}
		out = append(out, bareTreeEntry{repo: fields[0], name: fields[1], dgst: d, size: size})
	}
	return out, sc.Err()
}

// bareTreeMain serves the bare tree of the entries in the file
// $REGFS_BENCH_BARE_TREE names at $REGFS_BENCH_BARE_MOUNT until SIGTERM or
// SIGINT, then unmounts.
func bareTreeMain() int {
	entries, err := readBareTree(os.Getenv(bareEnvTree))
	if err == nil {
		err = serveBareFS(os.Getenv(bareEnvMount), bareTree{root: newBareTree(entries)})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bare: %v\n", err)
		return 1
	}
	return 0
}

// bareTree is the bare tree's file system: its root, built before it
// serves and never changed after, so that no request takes a lock.
type bareTree struct{ root *bareTreeNode }

var (
	_ fs.FS                  = bareTree{}
	_ fs.Node                = (*bareTreeNode)(nil)
	_ fs.NodeRequestLookuper = (*bareTreeNode)(nil)
	_ fs.NodeOpener          = (*bareTreeNode)(nil)
	_ fs.HandleReadDirAller  = (*bareTreeNode)(nil)
)

func (t bareTree) Root() (fs.Node, error) { return t.root, nil }

// bareTreeNode is a directory (kids not nil) or a file of the bare tree:
// its attributes, already filled with their validity, and how long its
// entry in its parent is valid. A directory's listing is made once. bazil
// keeps nodes as map keys: a pointer is comparable, and each node is one
// value for as long as the mount lives.
type bareTreeNode struct {
	bareNoXattr
	attr       fuse.Attr
	entryValid time.Duration
	kids       map[string]*bareTreeNode
	listing    []fuse.Dirent
}

// newBareTree builds the tree of entries, with the validities regfs gives
// the same nodes (fs/namespace.go, manifests.go, manifest_files.go):
// namespace directories for fs.DefaultDirCacheTTL, _manifests (reserved,
// in every namespace) and revisions' attributes for an hour (bareValid,
// regfs's immutable TTL), the names of tags and revisions and tags'
// attributes for fs.DefaultAttrTTL (cmd/regfs sets EntryTTL and AttrTTL
// both to --attr-timeout).
func newBareTree(entries []bareTreeEntry) *bareTreeNode {
	now := time.Now()
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	dir := func(ino uint64, valid time.Duration) *bareTreeNode {
		return &bareTreeNode{
			attr: fuse.Attr{Inode: ino, Mode: os.ModeDir | 0o755, Nlink: 2, Uid: uid, Gid: gid,
				Atime: now, Mtime: now, Ctime: now, Valid: valid},
			entryValid: valid,
			kids:       map[string]*bareTreeNode{},
		}
	}
	root := dir(1, regfsfs.DefaultDirCacheTTL)
	for _, e := range entries {
		d, p := root, ""
		for _, name := range strings.Split(e.repo, "/") {
			p += "/" + name
			if d.kids[name] == nil {
				d.kids[name] = dir(nameInode(p), regfsfs.DefaultDirCacheTTL)
			}
			d = d.kids[name]
		}
		m := d.kids["_manifests"]
		if m == nil {
			m = dir(nameInode(p+"/_manifests"), bareValid)
			d.kids["_manifests"] = m
		}
		// A tag shares its revision's inode, and is writable by its owner.
		f := &bareTreeNode{
			attr: fuse.Attr{Inode: nameInode(e.dgst.String()), Mode: 0o644, Nlink: 1, Size: uint64(e.size), Blocks: uint64(e.size+511) / 512,
				Uid: uid, Gid: gid, Atime: now, Mtime: now, Ctime: now, Valid: regfsfs.DefaultAttrTTL},
			entryValid: regfsfs.DefaultAttrTTL,
		}
		if e.name == e.dgst.String() {
			f.attr.Mode, f.attr.Valid = 0o444, bareValid
		}
		m.kids[e.name] = f
	}
	root.list(1)
	return root
}

// list makes the listings of d and of every directory below it; parent is
// the inode of d's parent.
func (d *bareTreeNode) list(parent uint64) {
	names := make([]string, 0, len(d.kids))
	for n := range d.kids {
		names = append(names, n)
	}
	slices.Sort(names)
	d.listing = []fuse.Dirent{{Inode: d.attr.Inode, Type: fuse.DT_Dir, Name: "."}, {Inode: parent, Type: fuse.DT_Dir, Name: ".."}}
	for _, n := range names {
		k := d.kids[n]
		t := fuse.DT_File
		if k.kids != nil {
			t = fuse.DT_Dir
			k.list(d.attr.Inode)
		}
		d.listing = append(d.listing, fuse.Dirent{Inode: k.attr.Inode, Type: t, Name: n})
	}
}

func (n *bareTreeNode) Attr(ctx context.Context, a *fuse.Attr) error {
	*a = n.attr
	return nil
}

func (n *bareTreeNode) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	k, ok := n.kids[req.Name]
	if !ok {
		return nil, fuse.Errno(syscall.ENOENT)
	}
	resp.EntryValid = k.entryValid
	return k, nil
}

// Open opens a directory, its listing kept by the kernel
// (FOPEN_CACHE_DIR) as regfs's are; a file, which has no content, is
// refused.
func (n *bareTreeNode) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	if n.kids == nil {
		return nil, fuse.Errno(syscall.EACCES)
	}
	resp.Flags |= fuse.OpenCacheDir | fuse.OpenKeepCache
	return n, nil
}

func (n *bareTreeNode) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	return n.listing, nil
}

// startBareTree mounts the bare tree of the entries in the file tree
// (writeBareTree).
func (b *bench) startBareTree(tree string) (*mount, error) {
	mnt := b.newMountpoint("bare-tree")
	return b.mounts.start("bare", mnt, []string{b.self},
		[]string{bareEnvMount + "=" + mnt, bareEnvTree + "=" + tree}, bareReady)
}
