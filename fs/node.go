package fs

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.NodeCreater   = refusals{}
	_ fs.NodeLinker    = refusals{}
	_ fs.NodeMkdirer   = refusals{}
	_ fs.NodeSymlinker = refusals{}
	_ fs.NodeRenamer   = refusals{}
	_ fs.NodeRemover   = refusals{}
	_ fs.NodeSetattrer = refusals{}
)

// refusals is embedded in every directory node and refuses, once for all
// of them, the changes a directory does not support: EPERM, or EROFS on a
// read-only mount. A node overrides only the methods it supports. It is a
// small comparable value, like the nodes it is part of (see the package
// documentation), and it carries the FS and the directory's path in the
// mount, which the nodes use as their own.
type refusals struct {
	f *FS
	// dir is the directory's path below the mountpoint ("" for the root),
	// for errors and the log.
	dir string
}

// path is the path of name in the directory.
func (r refusals) path(name string) string { return joinPath(r.dir, name) }

// Create implements fs.NodeCreater.
func (r refusals) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fs.Node, fs.Handle, error) {
	return nil, nil, r.f.refuse("create", r.path(req.Name))
}

// Link implements fs.NodeLinker.
func (r refusals) Link(ctx context.Context, req *fuse.LinkRequest, old fs.Node) (fs.Node, error) {
	return nil, r.f.refuse("link", r.path(req.NewName))
}

// Mkdir implements fs.NodeMkdirer.
func (r refusals) Mkdir(ctx context.Context, req *fuse.MkdirRequest) (fs.Node, error) {
	return nil, r.f.refuse("mkdir", r.path(req.Name))
}

// Symlink implements fs.NodeSymlinker: regfs has no symbolic links.
func (r refusals) Symlink(ctx context.Context, req *fuse.SymlinkRequest) (fs.Node, error) {
	return nil, r.f.refuse("symlink", r.path(req.NewName))
}

// Rename implements fs.NodeRenamer for the directories whose entries
// cannot move: a directory, a layer or an upload has no name of its own in
// storage to change (tags move: see manifestsDir.Rename).
func (r refusals) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fs.Node) error {
	p := r.path(req.OldName)
	if err := r.f.readOnly(); err != nil {
		return r.f.errno("rename", p, err)
	}
	return r.f.refuseRename(p, renameTarget(newDir, req.NewName), &because{
		why:  "only tags can be renamed (mv within a repository's _manifests/); a directory, layer or upload has no name of its own in storage",
		kind: errNotSupported,
	})
}

// Remove implements fs.NodeRemover.
func (r refusals) Remove(ctx context.Context, req *fuse.RemoveRequest) error {
	return r.f.refuse("remove", r.path(req.Name))
}

// Setattr implements fs.NodeSetattrer.
func (r refusals) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return r.f.setattrFixed("setattr", r.dir, req)
}

// refuse is the error for a change the tree does not support: EROFS on a
// read-only mount (every write is), EPERM otherwise.
func (f *FS) refuse(op, name string) error {
	if err := f.readOnly(); err != nil {
		return f.errno(op, name, err)
	}
	return f.errno(op, name, errNotSupported)
}

// refuseWrite is the error for writing an immutable file: EROFS on a
// read-only mount, EPERM otherwise.
func (f *FS) refuseWrite(op, name string) error {
	if err := f.readOnly(); err != nil {
		return f.errno(op, name, err)
	}
	return f.errno(op, name, errImmutable)
}

// setattrFixed handles Setattr on a node whose attributes cannot change.
// Storage keeps no modes, owners or times, so chmod, chown and utimes are
// accepted and change nothing (ignoredAttrs): cp -p, install -m, rsync -a,
// tar and touch set them after writing, and would otherwise fail a copy
// that stored everything. Size changes are refused.
func (f *FS) setattrFixed(op, name string, req *fuse.SetattrRequest) error {
	if err := f.readOnly(); err != nil {
		return f.errno(op, name, err)
	}
	if err := ignoredAttrs(req); err != nil {
		return f.errno(op, name, err)
	}
	if req.Valid.Size() {
		return f.errno(op, name, errImmutable)
	}
	return nil
}

// ignoredAttrs checks the attributes of a Setattr that regfs accepts and
// ignores: permission bits, owner, group and times. A mode with setuid,
// setgid or sticky bits, or of another file type, is refused: accepting it
// would pretend to grant what regfs never shows.
func ignoredAttrs(req *fuse.SetattrRequest) error {
	if req.Valid.Mode() && req.Mode&^os.ModePerm != req.Mode&os.ModeDir {
		return fmt.Errorf("%w: mode %v", errNotSupported, req.Mode)
	}
	return nil
}

// Modes. They say what a write can do, because with --allow-other the
// kernel checks them (default_permissions) before regfs sees a request:
// the owner (the daemon's user, or Options.Owner) may change what is
// writable, others as the umask allows, and on a read-only mount nobody
// may. Every mode is one of these with the umask cleared.
const (
	modeDir      = os.ModeDir | 0o777
	modeFile     = 0o666
	modeReadOnly = 0o444
	// modeControlDir is .regfs/, which nothing may change.
	modeControlDir = os.ModeDir | 0o555
	// noWrite clears the write bits.
	noWrite = ^os.FileMode(0o222)
)

// DefaultUmask is the umask when Options.Owner is nil: directories 0755,
// writable files 0644, immutable ones 0444.
const DefaultUmask os.FileMode = 0o022

// Owner says who owns every node and which mode bits are cleared.
type Owner struct {
	UID, GID uint32
	// Umask clears permission bits from every mode.
	Umask os.FileMode
}

