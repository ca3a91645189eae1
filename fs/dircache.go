package fs

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

var (
	_ fs.NodeOpener = rootDir{}
	_ fs.NodeOpener = nsDir{}
	_ fs.NodeOpener = layersDir{}
	_ fs.NodeOpener = manifestsDir{}
	_ fs.NodeOpener = uploadsDir{}
	_ fs.NodeOpener = controlDir{}
)

// openDir answers the open of directory d, whose inode is ino and whose
// parent's is parent. The kernel caches the listing (FOPEN_CACHE_DIR) and
// keeps it across opens (FOPEN_KEEP_CACHE) until regfs drops it:
// DirCacheTTL after it was served (dirExpiry), or at once when regfs itself
// changes the directory (invalidateDir). Without FOPEN_KEEP_CACHE the
// kernel would drop the listing at every opendir, and a second find would
// list everything again. A change made through the mount (create, unlink,
// mkdir, rmdir, link, rename) needs nothing from regfs: the kernel drops
// the listing of the directory it changed by itself.
func (f *FS) openDir(d fs.HandleReadDirAller, ino, parent uint64, resp *fuse.OpenResponse) (fs.Handle, error) {
	resp.Flags |= fuse.OpenCacheDir | fuse.OpenKeepCache
	return dirHandle{dir: d, ino: ino, parent: parent}, nil
}

var _ fs.HandleReadDirAller = dirHandle{}

// dirHandle is an open directory: its node's listing, after "." and "..".
// They are there for ls -a, as on every file system, and because the
// kernel can drop a cached listing only by dropping its pages: an empty
// listing has none, so it would stay cached for as long as the kernel
// keeps the directory, whatever regfs tells it.
type dirHandle struct {
	dir         fs.HandleReadDirAller
	ino, parent uint64
}

// ReadDirAll implements fs.HandleReadDirAller.
func (h dirHandle) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	ents, err := h.dir.ReadDirAll(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]fuse.Dirent, 0, len(ents)+2)
	out = append(out,
		fuse.Dirent{Inode: h.ino, Type: fuse.DT_Dir, Name: "."},
		fuse.Dirent{Inode: h.parent, Type: fuse.DT_Dir, Name: ".."})
	for _, e := range ents {
		if e.Name != "." && e.Name != ".." {
			out = append(out, e)
		}
	}
	return out, nil
}

// parentInode is the inode of the directory holding the namespace p.
func parentInode(p string) uint64 {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return rootInode
	}
	return pathInode(p[:i])
}

// Open implements fs.NodeOpener.
func (r rootDir) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	return r.f.openDir(r, rootInode, rootInode, resp)
}

// Open implements fs.NodeOpener.
func (d nsDir) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	return d.f.openDir(d, d.ino, parentInode(d.dir), resp)
}

// Open implements fs.NodeOpener.
func (d layersDir) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	return d.f.openDir(d, d.ino, pathInode(d.repo), resp)
}

// Open implements fs.NodeOpener.
func (d manifestsDir) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	return d.f.openDir(d, d.ino, pathInode(d.repo), resp)
}

// Open implements fs.NodeOpener.
func (d uploadsDir) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	return d.f.openDir(d, d.ino, pathInode(d.repo), resp)
}

// Open implements fs.NodeOpener. The listing of .regfs never changes; it
// is cached like every other and never expires.
func (d controlDir) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	return d.f.openDir(d, controlInode, rootInode, resp)
}

// invalidateDir tells the kernel to drop its copy of the listing (and the
// attributes) of directory d, after regfs changed d other than through a
// request on d itself: a commit moves an upload from _uploads/ to _layers/,
// a stored manifest adds its revision to _manifests/. It returns once the
// kernel has dropped it, so the close(2) or rmdir(2) that made the change
// returns after it, and a listing right after shows the change. Unlike
// the entry invalidations (see notifyKernel), it needs no lock a request
// in flight can hold: the kernel takes no directory lock to drop an
// inode's pages and attributes.
func (f *FS) invalidateDir(d fs.Node) {
	f.thawDirTime(d)
	if srv := f.server.Load(); srv != nil {
		f.logNotify(srv.InvalidateNodeData(d))
	}
}

// forgetDirectory drops what regfs and the kernel keep of the namespace
// directory p, removed from parent: a directory made again under that name
// (a push, a mkdir) is the same node to the kernel, which would otherwise
// show the old listings of p and of its reserved directories.
func (f *FS) forgetDirectory(parent, p string) {
	f.expiry.forget(parent)
	f.expiry.forget(p)
	f.invalidateDir(newNSDir(f, p))
	f.invalidateDir(newLayersDir(f, p))
	f.invalidateDir(newManifestsDir(f, p))
	f.invalidateDir(newUploadsDir(f, p))
}

