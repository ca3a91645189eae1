package fs

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/store"
	"github.com/regfs/regfs/store/gc"
)

var (
	_ fs.FS         = (*FS)(nil)
	_ fs.FSStatfser = (*FS)(nil)
)

// Defaults for Options.EntryTTL and Options.AttrTTL: how long the kernel
// may cache the names of files other writers (the registry) can delete
// (layers, revisions, tags) and the attributes of files they can change
// (tags). Short: a tag is re-pointed and read by name, and the next read
// must see the new revision.
const (
	DefaultEntryTTL = time.Second
	DefaultAttrTTL  = time.Second
)

// DefaultDirCacheTTL is the default of Options.DirCacheTTL: how long the
// kernel may keep a directory's listing, the names of namespace
// directories (repositories) and their attributes. A minute: a second
// find or ls -R within it asks storage nothing (see docs/benchmarks.md),
// and a repository or tag another writer adds or removes shows in
// listings within it; a name looked up directly is found at once whatever
// the listing says.
const DefaultDirCacheTTL = time.Minute

// immutableTTL is the validity of nodes that never change: blobs,
// revisions, the reserved directories.
const immutableTTL = time.Hour

// Mount tuning; see MountOptions.
const (
	maxReadahead     = 128 << 10
	maxBackground    = 64
	congestionThresh = 48
)

// Reserved names in the tree.
const (
	reservedLayers    = "_layers"
	reservedManifests = "_manifests"
	reservedUploads   = "_uploads"
	controlDirName    = ".regfs"
)

// Options configures New.
type Options struct {
	// ReadOnly refuses every write with EROFS, uploads included.
	ReadOnly bool
	// GC, when set, returns the summary of the last collection run inside
	// the mount (nil before the first), for .regfs/stats and /metrics.
	GC func() *gc.Summary
	// Logger receives the FS's records; nil means slog.Default().
	Logger *slog.Logger
	// Debug traces every FUSE request and response through Logger at
	// debug level.
	Debug bool
	// Cache is the store's block cache, read for .regfs/stats; may be nil.
	Cache *cache.Cache
	// EntryTTL is how long the kernel may cache the name of a layer,
	// revision or tag, which another writer may delete; AttrTTL the
	// attributes of a tag, which another writer may re-point.
	// DefaultEntryTTL and DefaultAttrTTL when zero.
	EntryTTL time.Duration
	AttrTTL  time.Duration
	// Owner owns every node and masks its modes; nil means the daemon's
	// user and group with DefaultUmask.
	Owner *Owner
	// Version and Driver say which regfs and storage driver serve the
	// mount, for .regfs/stats and the metrics.
	Version, Driver string
	// DirCacheTTL is how long the kernel may keep a directory's listing,
	// and the names and attributes of namespace directories (repositories
	// among them): what another writer adds or removes shows in listings
	// within this time. regfs's own changes show at once. It is the time
	// from when regfs served the listing, not from the last use.
	// DefaultDirCacheTTL when zero.
	DirCacheTTL time.Duration
	// IndexDir is where the layer indexes of the image file view
	// (_files/) are kept, at most IndexMaxBytes (0: no bound); "" keeps
	// them in memory only.
	IndexDir      string
	IndexMaxBytes int64
}

