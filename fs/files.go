package fs

import (
	"context"
	"os"
	"sort"
	"strings"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.Node                = filesDir{}
	_ fs.NodeRequestLookuper = filesDir{}
	_ fs.HandleReadDirAller  = filesDir{}
	_ fs.NodeOpener          = filesDir{}
	_ fs.NodeSetattrer       = filesDir{}

	_ fs.Node                = imageDir{}
	_ fs.NodeRequestLookuper = imageDir{}
	_ fs.HandleReadDirAller  = imageDir{}
	_ fs.NodeOpener          = imageDir{}
	_ fs.NodeSetattrer       = imageDir{}
)

// reservedFiles is the image file view of a repository.
const reservedFiles = "_files"

// modeImageDir is the mode of _files/ and of an index's platform list:
// nothing in them can change.
const modeImageDir = os.ModeDir | 0o555

// filesDir is a repository's _files/: a directory per tag and per
// revision, each the image's files (imageDir). It is read-only.
//
// A repository's listing does not show it, though a lookup finds it: a
// find, du or rm -rf over the mount or a repository would otherwise walk
// into every image, which reads and decompresses every layer of the
// registry (and rm -rf would fail on files that cannot be removed). Who
// asks for _files by name gets it (see docs/decisions.md).
type filesDir struct {
	noXattr
	synced
	imageRefusals
	repo string
	ino  uint64
}

func newFilesDir(f *FS, repo string) filesDir {
	return filesDir{
		imageRefusals: imageRefusals{refusals{f: f, dir: joinPath(repo, reservedFiles)}},
		repo:          repo,
		ino:           childInode(pathInode(repo), reservedFiles),
	}
}

// Attr implements fs.Node.
func (d filesDir) Attr(ctx context.Context, a *fuse.Attr) error {
	d.f.dirAttr(a, joinPath(d.repo, reservedManifests), d.ino, immutableTTL)
	a.Mode = d.f.mode(modeImageDir)
	return nil
}

// Lookup implements fs.NodeRequestLookuper. A tag is resolved here, and
// its directory is the node of the revision it points to now: everything
// below is then named by digest and never changes, and the tag's own
// entry is valid for the short entry timeout, so a moved tag shows the
// new image within it.
func (d filesDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	p := d.path(req.Name)
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return nil, d.f.errno("lookup", p, err)
	}
	dgst, err := store.ParseDigest(req.Name)
	if err == nil {
		ok, err := repo.Manifests().Exists(ctx, dgst)
		if err != nil {
			return nil, d.f.errno("lookup", p, err)
		}
		if !ok {
			return nil, d.f.errno("lookup", p, errNotFound)
		}
	} else {
		if store.ValidateTag(req.Name) != nil {
			return nil, d.f.errno("lookup", p, errNotFound)
		}
		if dgst, err = repo.Tags().Get(ctx, req.Name); err != nil {
			return nil, d.f.errno("lookup", p, err)
		}
	}
	mtime, err := d.f.linkTime(ctx, joinPath(d.repo, reservedManifests), dgst, repo.Manifests().LinkTime)
	if err != nil && !isNotFoundErr(err) {
		return nil, d.f.errno("lookup", p, err)
	}
	resp.EntryValid = d.f.opts.EntryTTL
	return newImageDir(d.f, d.repo, req.Name, d.ino, dgst, mtime), nil
}

// ReadDirAll implements fs.HandleReadDirAller: the revisions and tags, as
// _manifests/ lists them, each a directory.
func (d filesDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return nil, d.f.errno("readdir", d.dir, err)
	}
	revs, err := repo.Manifests().Linked(ctx)
	if err != nil {
		return nil, d.f.errno("readdir", d.dir, err)
	}
	d.f.rememberListing(joinPath(d.repo, reservedManifests), revs)
	tags, err := repo.Tags().List(ctx)
	if err != nil {
		return nil, d.f.errno("readdir", d.dir, err)
	}
	out := make([]fuse.Dirent, 0, len(revs)+len(tags))
	for _, r := range revs {
		n := r.Digest.String()
		out = append(out, fuse.Dirent{Inode: imageInode(d.ino, n, r.Digest), Type: fuse.DT_Dir, Name: n})
	}
	for _, t := range tags {
		dg, err := repo.Tags().Get(ctx, t)
		if isNotFoundErr(err) {
			continue // untagged since the listing
		}
		if skipBadLink(d.f, d.path(t), err) {
			continue
		}
		if err != nil {
			return nil, d.f.errno("readdir", d.path(t), err)
		}
		out = append(out, fuse.Dirent{Inode: imageInode(d.ino, t, dg), Type: fuse.DT_Dir, Name: t})
	}
	d.f.expiry.listed(d)
	return out, nil
}

// Open implements fs.NodeOpener.
func (d filesDir) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	return d.f.openDir(d, d.ino, pathInode(d.repo), resp)
}