// mode returns m with the umask cleared, and without its write bits on a
// read-only mount.
func (f *FS) mode(m os.FileMode) os.FileMode {
	m &^= f.umask
	if f.opts.ReadOnly {
		return m & noWrite
	}
	return m
}

// baseAttr fills what every node shares: the owner (the daemon's user,
// whose writes regfs serves) and the times, the mount time until the node
// sets its own (setTimes).
func (f *FS) baseAttr(a *fuse.Attr) {
	a.Uid, a.Gid = f.uid, f.gid
	a.Atime, a.Mtime, a.Ctime = f.started, f.started, f.started
}

// setTimes sets a node's times to t, its link's modification time in
// storage; a zero t (a driver without times) leaves the mount time.
func setTimes(a *fuse.Attr, t time.Time) {
	if !t.IsZero() {
		a.Atime, a.Mtime, a.Ctime = t, t, t
	}
}

// dirAttr fills the attributes of the directory at path p (below the
// mountpoint) that accepts writes from its owner. Its times are those of
// the newest child regfs has seen below it (dirTime).
func (f *FS) dirAttr(a *fuse.Attr, p string, ino uint64, valid time.Duration) {
	a.Inode = ino
	a.Mode = f.mode(modeDir)
	a.Nlink = 2
	a.Valid = valid
	f.baseAttr(a)
	setTimes(a, f.dirTime(p))
}

// noteTime records t, the link time of something in the directory p, as
// p's time and that of every directory above it, where it is newer. It is
// what regfs learns without a call of its own: from listings, which carry
// times, and from the lookups of files. It tells whether p's own time
// moved.
func (f *FS) noteTime(p string, t time.Time) bool {
	if t.IsZero() {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	moved := t.After(f.dirTimes[p])
	for {
		if t.After(f.dirTimes[p]) {
			f.dirTimes[p] = t
		}
		if p == "" {
			return moved
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			p = ""
		} else {
			p = p[:i]
		}
	}
}

// dirTime is the time directory p shows: the newest time noteTime had
// recorded for p when the kernel first asked, kept until thawDirTime
// (zero if none). It must not move while the kernel holds p's listing: the
// kernel resets a cached listing whose directory's mtime changed, so a
// time that followed every listing would make every find read storage
// again.
func (f *FS) dirTime(p string) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.dirShown[p]; ok {
		return t
	}
	t := f.dirTimes[p]
	f.dirShown[p] = t
	return t
}

// thawDirTime lets the next attributes of directory node n show the
// newest time regfs has seen below it. It is called where the kernel drops
// its copy of n's attributes and listing anyway: the listing expired, or
// regfs changed the directory.
func (f *FS) thawDirTime(n fs.Node) {
	d, ok := n.(interface{ dirPath() string })
	if !ok {
		return
	}
	f.mu.Lock()
	delete(f.dirShown, d.dirPath())
	f.mu.Unlock()
}

// dirPath is the path of the directory below the mountpoint.
func (r refusals) dirPath() string { return r.dir }

// immutableAttr fills the attributes of a blob or a revision: content
// addressed, so read-only, inode from the digest. The attributes of a
// digest never change, so they are valid for long; the name's entry is
// not (see Lookup of layersDir and manifestsDir), so a blob or revision
// another writer deletes disappears within the entry timeout.
func (f *FS) immutableAttr(a *fuse.Attr, dgst digest.Digest, size int64, mtime time.Time) {
	a.Inode = digestInode(dgst)
	a.Mode = f.mode(modeReadOnly)
	a.Size = uint64(size)
	a.Blocks = blocks(size)
	a.Valid = immutableTTL
	f.baseAttr(a)
	setTimes(a, mtime)
}

// blocks is size in 512-byte units, for du.
func blocks(size int64) uint64 { return uint64(size+511) / 512 }

// dots returns the entries "." (the directory, inode ino) and ".." (its
// parent) followed by rest. FUSE passes a directory's entries to readdir
// as the file system gives them, so without these ls -a would not show
// them, as it does on every other file system.
func dots(ino, parent uint64, rest ...fuse.Dirent) []fuse.Dirent {
	return append([]fuse.Dirent{
		{Inode: ino, Type: fuse.DT_Dir, Name: "."},
		{Inode: parent, Type: fuse.DT_Dir, Name: ".."},
	}, rest...)
}

// listedDirs bounds FS.listed: the listings of this many directories are
// kept for the lookups that follow them.
const listedDirs = 64

// rememberListing keeps the link times a listing of the directory p
// carried (see FS.listed).
func (f *FS) rememberListing(p string, ls []store.Linked) {
	m := make(map[digest.Digest]time.Time, len(ls))
	for _, l := range ls {
		if !l.ModTime.IsZero() {
			m[l.Digest] = l.ModTime
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.listed[p]; !ok {
		f.listedOrder = append(f.listedOrder, p)
		if len(f.listedOrder) > listedDirs {
			delete(f.listed, f.listedOrder[0])
			f.listedOrder = f.listedOrder[1:]
		}
	}
	f.listed[p] = m
}

// linkTime returns the link time of dgst in the directory p from its last
// listing, or else from storage with get (one driver call).
func (f *FS) linkTime(ctx context.Context, p string, dgst digest.Digest, get func(context.Context, digest.Digest) (time.Time, error)) (time.Time, error) {
	f.mu.Lock()
	t, ok := f.listed[p][dgst]
	f.mu.Unlock()
	if ok {
		return t, nil
	}
	return get(ctx, dgst)
}

// forgetListed drops dgst from the listing kept for p, when regfs removes
// or re-links it.
func (f *FS) forgetListed(p string, dgst digest.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.listed[p], dgst)
}
