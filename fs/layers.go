package fs

import (
	"context"
	"sync"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/store"
)

var (
	_ fs.Node                = layersDir{}
	_ fs.NodeRequestLookuper = layersDir{}
	_ fs.HandleReadDirAller  = layersDir{}
	_ fs.NodeRemover         = layersDir{}
	_ fs.NodeLinker          = layersDir{}

	_ fs.Node          = layerFile{}
	_ fs.NodeOpener    = layerFile{}
	_ fs.NodeSetattrer = layerFile{}
)

// layersDir is a repository's _layers/: the blobs linked into it. Blobs
// arrive through _uploads/ or by ln from another repository.
type layersDir struct {
	noXattr
	synced
	refusals
	repo string
	ino  uint64
}

func newLayersDir(f *FS, repo string) layersDir {
	return layersDir{
		refusals: refusals{f: f, dir: joinPath(repo, reservedLayers)},
		repo:     repo,
		ino:      childInode(pathInode(repo), reservedLayers),
	}
}

// Attr implements fs.Node.
func (d layersDir) Attr(ctx context.Context, a *fuse.Attr) error {
	d.f.dirAttr(a, d.dir, d.ino, immutableTTL)
	return nil
}

// Lookup implements fs.NodeRequestLookuper. The blob's link is stated
// and its data's size learnt, with its first bytes where storage tells
// the size with them at no extra cost (lookupLayer). The entry is valid for the short entry
// timeout: another writer (the registry) may unlink the blob, and its name
// must then disappear soon; the attributes and the kernel's page cache
// belong to the digest and stay valid.
func (d layersDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	p := d.path(req.Name)
	dgst, err := store.ParseDigest(req.Name)
	if err != nil {
		return nil, d.f.errno("lookup", p, errNotFound)
	}
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return nil, d.f.errno("lookup", p, err)
	}
	info, err := d.lookupLayer(ctx, repo.Layers(), dgst)
	if err != nil {
		d.f.noteBlobUnknown(dgst, err)
		return nil, d.f.errno("lookup", p, err)
	}
	// The time of the last listing, if it has the name, wins: an object
	// store lists times to the millisecond but states them to the second,
	// and ls -l must not show another time than ls --full-time did.
	mtime, _ := d.f.linkTime(ctx, d.dir, dgst, func(context.Context, digest.Digest) (time.Time, error) {
		return info.ModTime, nil
	})
	d.f.noteTime(d.dir, mtime)
	d.f.foundLayers.put(req.Pid, d.repo, info)
	resp.EntryValid = d.f.opts.EntryTTL
	return layerFile{f: d.f, repo: d.repo, dgst: dgst, size: info.Size, mtime: mtime}, nil
}

// lookupFirstBytes is how many of a layer's first bytes its lookup fetches
// where storage tells the size with them (store.FirstBytesLookuper): as
// many as the kernel's first READ of a fresh open asks for after a read(2)
// of up to 16 KiB (its initial read-ahead is four times the read, 16 KiB
// after head -c1's), so that such a first read waits for no request after
// the lookup's. On S3 a GET of 64 KiB costs about what the HEAD it
// replaces does.
const lookupFirstBytes = 64 << 10

// lookupLayer finds dgst in layers, with its first bytes where that costs
// no request of its own, unless the kernel holds a listing of d that regfs
// served: a lookup of a listed name is most likely ls -l or find stating
// every entry, which would fetch bytes nobody reads.
func (d layersDir) lookupLayer(ctx context.Context, layers store.LayerService, dgst digest.Digest) (store.LayerInfo, error) {
	if fl, ok := layers.(store.FirstBytesLookuper); ok && !d.f.expiry.holds(d) {
		return fl.LookupFirst(ctx, dgst, lookupFirstBytes)
	}
	return layers.Lookup(ctx, dgst)
}

// ReadDirAll implements fs.HandleReadDirAller.
func (d layersDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return nil, d.f.errno("readdir", d.path(""), err)
	}
	ds, err := repo.Layers().Linked(ctx)
	if err != nil {
		return nil, d.f.errno("readdir", d.path(""), err)
	}
	out := dots(d.ino, pathInode(d.repo))
	d.f.rememberListing(d.dir, ds)
	var newest time.Time
	for _, l := range ds {
		if l.ModTime.After(newest) {
			newest = l.ModTime
		}
		out = append(out, fuse.Dirent{Inode: digestInode(l.Digest), Type: fuse.DT_File, Name: l.Digest.String()})
	}
	// A newer child's time shows when the kernel next fetches the
	// directory's attributes, when its listing expires too. Invalidating
	// them now would drop the listing just cached: the kernel resets a
	// cached listing whose directory's mtime changed.
	d.f.noteTime(d.dir, newest)
	d.f.expiry.listed(d)
	return out, nil
}

// Remove implements fs.NodeRemover: rm unlinks the blob from the
// repository; its data stays until gc.
func (d layersDir) Remove(ctx context.Context, req *fuse.RemoveRequest) error {
	p := d.path(req.Name)
	if err := d.f.readOnly(); err != nil {
		return d.f.errno("unlink", p, err)
	}
	dgst, err := store.ParseDigest(req.Name)
	if err != nil {
		return d.f.errno("unlink", p, errNotFound)
	}
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return d.f.errno("unlink", p, err)
	}
	d.f.forgetListed(d.dir, dgst)
	return d.f.errno("unlink", p, repo.Layers().Unlink(ctx, dgst))
}