// dirExpiry drops the kernel's copy of each directory listing DirCacheTTL
// after regfs served it, so that what other writers (the registry) add or
// remove shows in listings within that time. Every listing served is
// queued; the TTL is the same for all, so the queue is in order of expiry
// and one goroutine (run) serves it. Only a directory's latest listing is
// dropped: the kernel holds no other (it asks again only once it dropped
// the one it had), and dropping an older one could miss a newer listing
// the kernel stored just after.
type dirExpiry struct {
	f   *FS
	ttl time.Duration
	// wake tells run that the queue was empty and is not.
	wake chan struct{}

	mu sync.Mutex
	// latest holds when the latest listing of each directory queued
	// expires; guarded by mu.
	latest map[fs.Node]time.Time
	// queue holds the listings in the order they were served; guarded by
	// mu.
	queue []expiring
	// names holds the sub-namespaces of the namespaces listed and not
	// yet expired, by path: a lookup of one of them needs no storage
	// access (see lookupNamespace). Guarded by mu.
	names map[string]listedNames
}

// listedNames are the sub-namespaces storage had at a listing, sorted, and
// when that listing expires.
type listedNames struct {
	names []string
	until time.Time
}

// expiring is a listing served, and when it expires.
type expiring struct {
	dir fs.Node
	// ns says dir is the root or a namespace, whose names (under path)
	// are forgotten with its listing.
	ns   bool
	path string
	at   time.Time
}

func newDirExpiry(f *FS, ttl time.Duration) *dirExpiry {
	return &dirExpiry{
		f:      f,
		ttl:    ttl,
		wake:   make(chan struct{}, 1),
		latest: map[fs.Node]time.Time{},
		names:  map[string]listedNames{},
	}
}

// listed records that the listing of dir was served now.
func (e *dirExpiry) listed(dir fs.Node) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.queueLocked(expiring{dir: dir, at: time.Now().Add(e.ttl)})
}

// holds reports whether the kernel holds a listing of dir that regfs
// served and that has not expired.
func (e *dirExpiry) holds(dir fs.Node) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.latest[dir]
	return ok
}

// listedNamespace records that the listing of the root or namespace
// directory dir, at path p, was served now, with names, the sorted
// sub-namespaces storage has: they are kept until the listing expires.
func (e *dirExpiry) listedNamespace(dir fs.Node, p string, names []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := expiring{dir: dir, ns: true, path: p, at: time.Now().Add(e.ttl)}
	if len(names) > 0 {
		e.names[p] = listedNames{names: names, until: x.at}
	} else {
		delete(e.names, p)
	}
	e.queueLocked(x)
}

func (e *dirExpiry) queueLocked(x expiring) {
	e.latest[x.dir] = x.at
	e.queue = append(e.queue, x)
	if len(e.queue) == 1 {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
}

// listedFor tells for how much longer name is known to be a
// sub-namespace of p from a listing: 0 when it is not.
func (e *dirExpiry) listedFor(p, name string) time.Duration {
	e.mu.Lock()
	l := e.names[p]
	e.mu.Unlock()
	i := sort.SearchStrings(l.names, name)
	if i == len(l.names) || l.names[i] != name {
		return 0
	}
	return max(time.Until(l.until), 0)
}

// forget drops what is kept of the namespace p at once, for a change regfs
// makes itself.
func (e *dirExpiry) forget(p string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.names, p)
}

// expirySlack lets run expire together the listings due within this part
// of the TTL, so that a find over many directories wakes it a few times,
// not once per directory. Expiring a listing early only costs a listing.
const expirySlack = 16

// run expires listings until ctx is done.
func (e *dirExpiry) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, next := e.take(time.Now())
		for _, d := range due {
			e.f.thawDirTime(d)
		}
		if len(due) > 0 {
			e.f.notifyKernel(func(srv *fs.Server) error {
				for _, d := range due {
					e.f.logNotify(srv.InvalidateNodeData(d))
				}
				return nil
			})
		}
		var tick <-chan time.Time
		if next > 0 {
			timer.Reset(next)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-tick:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// take removes from the queue the listings due by now (within the slack)
// and returns the directories whose latest listing they are, with how long
// until the next is due (0: none queued).
func (e *dirExpiry) take(now time.Time) ([]fs.Node, time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	limit := now.Add(e.ttl / expirySlack)
	n := 0
	for n < len(e.queue) && !e.queue[n].at.After(limit) {
		n++
	}
	var due []fs.Node
	for _, x := range e.queue[:n] {
		if !e.latest[x.dir].Equal(x.at) {
			continue // listed again since: that listing expires later
		}
		due = append(due, x.dir)
		delete(e.latest, x.dir)
		if x.ns && e.names[x.path].until.Equal(x.at) {
			delete(e.names, x.path)
		}
	}
	clear(e.queue[:n])
	e.queue = e.queue[n:]
	if n > 0 && len(e.queue) < cap(e.queue)/4 {
		e.queue = append([]expiring(nil), e.queue...)
	}
	if len(e.queue) == 0 {
		return due, 0
	}
	return due, max(e.queue[0].at.Sub(now), time.Millisecond)
}
