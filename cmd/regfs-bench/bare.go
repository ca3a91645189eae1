package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	regfsfs "github.com/regfs/regfs/fs"
)

// The bare passthrough runs as a child process of this program (as regfs
// does), so that neither shares a Go runtime with the reader being timed.
// These variables, set in its environment, select it and configure it.
const (
	bareEnvMount = "REGFS_BENCH_BARE_MOUNT"
	bareEnvDir   = "REGFS_BENCH_BARE_DIR"
	// bareEnvWriteback, when set, turns on the FUSE writeback cache.
	bareEnvWriteback = "REGFS_BENCH_BARE_WRITEBACK"
)

// bareReady is the line the bare file system prints once it serves its
// mount, tuned like regfs's.
const bareReady = "bare: ready"

// bareValid is how long the kernel may cache the bare file system's entries
// and attributes: what regfs gives its immutable blobs.
const bareValid = time.Hour

// bareMain serves the bare passthrough of $REGFS_BENCH_BARE_DIR, the
// listing of barelist.go, the tree of baretree.go, or the object that
// $REGFS_BENCH_BARE_S3_KEY names (bares3.go), at
// $REGFS_BENCH_BARE_MOUNT until SIGTERM or SIGINT, then unmounts.
func bareMain() int {
	if os.Getenv(bareEnvList) != "" {
		return bareListMain()
	}
	if os.Getenv(bareEnvTree) != "" {
		return bareTreeMain()
	}
	mnt, dir := os.Getenv(bareEnvMount), os.Getenv(bareEnvDir)
	f, err := bareS3FromEnv()
	switch {
	case err != nil:
	case f != nil:
		err = serveBareS3(mnt, f)
	default:
		err = serveBare(mnt, dir)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bare: %v\n", err)
		return 1
	}
	return 0
}

func serveBare(mnt, dir string) error {
	var extra []fuse.MountOption
	if os.Getenv(bareEnvWriteback) != "" {
		extra = append(extra, fuse.WritebackCache())
	}
	return serveBareFS(mnt, bareFS{dir: dir}, extra...)
}

// serveBareFS serves one of the bare file systems (this passthrough, the
// listing, the tree, the ones over S3 and over a registry) at mnt until
// SIGTERM or SIGINT, then unmounts. It mounts with the options and the
// read-ahead regfs mounts with, so that a ratio against it is regfs's own
// cost, and prints bareReady once it serves.
func serveBareFS(mnt string, root fs.FS, extra ...fuse.MountOption) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	conn, err := fuse.Mount(mnt, append(regfsfs.MountOptions(regfsfs.MountConfig{}), extra...)...)
	if err != nil {
		return err
	}
	defer conn.Close()
	served := make(chan error, 1)
	go func() { served <- fs.Serve(conn, root) }()
	// The read-ahead regfs sets on its mounts, where it can (as root).
	if err := regfsfs.SetReadAhead(mnt); err != nil {
		fmt.Fprintf(os.Stderr, "bare: %v\n", err)
	}
	fmt.Fprintln(os.Stderr, bareReady)
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	if err := unmountRetrying(mnt); err != nil {
		return err
	}
	return <-served
}

// unmountRetrying unmounts mnt, retrying for 5 s while it is busy.
func unmountRetrying(mnt string) error {
	for i := 0; ; i++ {
		err := fuse.Unmount(mnt)
		if err == nil {
			return nil
		}
		if i == 50 {
			return fmt.Errorf("unmount %s: %w", mnt, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bareOneFile is the root of a bare file system serving one file, name.
// bazil keeps nodes as map keys: file's type must be comparable.
type bareOneFile struct {
	bareNoXattr
	name string
	file fs.Node
}

var (
	_ fs.FS                 = bareOneFile{}
	_ fs.NodeStringLookuper = bareOneFile{}
	_ fs.HandleReadDirAller = bareOneFile{}
)

func (d bareOneFile) Root() (fs.Node, error) { return d, nil }

func (d bareOneFile) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode = 1
	a.Mode = os.ModeDir | 0o755
	a.Valid = bareValid
	return nil
}

func (d bareOneFile) Lookup(ctx context.Context, name string) (fs.Node, error) {
	if name != d.name {
		return nil, fuse.Errno(syscall.ENOENT)
	}
	return d.file, nil
}

func (d bareOneFile) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	return []fuse.Dirent{{Inode: 2, Name: d.name, Type: fuse.DT_File}}, nil
}

// bareFS is the least a FUSE file system can do to serve the files of one
// flat directory: every read is a pread of the backing file into the
// kernel's buffer, every write a pwrite.
type bareFS struct{ dir string }

var (
	_ fs.FS                 = bareFS{}
	_ fs.NodeStringLookuper = bareDir{}
	_ fs.NodeCreater        = bareDir{}
	_ fs.NodeOpener         = bareDir{}
	_ fs.HandleReadDirAller = bareDir{}
	_ fs.NodeOpener         = bareFile{}
	_ fs.NodeSetattrer      = bareFile{}
	_ fs.HandleReader       = (*bareHandle)(nil)
	_ fs.HandleWriter       = (*bareHandle)(nil)
	_ fs.HandleReleaser     = (*bareHandle)(nil)
	_ fs.NodeGetxattrer     = bareFile{}
	_ fs.NodeSetxattrer     = bareDir{}
)

func (b bareFS) Root() (fs.Node, error) { return bareDir{dir: b.dir}, nil }

// bareDir is a directory of the passthrough: the root, or (for the find
// rows) any directory below it, listed and looked up with one system call
// each, its listing kept by the kernel (FOPEN_CACHE_DIR) as regfs's are.
type bareDir struct {
	bareNoXattr
	dir string
	ino uint64 // 0 for the root
}

func (d bareDir) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode = 1
	if d.ino != 0 {
		a.Inode = d.ino
	}
	a.Mode = os.ModeDir | 0o755
	a.Valid = bareValid
	return nil
}

func (d bareDir) Lookup(ctx context.Context, name string) (fs.Node, error) {
	p := filepath.Join(d.dir, name)
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, errno(err)
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return bareDir{dir: p, ino: st.Ino}, nil
	}
	return bareFile{path: p}, nil
}