// FS is the regfs file system. It serves one FUSE connection.
type FS struct {
	st   store.Store
	opts Options
	log  *slog.Logger

	// ctx outlives every request: it is what long-lived store objects
	// (uploads, readers) are made with, and it is cancelled when Serve
	// returns.
	ctx    context.Context
	cancel context.CancelFunc

	server atomic.Pointer[fs.Server]
	// notify counts invalidation goroutines, so Serve returns only after
	// the last one.
	notify sync.WaitGroup
	// expiry drops directory listings from the kernel's cache
	// DirCacheTTL after they were served.
	expiry *dirExpiry

	// uploadKeys serialises, per upload name, the resolution of the name
	// to a store upload and its restart and cancel, so that two concurrent
	// creates of one digest make one upload. It is held across storage
	// I/O, which then delays that one name only.
	uploadKeys keyLocks

	mu sync.Mutex
	// dirs holds the directories made by mkdir, by parent path then name;
	// they exist in storage only once something is pushed into them.
	// Guarded by mu.
	dirs map[string]map[string]bool
	// pending holds manifests being written to names that do not exist
	// yet, by repository and name. Guarded by mu.
	pending map[fileKey]*manifestWriter
	// uploads holds the open uploads, by repository and name. Guarded by mu.
	uploads map[fileKey]*uploadState
	// committed holds the uploads committed lately, by repository and
	// name, for the process that committed each (see committedFile).
	// Guarded by mu.
	committed map[fileKey]committedUpload
	// renamed maps a tag's node, by repository and the name it was made
	// for, to the name mv moved it to, while the kernel may still reach
	// it there (see manifestsDir.Rename). Guarded by mu.
	renamed map[fileKey]string
	// listed holds the link times the last listings of _layers and
	// _manifests directories carried, by directory path, for the lookups
	// that follow a listing (ls -l): with them a name's time costs no
	// driver call of its own. At most listedDirs directories, the oldest
	// listing dropped first (listedOrder). Guarded by mu.
	listed      map[string]map[digest.Digest]time.Time
	listedOrder []string
	// dirTimes holds the newest link time seen below each directory, by
	// path below the mountpoint (noteTime). Guarded by mu.
	dirTimes map[string]time.Time
	// dirShown holds the time each directory shows until its listing is
	// dropped (see dirTime). Guarded by mu.
	dirShown map[string]time.Time
	// manifests shares the bytes of the revisions open for reading.
	manifests manifestBuffers
	// openLayers are the layer nodes open for reading (openlayers.go).
	openLayers openLayers
	// images serves the image file view, _files/ (files_images.go).
	images *images
	// foundLayers holds each thread's last layer lookup, for the open
	// that follows it (layers.go).
	foundLayers foundLayers

	stats counters
	ops   *opTimer
	// protocol is the FUSE protocol version the kernel negotiated, once
	// Serve has the connection.
	protocol atomic.Pointer[string]
	errLog   errorLog
	started  time.Time
	// uid and gid own every node: the daemon's user, the one whose writes
	// it serves, unless Options.Owner names another; umask clears mode
	// bits from every node.
	uid, gid uint32
	umask    os.FileMode
}

// fileKey names a file in a repository's reserved directory.
type fileKey struct {
	repo string
	name string
}