// imageInode is the inode of the directory name (a tag, a digest or a
// platform) that shows the manifest dgst, in the directory parent. It
// changes when a tag moves, so that tools that remember inodes (find,
// tar, rsync) see a new tree.
func imageInode(parent uint64, name string, dgst digest.Digest) uint64 {
	return childInode(childInode(parent, name), dgst.String())
}

// imageDir is _files/<name>/ (name a tag or a digest), or a platform's
// directory below it: the files of the image manifest dgst, or for a
// manifest list or OCI index a directory per platform. Its path (the
// refusals' dir) is where it shows; two names of one manifest are two
// directories, as a directory has one parent.
type imageDir struct {
	noXattr
	synced
	imageRefusals
	repo   string
	dgst   digest.Digest
	ino    uint64
	parent uint64
	// mtime is when the manifest was pushed (its revision link's time),
	// in Unix nanoseconds: a node is a comparable value, and a time.Time
	// read twice need not compare equal.
	mtime int64
}

func newImageDir(f *FS, repo, dir string, parent uint64, dgst digest.Digest, mtime time.Time) imageDir {
	name := dir[strings.LastIndexByte(dir, '/')+1:]
	return imageDir{
		imageRefusals: imageRefusals{refusals{f: f, dir: joinPath(repo, reservedFiles+"/"+dir)}},
		repo:          repo,
		dgst:          dgst,
		ino:           imageInode(parent, name, dgst),
		parent:        parent,
		mtime:         unixNano(mtime),
	}
}

// Attr implements fs.Node. An image's root shows as an image's root does
// when unpacked (rwxr-xr-x, root's), without reading a layer: listing
// _files/ with ls -l must not index every image. An index's platform list
// is read-only and the mount owner's.
func (d imageDir) Attr(ctx context.Context, a *fuse.Attr) error {
	m, err := d.f.images.manifest(ctx, d.repo, d.dgst)
	if err != nil {
		d.f.imageFailed(d.dir, err)
		return d.f.errno("getattr", d.dir, err)
	}
	a.Inode = d.ino
	a.Valid = immutableTTL
	a.Nlink = 2
	d.f.baseAttr(a)
	setTimes(a, timeOf(d.mtime))
	if m.index {
		a.Mode = d.f.mode(modeImageDir)
		a.Nlink += uint32(len(m.platforms))
		return nil
	}
	a.Mode = os.ModeDir | 0o755
	a.Uid, a.Gid = 0, 0
	return nil
}

// Lookup implements fs.NodeRequestLookuper. Everything below a manifest
// is named by digest and never changes: its entries are valid for long.
func (d imageDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	p := d.path(req.Name)
	m, err := d.f.images.manifest(ctx, d.repo, d.dgst)
	if err != nil {
		d.f.imageFailed(d.dir, err)
		return nil, d.f.errno("lookup", p, err)
	}
	if m.index {
		for _, c := range m.platforms {
			if c.name == req.Name {
				resp.EntryValid = immutableTTL
				rel := p[len(joinPath(d.repo, reservedFiles))+1:]
				return newImageDir(d.f, d.repo, rel, d.ino, c.digest, timeOf(d.mtime)), nil
			}
		}
		return nil, d.f.errno("lookup", p, errNotFound)
	}
	t, err := d.f.images.tree(ctx, d.repo, d.dgst)
	if err != nil {
		d.f.imageFailed(d.dir, err)
		return nil, d.f.errno("lookup", p, err)
	}
	n, ok := childNamed(t, t.Root(), req.Name)
	if !ok {
		return nil, d.f.errno("lookup", p, errNotFound)
	}
	resp.EntryValid = immutableTTL
	return newTreeNode(d.f, t, n, d.ino, d.ino, d.dir, p), nil
}

// ReadDirAll implements fs.HandleReadDirAller.
func (d imageDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	m, err := d.f.images.manifest(ctx, d.repo, d.dgst)
	if err != nil {
		d.f.imageFailed(d.dir, err)
		return nil, d.f.errno("readdir", d.dir, err)
	}
	if m.index {
		out := make([]fuse.Dirent, 0, len(m.platforms))
		for _, c := range m.platforms {
			out = append(out, fuse.Dirent{Inode: imageInode(d.ino, c.name, c.digest), Type: fuse.DT_Dir, Name: c.name})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return out, nil
	}
	t, err := d.f.images.tree(ctx, d.repo, d.dgst)
	if err != nil {
		d.f.imageFailed(d.dir, err)
		return nil, d.f.errno("readdir", d.dir, err)
	}
	return treeDirents(t, t.Root(), d.ino), nil
}

// Open implements fs.NodeOpener. The listing never changes, like every
// listing below it.
func (d imageDir) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	return d.f.openDir(d, d.ino, d.parent, resp)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func timeOf(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