func (d bareDir) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	resp.Flags |= fuse.OpenCacheDir | fuse.OpenKeepCache
	return d, nil
}

func (d bareDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, errno(err)
	}
	out := make([]fuse.Dirent, 0, len(entries))
	for _, e := range entries {
		t := fuse.DT_File
		if e.IsDir() {
			t = fuse.DT_Dir
		}
		// d_ino without a stat per entry (os.ReadDir does not give
		// it): a hash of the path, never 0, which readers may skip.
		h := fnv.New64a()
		h.Write([]byte(filepath.Join(d.dir, e.Name())))
		out = append(out, fuse.Dirent{Inode: h.Sum64() | 1, Name: e.Name(), Type: t})
	}
	return out, nil
}

func (d bareDir) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fs.Node, fs.Handle, error) {
	f := bareFile{path: filepath.Join(d.dir, req.Name)}
	fh, err := os.OpenFile(f.path, int(req.Flags&fuse.OpenAccessModeMask)|os.O_CREATE|os.O_TRUNC, req.Mode.Perm())
	if err != nil {
		return nil, nil, errno(err)
	}
	resp.Flags |= writeOpenFlags()
	return f, &bareHandle{f: fh}, nil
}

// writeOpenFlags are the flags regfs opens uploads with (direct I/O),
// unless the writeback cache is on, which needs the page cache.
func writeOpenFlags() fuse.OpenResponseFlags {
	if os.Getenv(bareEnvWriteback) != "" {
		return 0
	}
	return regfsfs.UploadOpenFlags
}

type bareFile struct {
	bareNoXattr
	path string
}

func (f bareFile) Attr(ctx context.Context, a *fuse.Attr) error {
	var st syscall.Stat_t
	if err := syscall.Stat(f.path, &st); err != nil {
		return errno(err)
	}
	a.Inode = st.Ino
	a.Mode = 0o644
	a.Size = uint64(st.Size)
	a.Blocks = uint64(st.Blocks)
	a.Valid = bareValid
	return nil
}

func (f bareFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	fh, err := os.OpenFile(f.path, int(req.Flags&fuse.OpenAccessModeMask), 0)
	if err != nil {
		return nil, errno(err)
	}
	if req.Flags.IsReadOnly() {
		resp.Flags |= fuse.OpenKeepCache
	} else {
		resp.Flags |= writeOpenFlags()
	}
	return &bareHandle{f: fh}, nil
}

func (f bareFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	if req.Valid.Size() {
		if err := os.Truncate(f.path, int64(req.Size)); err != nil {
			return errno(err)
		}
	}
	return f.Attr(ctx, &resp.Attr)
}

type bareHandle struct{ f *os.File }

func (h *bareHandle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	n, err := h.f.ReadAt(resp.Data[:req.Size], req.Offset)
	resp.Data = resp.Data[:n]
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return errno(err)
}

func (h *bareHandle) Write(ctx context.Context, req *fuse.WriteRequest, resp *fuse.WriteResponse) error {
	n, err := h.f.WriteAt(req.Data, req.Offset)
	resp.Size = n
	return errno(err)
}

func (h *bareHandle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	return errno(h.f.Close())
}

// bareNoXattr answers extended attribute requests with ENOSYS, as regfs
// does, so that the kernel stops sending them (bazil's default answer,
// ENOTSUP, costs a getxattr round trip before every write).
type bareNoXattr struct{}

func (bareNoXattr) Getxattr(ctx context.Context, req *fuse.GetxattrRequest, resp *fuse.GetxattrResponse) error {
	return fuse.Errno(syscall.ENOSYS)
}

func (bareNoXattr) Listxattr(ctx context.Context, req *fuse.ListxattrRequest, resp *fuse.ListxattrResponse) error {
	return fuse.Errno(syscall.ENOSYS)
}

func (bareNoXattr) Setxattr(ctx context.Context, req *fuse.SetxattrRequest) error {
	return fuse.Errno(syscall.ENOSYS)
}

func (bareNoXattr) Removexattr(ctx context.Context, req *fuse.RemovexattrRequest) error {
	return fuse.Errno(syscall.ENOSYS)
}

// errno passes a system call's errno on to the kernel.
func errno(err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return fuse.Errno(e)
	}
	return fuse.Errno(syscall.EIO)
}