// New returns an FS serving st.
func New(st store.Store, opts Options) *FS {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.EntryTTL <= 0 {
		opts.EntryTTL = DefaultEntryTTL
	}
	if opts.AttrTTL <= 0 {
		opts.AttrTTL = DefaultAttrTTL
	}
	owner := Owner{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Umask: DefaultUmask}
	if opts.Owner != nil {
		owner = *opts.Owner
	}
	if opts.DirCacheTTL <= 0 {
		opts.DirCacheTTL = DefaultDirCacheTTL
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &FS{
		st:        st,
		opts:      opts,
		log:       opts.Logger,
		ctx:       ctx,
		cancel:    cancel,
		dirs:      map[string]map[string]bool{},
		pending:   map[fileKey]*manifestWriter{},
		uploads:   map[fileKey]*uploadState{},
		dirTimes:  map[string]time.Time{},
		dirShown:  map[string]time.Time{},
		renamed:   map[fileKey]string{},
		committed: map[fileKey]committedUpload{},
		listed:    map[string]map[digest.Digest]time.Time{},
		stats:     counters{errnos: map[string]int64{}},
		ops:       newOpTimer(),
		started:   time.Now(),
		uid:       owner.UID,
		gid:       owner.GID,
		umask:     owner.Umask & os.ModePerm,
	}
	f.expiry = newDirExpiry(f, opts.DirCacheTTL)
	f.images = newImages(f, opts.IndexDir, opts.IndexMaxBytes)
	return f
}

// MountConfig says how regfs is mounted; MountOptions turns it into mount
// options.
type MountConfig struct {
	// ReadOnly mounts with the kernel's ro option.
	ReadOnly bool
	// AllowOther lets other users use the mount. The kernel then checks
	// every access against the modes regfs shows (default_permissions),
	// unless NoDefaultPermissions.
	AllowOther bool
	// NoDefaultPermissions leaves permission checks out of an AllowOther
	// mount: every user may then do what the daemon's user may.
	NoDefaultPermissions bool
}

// MountOptions returns the options regfs mounts with, built in this one
// place for the command and the tests. MaxReadahead is 128 KiB, what Linux
// accepts at most by default (the kernel clamps to its own bdi setting);
// AsyncRead lets the kernel send concurrent reads of one file, which the
// block cache serves in parallel; a larger MaxBackground keeps more of those
// read-ahead requests in flight before the kernel throttles.
//
// With AllowOther the kernel checks permissions (default_permissions):
// regfs itself checks none, and the daemon usually runs as root, so
// without the check any local user could delete what the modes say only
// the owner may. Without AllowOther only the daemon's user reaches the
// mount, and the check would add nothing.
func MountOptions(c MountConfig) []fuse.MountOption {
	readOnly, allowOther := c.ReadOnly, c.AllowOther
	opts := []fuse.MountOption{
		fuse.FSName("regfs"),
		fuse.Subtype("regfs"),
		fuse.MaxReadahead(maxReadahead),
		fuse.AsyncRead(),
		fuse.MaxBackground(maxBackground),
		fuse.CongestionThreshold(congestionThresh),
	}
	if readOnly {
		opts = append(opts, fuse.ReadOnly())
	}
	if allowOther {
		opts = append(opts, fuse.AllowOther())
		if !c.NoDefaultPermissions {
			opts = append(opts, fuse.DefaultPermissions())
		}
	}
	return opts
}

// Serve serves conn until it is closed (the file system is unmounted). An
// FS serves one connection; after Serve returns it is done.
func (f *FS) Serve(conn *fuse.Conn) error {
	cfg := &fs.Config{Debug: f.ops.observe, WithContext: guardWrites}
	if f.opts.Debug {
		cfg.Debug = func(msg any) {
			f.ops.observe(msg)
			f.log.Debug("fuse", "msg", fmt.Sprint(msg))
		}
	}
	proto := conn.Protocol().String()
	f.protocol.Store(&proto)
	srv := fs.New(conn, cfg)
	f.server.Store(srv)
	ctx, stop := context.WithCancel(f.ctx)
	expired := make(chan struct{})
	go func() {
		defer close(expired)
		f.expiry.run(ctx)
	}()
	err := srv.Serve(f)
	stop()
	<-expired
	f.server.Store(nil)
	f.notify.Wait()
	// Uploads are saved first, under the mount's context; cancelling it
	// then stops whatever storage call is still running for them.
	f.closeUploads()
	f.cancel()
	f.images.close()
	return err
}

// Root implements fs.FS.
func (f *FS) Root() (fs.Node, error) {
	return newRootDir(f), nil
}

// nominalSpace is the size and free space df shows for a backend that has
// no size (S3, memory): 1 PiB, large enough that no tool refuses to write
// for want of space, and round enough to read as nominal (rclone mount
// does the same for remotes without a quota).
const nominalSpace = 1 << 50

// statfsBlock is the block size df counts in.
const statfsBlock = 4096

// Statfs implements fs.FSStatfser: the backend's size and free space (the
// filesystem driver's root's file system), or nominalSpace for a backend
// without a size.
func (f *FS) Statfs(ctx context.Context, req *fuse.StatfsRequest, resp *fuse.StatfsResponse) error {
	resp.Bsize = statfsBlock
	resp.Frsize = statfsBlock
	resp.Namelen = 255
	u, err := f.st.Usage(ctx)
	if errors.Is(err, store.ErrUnsupported) {
		u = store.Usage{Total: nominalSpace, Free: nominalSpace, Avail: nominalSpace}
	} else if err != nil {
		return f.errno("statfs", "", err)
	}
	resp.Blocks = u.Total / statfsBlock
	resp.Bfree = u.Free / statfsBlock
	resp.Bavail = u.Avail / statfsBlock
	resp.Files = u.Files
	resp.Ffree = u.FreeFiles
	return nil
}

// readOnly returns store.ErrReadOnly on a read-only FS, for write ops to
// return first.
func (f *FS) readOnly() error {
	if f.opts.ReadOnly {
		return store.ErrReadOnly
	}
	return nil
}

// Inodes. The root is 1, as FUSE requires.
const rootInode = 1

// digestInode derives a blob's or revision's inode from the first 8 bytes
// of its digest.
func digestInode(d digest.Digest) uint64 {
	enc := d.Encoded()
	if len(enc) < 16 {
		return childInode(rootInode, d.String())
	}
	b, err := hex.DecodeString(enc[:16])
	if err != nil {
		return childInode(rootInode, d.String())
	}
	v := binary.BigEndian.Uint64(b)
	if v <= rootInode {
		v += 2
	}
	return v
}

// childInode derives the inode of name in the directory with inode parent.
func childInode(parent uint64, name string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], parent)
	h.Write(b[:])
	h.Write([]byte(name))
	v := h.Sum64()
	if v <= rootInode {
		v += 2
	}
	return v
}