// Link implements fs.NodeLinker: ln a/_layers/<d> b/_layers/ links the blob
// into b without copying (a cross-repository mount). The source must be a
// layer and the new name its digest.
func (d layersDir) Link(ctx context.Context, req *fuse.LinkRequest, old fs.Node) (fs.Node, error) {
	p := d.path(req.NewName)
	if err := d.f.readOnly(); err != nil {
		return nil, d.f.errno("link", p, err)
	}
	src, ok := old.(layerFile)
	if !ok || src.dgst.String() != req.NewName {
		return nil, d.f.errno("link", p, errWrongKind)
	}
	repo, err := d.f.st.Repository(d.repo)
	if err != nil {
		return nil, d.f.errno("link", p, err)
	}
	d.f.forgetListed(d.dir, src.dgst)
	if err := repo.Layers().Link(ctx, src.dgst); err != nil {
		return nil, d.f.errno("link", p, err)
	}
	mtime, err := repo.Layers().LinkTime(ctx, src.dgst)
	if err != nil {
		return nil, d.f.errno("link", p, err)
	}
	d.f.noteTime(d.dir, mtime)
	return layerFile{f: d.f, repo: d.repo, dgst: src.dgst, size: src.size, mtime: mtime}, nil
}

// layerFile is one blob linked into a repository. It never changes: its
// size is part of its identity.
type layerFile struct {
	noXattr
	synced
	f    *FS
	repo string
	dgst digest.Digest
	size int64
	// mtime is the link's modification time: when it was linked here.
	mtime time.Time
}

func (l layerFile) path() string { return joinPath(l.repo, reservedLayers+"/"+l.dgst.String()) }

// Attr implements fs.Node.
func (l layerFile) Attr(ctx context.Context, a *fuse.Attr) error {
	l.f.immutableAttr(a, l.dgst, l.size, l.mtime)
	return nil
}

// Open implements fs.NodeOpener. The kernel keeps the page cache across
// opens: the bytes behind a digest cannot change. An open that follows
// its own thread's lookup of the layer at once (open(2) of a path the
// kernel had not looked up, or had to look up again) uses what that
// lookup found; any other open states the link and the data again, so
// that a layer or blob deleted by another writer is not opened, nor its
// pages kept by the kernel served again.
func (l layerFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	if !req.Flags.IsReadOnly() {
		return nil, l.f.refuseWrite("open", l.path())
	}
	repo, err := l.f.st.Repository(l.repo)
	if err != nil {
		return nil, l.f.errno("open", l.path(), err)
	}
	var r store.BlobReader
	if info, ok := l.f.foundLayers.take(req.Pid, l.repo, l.dgst); ok {
		r = repo.Layers().OpenFound(info)
	} else if r, err = repo.Layers().Open(ctx, l.dgst); err != nil {
		l.f.noteBlobUnknown(l.dgst, err)
		return nil, l.f.errno("open", l.path(), err)
	}
	resp.Flags |= fuse.OpenKeepCache
	return &blobHandle{f: l.f, path: l.path(), r: r, release: l.f.openLayers.add(l)}, nil
}

// Setattr implements fs.NodeSetattrer.
func (l layerFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return l.f.setattrFixed("setattr", l.path(), req)
}

// foundFresh is how long a layer lookup vouches for the open that follows
// it in the same thread: the two requests of one open(2), which on a
// loaded machine may be this far apart. The storage a lookup stated may
// have changed since, as it may between any open's own check and its
// first read; the kernel itself trusts the name for the entry timeout.
const foundFresh = 100 * time.Millisecond

// foundLayers holds the last layer lookup of each calling thread (the pid
// the kernel puts in a FUSE request is the thread's), until the open that
// uses it, which the kernel sends right after the lookup, and only once.
type foundLayers struct {
	mu sync.Mutex
	// byPid is guarded by mu.
	byPid map[uint32]foundLayer
}

type foundLayer struct {
	repo string
	info store.LayerInfo
	at   time.Time
}

// foundLayersMax bounds byPid: beyond it the stale entries are dropped.
// An entry holds up to lookupFirstBytes of the layer's first bytes, so
// from foundLayersPrune entries on the stale ones are dropped at every put.
const (
	foundLayersMax   = 256
	foundLayersPrune = 16
)

// put notes that thread pid looked up info in repo just now.
func (fl *foundLayers) put(pid uint32, repo string, info store.LayerInfo) {
	if pid == 0 {
		return // the kernel's own request: no open follows it
	}
	now := time.Now()
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.byPid == nil {
		fl.byPid = map[uint32]foundLayer{}
	}
	if len(fl.byPid) >= foundLayersPrune {
		for p, e := range fl.byPid {
			if now.Sub(e.at) > foundFresh {
				delete(fl.byPid, p)
			}
		}
	}
	if _, ok := fl.byPid[pid]; !ok && len(fl.byPid) >= foundLayersMax {
		return // as many threads within foundFresh: this one's open states again
	}
	fl.byPid[pid] = foundLayer{repo: repo, info: info, at: now}
}

// take returns and forgets what pid's last lookup found of dgst in repo,
// if that was its last lookup and happened within foundFresh.
func (fl *foundLayers) take(pid uint32, repo string, dgst digest.Digest) (store.LayerInfo, bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	e, ok := fl.byPid[pid]
	if !ok {
		return store.LayerInfo{}, false
	}
	delete(fl.byPid, pid)
	if e.repo != repo || e.info.Digest != dgst || time.Since(e.at) > foundFresh {
		return store.LayerInfo{}, false
	}
	return e.info, true
}