// pathInode derives the inode of a namespace directory from its path.
func pathInode(p string) uint64 {
	ino := uint64(rootInode)
	if p == "" {
		return ino
	}
	for _, c := range strings.Split(p, "/") {
		ino = childInode(ino, c)
	}
	return ino
}

// joinPath joins a namespace path and a child name.
func joinPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "/" + name
}

// hasMkdirDir tells whether mkdir made p (and rmdir has not removed it).
func (f *FS) hasMkdirDir(p string) bool {
	parent, name := path.Split(p)
	parent = strings.TrimSuffix(parent, "/")
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dirs[parent][name]
}

// mkdirChildren returns the names mkdir made in parent.
func (f *FS) mkdirChildren(parent string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.dirs[parent] {
		out = append(out, n)
	}
	return out
}

func (f *FS) addMkdirDir(parent, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dirs[parent] == nil {
		f.dirs[parent] = map[string]bool{}
	}
	f.dirs[parent][name] = true
}

func (f *FS) removeMkdirDir(parent, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.dirs[parent], name)
	if len(f.dirs[parent]) == 0 {
		delete(f.dirs, parent)
	}
}

// guardWrites gives every request that may change storage a context that
// an interrupt cancels only until the store begins to write
// (store.GuardWrites): an interrupted link, unlink, rename or mkdir either
// did nothing and fails with EINTR, or completes. Reads keep the request's
// own context, so an interrupted cat stops at once.
func guardWrites(ctx context.Context, req fuse.Request) context.Context {
	switch req.(type) {
	case *fuse.CreateRequest, *fuse.MkdirRequest, *fuse.LinkRequest, *fuse.RemoveRequest,
		*fuse.RenameRequest, *fuse.SetattrRequest, *fuse.SymlinkRequest, *fuse.MknodRequest,
		*fuse.SetxattrRequest, *fuse.RemovexattrRequest, *fuse.FsyncRequest:
		return store.GuardWrites(ctx)
	}
	return ctx
}

// invalidateEntry tells the kernel to forget name in dir.
func (f *FS) invalidateEntry(dir fs.Node, name string) {
	f.notifyKernel(func(srv *fs.Server) error { return srv.InvalidateEntry(dir, name) })
}

// invalidateNode tells the kernel to drop the cached attributes and data
// of n.
func (f *FS) invalidateNode(n fs.Node) {
	f.notifyKernel(func(srv *fs.Server) error { return srv.InvalidateNodeData(n) })
}

// notifyKernel sends a notification to the kernel in its own goroutine:
// the kernel may hold a directory's lock while it waits for the reply to
// the request that caused the notification.
func (f *FS) notifyKernel(send func(*fs.Server) error) {
	srv := f.server.Load()
	if srv == nil {
		return
	}
	f.notify.Add(1)
	go func() {
		defer f.notify.Done()
		f.logNotify(send(srv))
	}()
}

func (f *FS) logNotify(err error) {
	if err != nil && !errors.Is(err, fuse.ErrNotCached) {
		f.log.Debug("kernel cache invalidation failed", "error", err)
	}
}

// processOf returns the process (thread group) id of the thread tid that
// made a FUSE request, or 0 when it cannot be told (the thread is gone, or
// lives in a pid namespace the daemon cannot see). FUSE headers carry the
// calling thread's id; a multi-threaded program opens and closes a file
// from any of its threads.
func processOf(tid uint32) int {
	if tid == 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return 0
			}
			return n
		}
	}
	return 0
}

// closedByOpener tells whether a flush (a close(2)) comes from the process
// that opened the file, which is where regfs commits what was written. A
// descriptor a child inherited (`(cat a; cat b) > file`, a pipeline's
// stages) is closed by the child first; committing there would fail a
// partial upload and stop the writer. When either process is unknown every
// close commits.
func closedByOpener(opener int, req *fuse.FlushRequest) bool {
	if opener == 0 {
		return true
	}
	p := processOf(req.Pid)
	return p == 0 || p == opener
}
